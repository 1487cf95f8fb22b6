"""A model session: a model to score and generate with, its SODA tokenizer, and the Mimi codec
loaded on first use. The eval step (steps.evaluate, through eval.tasks.common.EvalContext) and
`soda generate` (eval.generate_cli) both work through one.

    session = ModelSession.open("gs://b/checkpoints/soda-600m-1a2b", codec=CodecSettings("kyutai/mimi"))
    ids = session.encode("hello")                  # the documents' BOS string first
    strings = session.audio_strings([wave_24k])    # Mimi codes as private-use text (8 codebooks)
    wave, stats = session.decode_audio_ids(ids)    # generated ids back to 24 kHz audio
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from eval.model import ScoringModel, load_scoring_model
from pipeline.fileio import exists, join
from tokenizer.audio import CODEBOOK_SIZE, NUM_CODEBOOKS, codes_to_chars
from tokenizer.fast_tokenize import FastTokenizer, load_backend
from tokenizer.mimi import RANDOM_MODEL, decode, encode, is_random_mimi, load_mimi
from tokenizer.vocab import AUDIO_END, AUDIO_START, BOS, TEXT_END, TEXT_START


@dataclass(frozen=True)
class CodecSettings:
    """Which Mimi a session loads when it first needs audio."""
    model: str = "kyutai/mimi"  # HF id, local dir, or "random" (seeded random weights: plumbing)
    seed: int = 0
    device: Optional[str] = None
    config_overrides: Optional[dict[str, Any]] = None  # MimiConfig fields, for "random" only (tests)
    batch_size: int = 8  # clips per Mimi call


def find_tokenizer_dir(model: ScoringModel, tokenizer: Optional[str] = None, model_path: str = "?") -> str:
    """The SODA tokenizer for `model`: `tokenizer` if given, else the model's own (its run's export or
    its HF directory); FileNotFoundError naming what to pass."""
    for candidate in (tokenizer, getattr(model, "tokenizer", None), getattr(model, "source", None)):
        if candidate and exists(join(candidate, "tokenizer.json")):
            return candidate
    raise FileNotFoundError(f"no tokenizer for {model_path!r}: pass the SODA tokenizer directory (the "
                            "build-tokenizer step's output)")


class ModelSession:
    """The model, the tokenizer's SODA ids, and the codec (loaded on first use)."""

    def __init__(self, model: ScoringModel, tokenizer_dir: str, codec: CodecSettings = CodecSettings()):
        self.model = model
        self.tokenizer_dir = tokenizer_dir
        self.codec = codec
        self.tok = FastTokenizer.from_pretrained(tokenizer_dir)
        self.decoder = load_backend(tokenizer_dir)
        ids = self.tok.special_ids
        missing = [t for t in (TEXT_START, TEXT_END, AUDIO_START, AUDIO_END) if t not in ids]
        if missing:
            raise ValueError(f"tokenizer {tokenizer_dir!r} lacks SODA tokens {missing}: use the SODA tokenizer")
        self.text_start, self.text_end = ids[TEXT_START], ids[TEXT_END]
        self.audio_start, self.audio_end = ids[AUDIO_START], ids[AUDIO_END]
        self.audio_base = self.tok.audio_base_id
        self._mimi = None

    @classmethod
    def open(cls, model_path: str, *, backend: str = "auto", tokenizer: Optional[str] = None,
             device: Optional[str] = None, codec: CodecSettings = CodecSettings()) -> "ModelSession":
        """Load the model at `model_path` (eval.model.load_scoring_model) and find its tokenizer."""
        model = load_scoring_model(model_path, backend, tokenizer, device)
        return cls(model, find_tokenizer_dir(model, tokenizer, model_path), codec)

    # ---- text and ids ----------------------------------------------------------------------

    def encode(self, text: str, bos: bool = True) -> np.ndarray:
        """Ids of `text`, with the documents' BOS string prepended (as training documents start)."""
        return self.tok.encode((BOS if bos else "") + text).astype(np.int64)

    def decode_text(self, ids: Sequence[int]) -> str:
        """Text of generated ids, control tokens and audio characters removed."""
        keep = [int(i) for i in ids if int(i) < self.text_start]
        return self.decoder.decode(keep, skip_special_tokens=True)

    # ---- audio -----------------------------------------------------------------------------

    @property
    def mimi(self):
        if self._mimi is None:
            c = self.codec
            self._mimi = load_mimi(c.model, seed=c.seed, device=c.device,
                                   config_overrides=dict(c.config_overrides) if c.config_overrides else None)
        return self._mimi

    @property
    def mimi_loaded(self) -> bool:
        return self._mimi is not None

    @property
    def mimi_is_random(self) -> bool:
        return self.codec.model == RANDOM_MODEL or (self._mimi is not None and is_random_mimi(self._mimi))

    def audio_strings(self, waves: Sequence[np.ndarray]) -> list[str]:
        """24 kHz waveforms -> frame-major audio strings (Mimi, 8 codebooks), in codec.batch_size batches."""
        out: list[str] = []
        size = self.codec.batch_size
        for a in range(0, len(waves), size):
            out += [codes_to_chars(c) for c in encode(self.mimi, list(waves[a : a + size]))]
        return out

    def decode_audio_ids(self, ids: Sequence[int]) -> tuple[np.ndarray, dict]:
        """Generated ids -> (24 kHz waveform, stats). Non-audio ids are dropped; position i is read as
        codebook i % 8 (frame-major); a token from another codebook keeps its code and is counted;
        an incomplete last frame is dropped."""
        arr = np.asarray(ids, dtype=np.int64)
        rel = arr - self.audio_base
        is_audio = (rel >= 0) & (rel < NUM_CODEBOOKS * CODEBOOK_SIZE)
        rel = rel[is_audio]
        frames = rel.size // NUM_CODEBOOKS
        rel = rel[: frames * NUM_CODEBOOKS]
        expected = np.arange(rel.size) % NUM_CODEBOOKS
        stats = {"non_audio_tokens": int((~is_audio).sum()), "frames": int(frames),
                 "codebook_mismatches": int((rel // CODEBOOK_SIZE != expected).sum())}
        if frames == 0:
            return np.zeros(0, dtype=np.float32), stats
        codes = (rel % CODEBOOK_SIZE).reshape(frames, NUM_CODEBOOKS).T
        return decode(self.mimi, codes), stats
