"""`soda`: one entry point for the project's command-line tools.

Each subcommand lives in the module that owns its job and is imported only when called, so
`soda log` never pays for torch or jax. A subcommand is a function `main(argv) -> int`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

# name -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "log": ("pipeline.experiment_log:cli_main", "print or open an experiment log"),
    "status": ("pipeline.status_view:cli_main", "where an experiment stands, from its files (no Ray)"),
    "logs": ("pipeline.step_log:cli_main", "print a step's log (what it printed and logged); --follow to tail it"),
    "build-tokenizer": ("tokenizer.build:cli_main", "extend a base tokenizer with SODA's tokens"),
    "encode": ("tokenizer.mimi:encode_cli", "encode a wav file to Mimi codes (private-use text)"),
    "decode": ("tokenizer.mimi:decode_cli", "decode Mimi codes (private-use text) to a wav file"),
    "evaluate": ("steps.evaluate:cli_main", "run one SODA evaluation task on a model"),
    "generate": ("eval.generate_cli:cli_main", "generate with a checkpoint: continue, tts, tts-voice, asr, s2st"),
    "isoflop-grid": ("steps.scaling.grid:cli_main", "print the IsoFLOP sweep's grid of models"),
    "fit-scaling": ("steps.scaling.fit:cli_main", "fit scaling laws to a CSV of runs"),
    "lock-datasets": ("steps.dataset_lock:cli_main", "resolve and lock the Hub commit of every dataset"),
    "make-mirror": ("steps.mirror_fixtures:cli_main", "write a tiny offline data mirror with its lock"),
    "rehearse": ("infra.rehearse:cli_main", "run an experiment script end to end at toy scale on an emulated "
                 "bucket and a local multi-node Ray cluster"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: soda COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("\nRun `soda COMMAND --help` for a command's options.")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"soda: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
