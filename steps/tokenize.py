"""Tokenize step: documents -> a Levanter token cache the trainer reads directly.

Input: jsonl / jsonl.gz / parquet files with a `text` column (e.g. the interleave step's
`documents/`), as a directory (searched recursively), glob or file, local or gs://. Documents
are encoded with `tokenizer.fast_tokenize.FastTokenizer` (id-for-id what the HF tokenizer
gives, no BOS/EOS added: SODA documents already start with `<|begin_of_text|>` and end with
`<|end_of_text|>`, which must be single tokens of the tokenizer, else the step refuses it).
Empty documents are skipped and counted.

Output (`output_path`):
    {split}/part-NNNNN/          one Levanter TreeStore per input file ({"input_ids": int32})
    {split}/shard_ledger.json    Levanter's sharded-layout ledger over the parts
    stats/part-NNNNN.json        per-part counts (written after the part's own ledger)
    summary.json                 documents, tokens, audio/text tokens, skipped documents

Point Levanter at it with `DatasetComponent(cache_dir=<output_path>, source=None)` (or
`LmDataConfig(cache_dir=...)` naming the component): Levanter opens `<cache_dir>/train`
without rebuilding. A part whose ledger and stats exist is not redone; a partial part is
rewritten. With Ray initialised each input file is one Ray task.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import this_output_path
from pipeline.fileio import atomic_write_bytes, atomic_write_json, join, url_to_fs
from pipeline.fileio import list_input_files
from steps.table_readers import iter_record_batches
from steps.sharding import finished_parts, run_shards
from tokenizer.vocab import BOS, EOS
from tokenizer.fast_tokenize import FastTokenizer

logger = logging.getLogger(__name__)

INPUT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".parquet")
LEDGER = "shard_ledger.json"
FIELD = "input_ids"
SHARD_ATTEMPTS = 3  # a part is tokenized again (from its start) on a transient store/network error ...
RETRY_DELAY_S = 2.0  # ... after 2, then 4 s


@dataclass(frozen=True)
class TokenizeConfig:
    """Tokenize `input_path` documents with `tokenizer` into a Levanter cache at `output_path`.

    tokenizer: the build-tokenizer step's output dir (local or gs://) or an HF id.
    """

    input_path: str
    tokenizer: str
    output_path: str = this_output_path()
    split: str = "train"
    text_key: str = "text"
    batch_size: int = 128  # documents per encode call
    cpus_per_shard: float = 1.0


def _cache_metadata(config: TokenizeConfig, vocab_size: int) -> dict[str, Any]:
    # Same keys as Levanter's BatchTokenizer metadata, so a loader comparing them sees the truth.
    return {
        "tokenizer": config.tokenizer,
        "vocab_size": vocab_size,
        "return_attention_mask": False,
        "padding": False,
        "max_length": None,
        "append_bos": False,
        "append_eos": False,
    }


def tokenize_shard(config: TokenizeConfig, index: int, path: str, shard_dir: str, stats_file: str) -> dict:
    """Write one input file's documents as a Levanter cache part; returns its stats."""
    from levanter.store.cache import CacheMetadata, SerialCacheWriter
    from tqdm.auto import tqdm

    fs, p = url_to_fs(shard_dir)
    if fs.exists(p):  # a crashed attempt: start the part again
        fs.rm(p, recursive=True)
    tok = FastTokenizer.from_pretrained(config.tokenizer)
    split = [t for t in (BOS, EOS) if t not in tok.special_ids]
    if split:
        raise ValueError(f"tokenizer {config.tokenizer}: {' and '.join(split)} are not single tokens, yet every "
                         f"document starts with {BOS} and ends with {EOS}; build the tokenizer with "
                         f"`soda build-tokenizer` (it adds them to a Qwen3 base)")
    lo, hi = tok.audio_base_id, tok.audio_base_id + tok.num_audio_tokens
    meta = CacheMetadata(_cache_metadata(config, tok.vocab_size))
    exemplar = {FIELD: np.zeros((0,), dtype=np.int32)}
    docs = tokens = audio_tokens = empty = 0
    name = shard_dir.rstrip("/").rsplit("/", 1)[-1]
    with SerialCacheWriter(shard_dir, exemplar, metadata=meta, shard_name=name) as writer:
        with tqdm(desc=f"tokenize {name}", unit="doc", leave=False) as bar:
            for batch in iter_record_batches(path, [config.text_key], config.batch_size):
                texts = [r[config.text_key] or "" for r in batch]
                for i, t in enumerate(texts):
                    if not isinstance(t, str):
                        raise ValueError(f"{path}: document {docs + empty + i} field {config.text_key!r} is a "
                                         f"{type(t).__name__}, expected a string")
                rows = []
                for ids in tok.encode_batch(texts):
                    if len(ids) == 0:
                        empty += 1
                        continue
                    rows.append({FIELD: ids})
                    tokens += len(ids)
                    audio_tokens += int(np.count_nonzero((ids >= lo) & (ids < hi)))
                if rows:
                    writer.write_batch(rows)
                docs += len(rows)
                bar.update(len(batch))
    stats = {
        "input": path,
        "part": name,
        "documents": docs,
        "tokens": tokens,
        "audio_tokens": audio_tokens,
        "text_tokens": tokens - audio_tokens,
        "empty_documents_skipped": empty,
        "vocab_size": tok.vocab_size,
    }
    atomic_write_json(stats_file, stats)
    return stats


def _write_sharded_ledger(cache_dir: str, parts: list[dict], metadata: dict) -> None:
    from levanter.store.cache import CACHE_LAYOUT_SHARDED, CacheLedger, CacheMetadata

    ledger = CacheLedger(
        total_num_rows=sum(s["documents"] for s in parts),
        shard_rows={s["part"]: s["documents"] for s in parts},
        is_finished=True,
        finished_shards=[s["part"] for s in parts],
        field_counts={FIELD: sum(s["tokens"] for s in parts)},
        field_counts_by_shard={s["part"]: {FIELD: s["tokens"]} for s in parts},
        layout=CACHE_LAYOUT_SHARDED,
        metadata=CacheMetadata(metadata),
    )
    atomic_write_bytes(join(cache_dir, LEDGER), ledger.to_json().encode())


def tokenize(config: TokenizeConfig) -> dict[str, Any]:
    """The step fn: tokenize unfinished parts (Ray tasks if Ray is up), then write the ledger."""
    inputs = list_input_files(config.input_path, INPUT_SUFFIXES, what="document")
    out = config.output_path
    cache_dir = join(out, config.split)
    def shard_dir(i: int) -> str:
        return join(cache_dir, f"part-{i:05d}")

    def stats_file(i: int) -> str:
        return join(out, "stats", f"part-{i:05d}.json")

    todo, stats = finished_parts(inputs, stats_file, lambda i: join(shard_dir(i), LEDGER))
    jobs = [(config, i, inputs[i], shard_dir(i), stats_file(i)) for i in todo]
    if stats:
        logger.info("tokenize: %d of %d parts already done", len(stats), len(inputs))
    results = run_shards(tokenize_shard, jobs, desc="tokenize", num_cpus=config.cpus_per_shard,
                         attempts=SHARD_ATTEMPTS, retry_delay_s=RETRY_DELAY_S, job_names=[inputs[i] for i in todo])
    for job, result in zip(jobs, results):
        stats[job[1]] = result
    parts = [stats[i] for i in range(len(inputs))]
    vocab_size = parts[0]["vocab_size"]
    _write_sharded_ledger(cache_dir, parts, _cache_metadata(config, vocab_size))

    summary = {
        "input_files": len(inputs),
        "cache_dir": cache_dir,
        "tokenizer": config.tokenizer,
        "vocab_size": vocab_size,
    }
    for key in ("documents", "tokens", "audio_tokens", "text_tokens", "empty_documents_skipped"):
        summary[key] = sum(s[key] for s in parts)
    atomic_write_json(join(out, "summary.json"), summary)
    logger.info(
        "tokenize: %d documents, %d tokens (%d audio) -> Levanter cache %s",
        summary["documents"],
        summary["tokens"],
        summary["audio_tokens"],
        cache_dir,
    )
    return summary
