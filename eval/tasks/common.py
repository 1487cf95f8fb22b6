"""What every task gets: the model, the tokenizer's SODA ids, Mimi, and chunked, resumable output.

`EvalContext.map_chunks(examples, fn)` runs `fn(list_of_examples) -> list_of_rows` over chunks of
`chunk_size` examples and stores each chunk's rows as `examples/part-NNNNN.jsonl` (atomically),
so a rerun after a crash skips finished chunks. Rows are JSON-able dicts (the per-example
outputs); the task computes its metrics from all rows at the end.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from tokenizer.vocab import AUDIO_END, AUDIO_START, BOS, TEXT_END, TEXT_START

logger = logging.getLogger(__name__)


@dataclass
class TaskResult:
    metrics: dict[str, float]
    convention: dict[str, Any]
    n: int
    extra: dict[str, Any] = field(default_factory=dict)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class EvalContext:
    """Shared state for one eval step run. Built by steps.evaluate; tasks only read it."""

    def __init__(self, config, model, tokenizer_dir: str, output_path: str):
        from eval.datasets import LoadStats
        from tokenizer.fast_tokenize import FastTokenizer, load_backend

        self.stats = LoadStats()  # what the task's loader read and skipped
        self.config = config
        self.model = model
        self.output_path = output_path
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
        self.notes: list[str] = []

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
            from tokenizer.mimi import load_mimi

            c = self.config
            self._mimi = load_mimi(c.mimi_model, seed=c.seed, device=c.device,
                                   config_overrides=dict(c.mimi_config_overrides) if c.mimi_config_overrides else None)
        return self._mimi

    @property
    def mimi_is_random(self) -> bool:
        from tokenizer.mimi import is_random_mimi

        return self.config.mimi_model == "random" or (self._mimi is not None and is_random_mimi(self._mimi))

    def audio_strings(self, waves: Sequence[np.ndarray]) -> list[str]:
        """24 kHz waveforms -> frame-major audio strings (Mimi, 8 codebooks), in mimi_batch_size batches."""
        from tokenizer.audio import codes_to_chars
        from tokenizer.mimi import encode

        out: list[str] = []
        for a in range(0, len(waves), self.config.mimi_batch_size):
            out += [codes_to_chars(c) for c in encode(self.mimi, list(waves[a : a + self.config.mimi_batch_size]))]
        return out

    def decode_audio_ids(self, ids: Sequence[int]) -> tuple[np.ndarray, dict]:
        """Generated ids -> (24 kHz waveform, stats). Non-audio ids are dropped; position i is read as
        codebook i % 8 (frame-major); a token from another codebook keeps its code and is counted;
        an incomplete last frame is dropped."""
        from tokenizer.audio import CODEBOOK_SIZE, NUM_CODEBOOKS
        from tokenizer.mimi import decode

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

    # ---- chunked, resumable per-example output ------------------------------------------------

    def map_chunks(self, examples: Iterable[dict], fn: Callable[[list[dict]], list[dict]],
                   desc: str = "eval") -> list[dict]:
        from tqdm.auto import tqdm

        from steps.sharding import atomic_write_bytes, exists, fs_and_path, join

        rows: list[dict] = []
        for k, chunk in enumerate(tqdm(_chunks(examples, self.config.chunk_size), desc=desc, unit="chunk")):
            path = join(self.output_path, "examples", f"part-{k:05d}.jsonl")
            if exists(path):
                fs, p = fs_and_path(path)
                with fs.open(p, "rb") as f:
                    rows += [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
                continue
            new = fn(chunk)
            data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in new).encode()
            atomic_write_bytes(path, data)
            rows += new
        return rows

    # ---- scoring helpers -------------------------------------------------------------------

    def logprobs(self, seqs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.model.logprobs(seqs, batch_size=self.config.batch_size)

    def generate(self, prompts: Sequence[np.ndarray], *, temperature: float, top_p: float,
                 max_new_tokens: int, stop_id: int, offset: int):
        """Sampling seeded per example by its index in the whole task (`offset` + position)."""
        from eval.model import example_seed

        # one call per example index keeps each example's stream independent of chunking
        return self.model.generate(prompts, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                   stop_id=stop_id, seed=example_seed(self.config.seed, offset),
                                   batch_size=self.config.batch_size)


def token_convention(ctx: EvalContext) -> dict:
    return {"bos": f"{BOS} string prepended, tokenized like training documents",
            "dtype": "float32", "backend": ctx.model.backend}
