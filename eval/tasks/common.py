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

from eval.datasets import LoadStats
from eval.session import CodecSettings, ModelSession
from tokenizer.vocab import BOS
from eval.model import example_seed
from pipeline.fileio import atomic_write_bytes, exists, join, url_to_fs

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


def codec_of(config) -> CodecSettings:
    """The Mimi an EvalConfig asks for."""
    overrides = dict(config.mimi_config_overrides) if config.mimi_config_overrides else None
    return CodecSettings(config.mimi_model, config.seed, config.device, overrides, config.mimi_batch_size)


class EvalContext(ModelSession):
    """One eval step run: a model session (model, tokenizer, codec) plus the step's config, output
    directory and what its loader read and skipped. Built by steps.evaluate; tasks only read it."""

    def __init__(self, config, model, tokenizer_dir: str, output_path: str):
        super().__init__(model, tokenizer_dir, codec_of(config))
        self.stats = LoadStats()  # what the task's loader read and skipped
        self.config = config
        self.output_path = output_path
        self.notes: list[str] = []

    # ---- chunked, resumable per-example output ------------------------------------------------

    def map_chunks(self, examples: Iterable[dict], fn: Callable[[list[dict]], list[dict]],
                   desc: str = "eval") -> list[dict]:
        from tqdm.auto import tqdm

        rows: list[dict] = []
        for k, chunk in enumerate(tqdm(_chunks(examples, self.config.chunk_size), desc=desc, unit="chunk")):
            path = join(self.output_path, "examples", f"part-{k:05d}.jsonl")
            if exists(path):
                fs, p = url_to_fs(path)
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
        # one call per example index keeps each example's stream independent of chunking
        return self.model.generate(prompts, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                   stop_id=stop_id, seed=example_seed(self.config.seed, offset),
                                   batch_size=self.config.batch_size)


def token_convention(ctx: EvalContext) -> dict:
    return {"bos": f"{BOS} string prepended, tokenized like training documents",
            "dtype": "float32", "backend": ctx.model.backend}
