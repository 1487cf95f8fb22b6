"""`soda`: one entry point for the project's command-line tools (pipeline.cli dispatches them).

Each subcommand lives in the module that owns its job and is imported only when called, so
`soda log` never pays for torch or jax.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from pipeline import cli

# name -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    **cli.COMMANDS,
    "build-tokenizer": ("tokenizer.build:cli_main", "extend a base tokenizer with SODA's tokens"),
    "encode": ("steps.codec_cli:encode_cli", "encode a wav file to Mimi codes (private-use text)"),
    "decode": ("steps.codec_cli:decode_cli", "decode Mimi codes (private-use text) to a wav file"),
    "evaluate": ("steps.evaluate:cli_main", "run one SODA evaluation task on a model"),
    "generate": ("eval.generate_cli:cli_main", "generate with a checkpoint: continue, tts, tts-voice, asr, s2st"),
    "isoflop-grid": ("steps.scaling.grid:cli_main", "print the IsoFLOP sweep's grid of models"),
    "fit-scaling": ("steps.scaling.fit:cli_main", "fit scaling laws to a CSV of runs"),
    "lock-datasets": ("steps.download_presets:lock_datasets_cli", "resolve and lock the Hub commit of every dataset"),
    "make-mirror": ("steps.mirror_fixtures:cli_main", "write a tiny offline data mirror with its lock"),
    "rehearse": ("infra.rehearse:cli_main", "run an experiment script end to end at toy scale on an emulated "
                 "bucket and a local multi-node Ray cluster"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.dispatch("soda", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
