"""Tokenize interleaved documents fast, id-for-id identical to the HF tokenizer.

A Hugging Face tokenizer first cuts the input at its added tokens (leftmost-longest match over
their literal strings; with `normalized=False` and no lstrip/rstrip/single_word, that is a
plain cut), then normalizes, pre-tokenizes and BPE-encodes each remaining piece on its own. So
a document can be cut the same way here, and only the text pieces need the BPE machinery:

- runs of audio characters (U+E000..U+11FFF) map arithmetically, `ord(ch) - 0xE000 + audio_base`,
  in numpy over the whole document at once;
- added tokens (SODA's four, Llama's `<|begin_of_text|>` ...) map by table;
- the text pieces of a whole batch of documents go to the Rust tokenizer in one `encode_batch`
  (de-duplicated: both formats of a recording share their transcripts).

`FastTokenizer` checks at construction that the tokenizer meets those conditions (every audio
character is an added token with contiguous ids; no added token strips, is word-bound, or is
matched after normalization; no Metaspace "first" prefix). If not, it falls back to encoding
whole documents with the HF tokenizer and says so (`exact_fast_path`, `fallback_reason`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from typing import Any, Sequence

import numpy as np

from tokenizer.audio import NUM_AUDIO_TOKENS, UNICODE_OFFSET

logger = logging.getLogger(__name__)


def load_backend(tokenizer: Any):
    """A `tokenizers.Tokenizer` from a path (local dir, fsspec URL), an HF id, a transformers
    tokenizer or a `tokenizers.Tokenizer`."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    if hasattr(tokenizer, "backend_tokenizer"):
        return tokenizer.backend_tokenizer
    if not isinstance(tokenizer, str):
        raise TypeError(f"cannot make a tokenizer from {type(tokenizer).__name__}")
    if os.path.isdir(tokenizer):
        path = os.path.join(tokenizer, "tokenizer.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{tokenizer} has no tokenizer.json (build it with `soda build-tokenizer`)")
        return Tokenizer.from_file(path)
    if "://" in tokenizer and not tokenizer.startswith("hf://"):
        import fsspec

        with fsspec.open(tokenizer.rstrip("/") + "/tokenizer.json", "rb") as f:
            return Tokenizer.from_str(f.read().decode("utf-8"))
    from transformers import AutoTokenizer

    name = tokenizer[len("hf://") :] if tokenizer.startswith("hf://") else tokenizer
    return AutoTokenizer.from_pretrained(name).backend_tokenizer


def _find_types(node: Any, found: list[dict]) -> None:
    if isinstance(node, dict):
        if "type" in node:
            found.append(node)
        for v in node.values():
            _find_types(v, found)
    elif isinstance(node, list):
        for v in node:
            _find_types(v, found)


class FastTokenizer:
    """Encode document strings to int32 id arrays; see the module docstring."""

    def __init__(self, tokenizer: Any, num_audio_tokens: int = NUM_AUDIO_TOKENS):
        from tokenizers import Tokenizer

        backend = load_backend(tokenizer)
        if not isinstance(tokenizer, str):  # someone else's object: work on a copy
            backend = Tokenizer.from_str(backend.to_str())
        self._backend = backend
        # No truncation/padding (transformers' __call__ disables both too).
        self._backend.no_truncation()
        self._backend.no_padding()
        self.vocab_size = self._backend.get_vocab_size(with_added_tokens=True)
        self.num_audio_tokens = num_audio_tokens

        added = self._backend.get_added_tokens_decoder()
        base = self._backend.token_to_id(chr(UNICODE_OFFSET))
        if base is None:
            raise ValueError(
                "tokenizer has no audio tokens (U+E000 is not in its vocabulary); "
                "use the tokenizer built by `soda build-tokenizer`"
            )
        audio_ids = [self._backend.token_to_id(chr(UNICODE_OFFSET + i)) for i in range(num_audio_tokens)]
        if audio_ids != list(range(base, base + num_audio_tokens)):
            raise ValueError("the tokenizer's audio tokens do not have contiguous ids")
        if any(i not in added for i in audio_ids):
            raise ValueError("the tokenizer's audio characters are not added tokens (BPE could merge them)")
        self.audio_base_id = base

        audio_lo, audio_hi = UNICODE_OFFSET, UNICODE_OFFSET + num_audio_tokens
        self.special_ids: dict[str, int] = {}
        problems: list[str] = []
        for token_id, tok in sorted(added.items()):
            if base <= token_id < base + num_audio_tokens:
                if tok.lstrip or tok.rstrip or tok.single_word or tok.normalized:
                    problems.append(f"audio token {token_id} has strip/word/normalized flags")
                continue
            if tok.lstrip or tok.rstrip or tok.single_word:
                problems.append(f"added token {tok.content!r} strips spaces or is word-bound")
            if tok.normalized:
                problems.append(f"added token {tok.content!r} is matched after normalization")
            if any(audio_lo <= ord(c) < audio_hi for c in tok.content):
                problems.append(f"added token {tok.content!r} contains audio characters")
            self.special_ids[tok.content] = token_id
        config = json.loads(self._backend.to_str())
        nodes: list[dict] = []
        _find_types([config.get("normalizer"), config.get("pre_tokenizer")], nodes)
        for node in nodes:
            if node.get("type") == "Metaspace" and node.get("prepend_scheme", "always") == "first":
                problems.append("Metaspace prepend_scheme='first' depends on the position in the document")

        self.fallback_reason = "; ".join(problems) or None
        self.exact_fast_path = self.fallback_reason is None
        if not self.exact_fast_path:
            logger.warning("fast tokenization disabled, encoding whole documents: %s", self.fallback_reason)
        alternatives = sorted(self.special_ids, key=len, reverse=True)
        self._special_re = (
            re.compile("(" + "|".join(re.escape(s) for s in alternatives) + ")") if alternatives else None
        )
        self._special_arrays = {s: np.array([i], dtype=np.int32) for s, i in self.special_ids.items()}
        self._encode_many = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)

    @classmethod
    def from_pretrained(cls, path_or_id: str) -> "FastTokenizer":
        """Load once per process per path (the Llama 3 based tokenizer takes ~1 s to parse)."""
        return _cached(path_or_id)

    # ---- encoding ----------------------------------------------------------------------------

    def encode(self, doc: str) -> np.ndarray:
        return self.encode_batch([doc])[0]

    def encode_batch(self, docs: Sequence[str]) -> list[np.ndarray]:
        """Ids (int32) of each document, as `tokenizer(doc, add_special_tokens=False)` gives."""
        if not self.exact_fast_path:
            encs = self._backend.encode_batch(list(docs), add_special_tokens=False)
            return [np.asarray(e.ids, dtype=np.int32) for e in encs]

        span_index: dict[str, int] = {}
        plans = [self._plan(doc, span_index) for doc in docs]
        spans = list(span_index)
        encoded = (
            [np.asarray(e.ids, dtype=np.int32) for e in self._encode_many(spans, add_special_tokens=False)]
            if spans
            else []
        )
        out = []
        for plan in plans:
            parts = [encoded[p] if isinstance(p, int) else p for p in plan]
            out.append(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32))
        return out

    def _plan(self, doc: str, span_index: dict[str, int]) -> list:
        """The document as a list of id arrays and indices of text spans to encode."""
        plan: list = []
        if not doc:
            return plan
        rel = np.frombuffer(doc.encode("utf-32-le"), dtype="<u4") - np.uint32(UNICODE_OFFSET)
        is_audio = rel < np.uint32(self.num_audio_tokens)
        if not is_audio.any():
            self._plan_text(doc, plan, span_index)
            return plan
        ids = rel.view(np.int32) + np.int32(self.audio_base_id)
        flags = is_audio.view(np.int8)
        bounds = [0, *(np.flatnonzero(flags[1:] != flags[:-1]) + 1).tolist(), len(rel)]
        audio = bool(is_audio[0])
        for a, b in zip(bounds[:-1], bounds[1:]):
            if audio:
                plan.append(ids[a:b])
            else:
                self._plan_text(doc[a:b], plan, span_index)
            audio = not audio
        return plan

    def _plan_text(self, segment: str, plan: list, span_index: dict[str, int]) -> None:
        pieces = self._special_re.split(segment) if self._special_re is not None else [segment]
        for j, piece in enumerate(pieces):
            if j % 2:
                plan.append(self._special_arrays[piece])
            elif piece:
                plan.append(span_index.setdefault(piece, len(span_index)))


@functools.lru_cache(maxsize=4)
def _cached(path_or_id: str) -> FastTokenizer:
    return FastTokenizer(path_or_id)
