"""Encode speech shards to Mimi codes: the `encoded/...` step of the raw path.

inputs (webdataset tars, parquet files, audio directories, YODAS2's published audio archives, or
  MLS English's published parquet; local or gs://, globs allowed)
  -> decode -> mono -> 24 kHz (steps.audio_io.iter_audio_chunks, the streaming reader `soda encode`
  uses too; truncated files skipped) -> length-sorted batches -> Mimi, first 8 codebooks
  -> one parquet shard per input shard, rows sorted by (recording_id, order, utterance_id):

    utterance_id: string, recording_id: string, order: int64, transcript: string (nullable),
    duration: float64 (seconds), audio: string (private-use chars, frame-major; tokenizer.audio)

Output layout under `output_path`:
    shards/{name}.parquet      written to a temp name, then moved into place
    shards/{name}.done.json    the shard's stats; written last: a shard is done iff it exists
    stats.json                 totals, skipped counts by reason, per-shard stats, bad-file list
    summary.json               the key numbers (hours, utterances, audio tokens, skipped, plumbing_run)

YODAS2 (`input_format="yodas2"`, or "auto" for paths `.../audio/NNNNNNNN.tar.gz`): each archive is
one shard, read with its `../text/` and `../duration/` files by steps.raw_yodas2, which cuts every
long-form recording into its published utterances as it streams (audio between them is not kept).

MLS English (`input_format="mls"`, or "auto" for a parquet whose footer has MLS's columns
original_path, begin_time, end_time, speaker_id, book_id): each `data/{split}-NNNNN-of-NNNNN.parquet`
is one shard, read by steps.raw_mls: ids `{speaker}_{book}_{segment}` from the row (unique across
shards), one document per 10-20 s chunk, rows whose audio disagrees with `audio_duration` skipped.

Memory: utterances are encoded as they are read, `ENCODE_BUFFER_SECONDS` of audio at a time (sorted
by length within it), so a shard of any size holds only its codes. An utterance longer than
`max_chunk_seconds` (60 s, as SODA's own preparation: Mimi never saw more than 60 s at once) is
encoded in consecutive chunks of that length, a whole number of Mimi frames each, whose codes are
concatenated; it stays one utterance with its transcript. Longer than `max_utterance_seconds` is
still skipped as 'too_long' (a single utterance that long is a segmentation error, not speech to
keep). Each batch is zero-padded at the end to one of a few lengths (`bucket_frames`: 2 s to the
chunk length in steps of x1.25) and to a multiple of a quarter of `batch_size` rows, so Mimi sees a
bounded set of input shapes; padding at the end does not change the codes of the real frames
(Mimi's encoder is causal), which are trimmed to ceil(samples / 1920) frames as before. And
oneDNN's primitive cache is off for the encode step (`ENCODE_ENV`: each Ray task's runtime_env, and
`set_encode_env` in-process, where it works if no convolution ran before in the process): with both,
peak RSS stays flat however many batches a worker runs (tests/test_yodas2_memory.py, slow: a
60-minute YODAS2 video within 10% + 32 MiB of a 10-minute one).

A rerun skips shards with a done marker, so after a crash only unfinished shards are redone. With
Ray initialised each unfinished shard is one Ray task (`num_gpus=1` when `use_gpu`), otherwise
shards run one after another in this process. When more than `max_bad_fraction` of the inputs were
skipped the step fails, naming the files and reasons. `mimi_model="random"` marks every output a
plumbing run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from pipeline import strict_json
from steps.raw_mls import REQUIRED_COLUMNS, is_mls_parquet, is_mls_schema, iter_mls_parquet
from steps.raw_yodas2 import is_yodas2_archive, iter_yodas2_archive
from pipeline.fileio import atomic_write_bytes, join, remove_stale_temps, temp_path_for
from steps.sharding import run_shards
from pipeline.progress import report_progress
from pipeline.step import unwrap_versioned
from steps.audio_io import Skipped, detect_format, iter_raw_items, prepare
from tokenizer.audio import NUM_CODEBOOKS, codes_to_chars
from tokenizer.mimi import cached_mimi, encode, frames_for_samples

logger = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("utterance_id", "recording_id", "order", "transcript", "duration", "audio")
MAX_LISTED_BAD = 200  # bad inputs listed by name in stats.json and in the failure message
INPUT_FORMATS = ("auto", "webdataset", "parquet", "audio_dir", "yodas2", "mls")
SAMPLES_PER_FRAME = 1920  # Mimi: 24 kHz / 12.5 Hz
ENCODE_BUFFER_SECONDS = 600.0  # audio decoded and waiting for Mimi at most (float32: 58 MB), plus one utterance
# A batch is padded to one of a few lengths (bucket_frames): with every batch a new shape, oneDNN's
# per-shape primitive cache and glibc's fragmented free lists made peak RSS grow with the number of
# batches run (2.98 -> 4.17 GiB from a 10- to a 60-minute video, full-size Mimi on CPU).
# oneDNN (torch's CPU convolutions) caches a compiled primitive per conv shape and layer (up to 1,024);
# with its cache on, peak RSS still grew 12-20% from a 10- to a 60-minute video despite the bounded
# shapes (the cached primitives' scratch blocks fragment glibc's heap). Off, it is flat, at about 4%
# less speed on the small Mimi. Set for the encode step's Ray tasks (runtime_env) and in-process.
ENCODE_ENV = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0"}
MIN_BUCKET_FRAMES = 25  # 2 s
BUCKET_RATIO = 1.25  # at most 25% more frames than the longest piece of the batch (about 12% on average)


@dataclass(frozen=True)
class EncodeConfig:
    input_paths: tuple[str, ...]  # shard files, directories or globs; local or fsspec URLs
    output_path: str
    mimi_model: str = "kyutai/mimi"  # HF id, local dir, or "random" (plumbing run)
    num_codebooks: int = 8
    batch_size: int = 8  # utterances per Mimi call, grouped by similar length (raise on GPU)
    seed: int = 0  # seeds the random Mimi and torch
    input_format: str = "auto"  # auto | webdataset | parquet | audio_dir | yodas2 | mls
    require_transcript: bool = True
    max_bad_fraction: float = 0.05
    use_gpu: bool = False  # ask Ray for one GPU per shard task
    device: Optional[str] = None  # default: cuda if available, else cpu
    torch_threads: Optional[int] = None  # default: torch's own choice
    row_group_size: int = 1024
    mimi_config_overrides: Optional[dict[str, Any]] = field(default=None, hash=False)  # tests only
    # Longer utterances are skipped as 'too_long': Mimi's memory grows with length (about 30 MB per
    # second of audio for the full-size model on CPU), so one unsegmented hour would kill the worker.
    max_utterance_seconds: Optional[float] = 120.0
    # Mimi is run on at most this much audio at a time (longer utterances: chunks, codes concatenated).
    # Must be a whole number of Mimi frames (a multiple of 0.08 s). Version it in experiments.
    max_chunk_seconds: float = 60.0

    def __post_init__(self):
        def plain(name):
            return unwrap_versioned(getattr(self, name))

        if plain("num_codebooks") != NUM_CODEBOOKS:
            raise ValueError(
                f"EncodeConfig.num_codebooks is {plain('num_codebooks')!r}; SODA's token layout holds exactly "
                f"{NUM_CODEBOOKS} codebooks of 2048 codes (tokenizer.audio), and documents with any other count "
                "are rejected downstream. Keep 8 (codebook-0-only data is made later, by steps/training/composition.py)"
            )
        if plain("input_format") not in INPUT_FORMATS:
            raise ValueError(f"EncodeConfig.input_format is {plain('input_format')!r}; "
                             f"use one of {', '.join(INPUT_FORMATS)}")
        if not isinstance(plain("batch_size"), int) or plain("batch_size") < 1:
            raise ValueError(f"EncodeConfig.batch_size must be a positive int, got {plain('batch_size')!r}")
        if not 0.0 <= plain("max_bad_fraction") <= 1.0:
            raise ValueError(f"EncodeConfig.max_bad_fraction must be in [0, 1], got {plain('max_bad_fraction')!r}")
        limit = plain("max_utterance_seconds")
        if limit is not None and not limit > 0:
            raise ValueError(f"EncodeConfig.max_utterance_seconds must be positive or None, got {limit!r}")
        chunk = plain("max_chunk_seconds")
        if not (isinstance(chunk, (int, float)) and chunk > 0 and _chunk_samples(chunk) % SAMPLES_PER_FRAME == 0
                and abs(_chunk_samples(chunk) - chunk * 24_000) < 1e-6):
            raise ValueError(f"EncodeConfig.max_chunk_seconds must be a positive whole number of Mimi frames "
                             f"(a multiple of 0.08 s, e.g. 60.0), got {chunk!r}")


def _chunk_samples(seconds: float) -> int:
    return int(round(seconds * 24_000))


def bucket_frames(chunk_frames: int) -> tuple[int, ...]:
    """The lengths, in Mimi frames, that a batch is padded up to: from 2 s (or the whole chunk when
    shorter) in steps of x`BUCKET_RATIO`, then `chunk_frames` itself. 17 lengths for 60 s chunks."""
    lengths, frames = [], min(MIN_BUCKET_FRAMES, chunk_frames)
    while frames * BUCKET_RATIO < chunk_frames:
        lengths.append(frames)
        frames = max(frames + 1, math.ceil(frames * BUCKET_RATIO))
    return (*lengths, chunk_frames)


def padded_batch(waves: list, buckets: tuple[int, ...], batch_size: int) -> list:
    """`waves` zero-padded at the end to the smallest bucket that holds the longest (whole frames),
    plus all-zero rows up to a multiple of ceil(batch_size / 4): so Mimi only ever sees
    len(buckets) x 4 input shapes, whatever the lengths. Padding at the end leaves the codes of the
    real frames as they are (Mimi's encoder is causal; tests/test_yodas2_memory.py checks it on the
    full-size model); callers trim each result to its own frames."""
    import numpy as np

    longest = -(-max(len(w) for w in waves) // SAMPLES_PER_FRAME)
    target = next((b for b in buckets if b >= longest), longest) * SAMPLES_PER_FRAME
    step = -(-batch_size // 4)
    rows = -(-len(waves) // step) * step
    out = []
    for w in waves:
        padded = np.zeros(target, dtype=np.float32)
        padded[:len(w)] = w
        out.append(padded)
    return out + [np.zeros(target, dtype=np.float32)] * (rows - len(waves))


@dataclass(frozen=True)
class EncodedUtterance:
    """An output row's metadata (the samples are not kept once encoded)."""

    utterance_id: str
    recording_id: str
    order: int
    transcript: Optional[str]
    duration: float


def schema():
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("utterance_id", pa.string(), nullable=False),
            pa.field("recording_id", pa.string(), nullable=False),
            pa.field("order", pa.int64(), nullable=False),
            pa.field("transcript", pa.string(), nullable=True),
            pa.field("duration", pa.float64(), nullable=False),
            pa.field("audio", pa.string(), nullable=False),
        ]
    )


# ------------------------------------------------------------------------------------------------
# inputs and shard names


def expand_inputs(patterns) -> list[str]:
    """Expand globs; keep order of first appearance, sorted within each pattern; drop duplicates."""
    import fsspec

    if isinstance(patterns, str):
        patterns = [patterns]
    found: list[str] = []
    for pattern in patterns:
        fs, path = fsspec.core.url_to_fs(pattern)
        if any(ch in path for ch in "*?["):
            matches = sorted(fs.glob(path))
            if not matches:
                raise FileNotFoundError(f"input glob {pattern!r} matches no files")
            found.extend(_with_protocol(pattern, m) for m in matches)
        else:
            if not fs.exists(path):
                raise FileNotFoundError(f"input {pattern!r} does not exist")
            found.append(pattern)
    return list(dict.fromkeys(found))


def _with_protocol(pattern: str, path: str) -> str:
    if "://" in pattern and "://" not in path:
        return f"{pattern.split('://', 1)[0]}://{path}"
    return path


def shard_name(path: str) -> str:
    """A stable, readable output name for an input shard: base name + a hash of its last three path
    parts. Not of the full path: the same experiment under another prefix (or after a copy from
    local disk to gs://) must give the same names, so its outputs and done markers are identical.
    `encode_speech` refuses inputs whose names collide."""
    tail = "/".join(path.split("://", 1)[-1].rstrip("/").split("/")[-3:])
    base = posixpath.basename(path.rstrip("/"))
    for suffix in (".tar.gz", ".tgz", ".tar", ".parquet"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base) or "shard"
    return f"{base}-{hashlib.sha1(tail.encode('utf-8')).hexdigest()[:8]}"


# ------------------------------------------------------------------------------------------------
# one shard


def _get_model(config: EncodeConfig):
    return cached_mimi(config.mimi_model, config.seed, config.device, config.mimi_config_overrides)


def input_format_of(config: EncodeConfig, path: str) -> str:
    """The reader for one input: the configured format, or for "auto" YODAS2's archive name, MLS's
    columns in a parquet footer (steps.raw_mls.is_mls_parquet), else steps.audio_io.detect_format."""
    if config.input_format != "auto":
        return config.input_format
    if is_yodas2_archive(path):
        return "yodas2"
    fmt = detect_format(path)
    return "mls" if fmt == "parquet" and is_mls_parquet(path) else fmt


def iter_items(config: EncodeConfig, input_path: str):
    """Utterance | Skipped for every input item of one shard, decoded and checked, in input order."""
    fmt = input_format_of(config, input_path)
    if fmt == "yodas2":
        yield from iter_yodas2_archive(input_path, require_transcript=config.require_transcript,
                                       max_seconds=config.max_utterance_seconds)
        return
    if fmt == "mls":
        yield from iter_mls_parquet(input_path, require_transcript=config.require_transcript,
                                    max_seconds=config.max_utterance_seconds)
        return
    for raw in iter_raw_items(input_path, fmt):
        yield prepare(raw, require_transcript=config.require_transcript, max_seconds=config.max_utterance_seconds)


def encode_shard(config: EncodeConfig, input_path: str) -> dict:
    """Encode one input shard and write its parquet + done marker; return the shard's stats."""
    import fsspec
    import torch

    name = shard_name(input_path)
    shard_dir = posixpath.join(config.output_path, "shards")
    fs, _ = fsspec.core.url_to_fs(shard_dir)
    fs.makedirs(shard_dir, exist_ok=True)
    remove_stale_temps(config.output_path.rstrip("/") + "/shards", name)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    torch.manual_seed(config.seed)

    set_encode_env()
    model = _get_model(config)
    rows, skipped, buffer, buffered = [], [], [], 0
    for item in iter_items(config, input_path):
        if isinstance(item, Skipped):
            skipped.append(item)
            continue
        buffer.append(item)
        buffered += len(item.audio)
        if buffered >= ENCODE_BUFFER_SECONDS * 24_000:
            rows.extend(_encode_buffer(config, model, buffer))
            buffer, buffered = [], 0
            _release_free_memory()
    rows.extend(_encode_buffer(config, model, buffer))
    rows.sort(key=lambda r: (r[0].recording_id, r[0].order, r[0].utterance_id))

    _write_parquet_atomic(fs, posixpath.join(shard_dir, f"{name}.parquet"), rows, config.row_group_size)
    stats = {
        "input": input_path,
        "shard": name,
        "utterances": len(rows),
        "recordings": len({r[0].recording_id for r in rows}),
        "seconds": sum(r[0].duration for r in rows),
        "frames": sum(r[2] for r in rows),
        "audio_tokens": sum(len(r[1]) for r in rows),
        "skipped": dict(sorted(Counter(s.reason for s in skipped).items())),
        "bad_inputs": [{"source": s.source, "reason": s.reason, "detail": s.detail} for s in skipped],
    }
    atomic_write_bytes(join(config.output_path, "shards", f"{name}.done.json"),
                       strict_json.dumps(stats, indent=1, sort_keys=True).encode())
    logger.info("encoded %s: %d utterances, %d skipped -> %s", input_path, len(rows), len(skipped), name)
    return stats


def _encode_buffer(config: EncodeConfig, model, utterances: list) -> list[tuple]:
    """(EncodedUtterance, audio chars, frames) for each utterance: no samples are kept.

    Each utterance is cut into pieces of at most `max_chunk_seconds` (whole Mimi frames, so the
    pieces' codes concatenate to exactly ceil(samples / 1920) frames); pieces are encoded in
    length-sorted batches of `batch_size`, padded to a bounded set of shapes (`padded_batch`)."""
    import numpy as np

    chunk = _chunk_samples(config.max_chunk_seconds)
    buckets = bucket_frames(chunk // SAMPLES_PER_FRAME)
    pieces = [(i, k, u.audio[start:start + chunk]) for i, u in enumerate(utterances)
              for k, start in enumerate(range(0, len(u.audio), chunk))]
    pieces.sort(key=lambda p: (len(p[2]), utterances[p[0]].utterance_id, p[1]))
    codes: dict[int, dict[int, np.ndarray]] = {}
    for start in range(0, len(pieces), config.batch_size):
        batch = pieces[start:start + config.batch_size]
        waves = padded_batch([p[2] for p in batch], buckets, config.batch_size)
        out = encode(model, waves, num_codebooks=config.num_codebooks)
        for (i, k, piece), c in zip(batch, out):
            codes.setdefault(i, {})[k] = c[:, :frames_for_samples(len(piece))]
    rows = []
    for i, utt in enumerate(utterances):
        parts = codes.pop(i)
        c = np.concatenate([parts[k] for k in sorted(parts)], axis=1) if len(parts) > 1 else parts[0]
        meta = EncodedUtterance(utt.utterance_id, utt.recording_id, utt.order, utt.transcript, utt.duration)
        rows.append((meta, codes_to_chars(c), c.shape[1]))
    return rows


def set_encode_env() -> None:
    """`ENCODE_ENV` into this process's environment, where not set already (an explicit setting wins).
    oneDNN reads its cache capacity when the process's first convolution runs: in a Ray task the
    variables are there from the worker's start (run_shards' `env`); in-process this takes effect
    only if no convolution ran earlier in the process, and stays set for the rest of it."""
    import os

    for key, value in ENCODE_ENV.items():
        os.environ.setdefault(key, value)


def _release_free_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc's malloc_trim) between buffers: the freed
    audio and activations of one buffer otherwise stay in fragmented free lists, and the next
    buffer's allocations, which rarely fit them, raise the peak. A no-op without glibc."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _write_parquet_atomic(fs, path: str, rows, row_group_size: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "utterance_id": [r[0].utterance_id for r in rows],
            "recording_id": [r[0].recording_id for r in rows],
            "order": [int(r[0].order) for r in rows],
            "transcript": [r[0].transcript for r in rows],
            "duration": [float(r[0].duration) for r in rows],
            "audio": [r[1] for r in rows],
        },
        schema=schema(),
    )
    tmp = temp_path_for(path)
    with fs.open(tmp, "wb") as f:
        pq.write_table(
            table, f, row_group_size=row_group_size, compression="zstd", compression_level=3,
            use_dictionary=["recording_id"], write_statistics=True, store_schema=True,
        )
    fs.mv(tmp, path)


# ------------------------------------------------------------------------------------------------
# the step


def encode_speech(config: EncodeConfig) -> dict:
    """Step fn: encode every unfinished input shard, then write stats.json and summary.json."""
    import fsspec

    inputs = expand_inputs(config.input_paths)
    fs, _ = fsspec.core.url_to_fs(config.output_path)
    shard_dir = posixpath.join(config.output_path, "shards")
    _check_shard_names(fs, shard_dir, inputs)
    todo = [p for p in inputs if not fs.exists(posixpath.join(shard_dir, f"{shard_name(p)}.done.json"))]
    logger.info("encode: %d input shards, %d already done, %d to encode", len(inputs), len(inputs) - len(todo), len(todo))
    _check_parquet_inputs(config, todo)
    if todo:
        _run_shards(config, todo)

    per_shard = [json.loads(fs.cat_file(posixpath.join(shard_dir, f"{shard_name(p)}.done.json"))) for p in inputs]
    summary = _summarize(config, per_shard)
    stats = dict(summary, shards=[{k: v for k, v in s.items() if k != "bad_inputs"} for s in per_shard])
    bad = [b for s in per_shard for b in s["bad_inputs"]]
    stats["bad_inputs"] = bad[:MAX_LISTED_BAD]
    atomic_write_bytes(join(config.output_path, "stats.json"),
                       strict_json.dumps(stats, indent=1, sort_keys=True).encode())
    atomic_write_bytes(join(config.output_path, "summary.json"),
                       strict_json.dumps(summary, indent=1, sort_keys=True).encode())

    if summary["bad_fraction"] > config.max_bad_fraction:
        listing = "\n".join(f"  {b['source']}: {b['reason']} ({b['detail']})" for b in bad[:50])
        more = f"\n  ... and {len(bad) - 50} more (all listed in stats.json)" if len(bad) > 50 else ""
        raise RuntimeError(
            f"encode: {summary['skipped_total']} of {summary['inputs_total']} inputs were bad "
            f"({summary['bad_fraction']:.1%} > max_bad_fraction {config.max_bad_fraction:.1%}); "
            f"skipped by reason {summary['skipped']}:\n{listing}{more}\n"
            "Fix or drop these files, or raise EncodeConfig.max_bad_fraction if this is expected."
        )
    tag = " [PLUMBING RUN: random Mimi]" if summary["plumbing_run"] else ""
    logger.info(
        "encode: %.2f h, %d utterances, %d audio tokens, %d skipped -> %s%s",
        summary["hours"], summary["utterances"], summary["audio_tokens"], summary["skipped_total"], config.output_path, tag,
    )
    return summary


def _check_shard_names(fs, shard_dir: str, inputs: list[str]) -> None:
    """Before any work: one output name per input, and no shard in `shards/` that these inputs do
    not make (the interleave step reads every shard there)."""
    by_name: dict[str, list[str]] = {}
    for path in inputs:
        by_name.setdefault(shard_name(path), []).append(path)
    clashes = {n: ps for n, ps in by_name.items() if len(ps) > 1}
    if clashes:
        raise ValueError("encode: inputs whose last three path parts are equal would share an output shard: "
                         + "; ".join(" = ".join(ps) for ps in list(clashes.values())[:5]))
    present = fs.glob(posixpath.join(shard_dir, "*.parquet")) if fs.exists(shard_dir) else []
    strays = sorted(p for p in present if posixpath.basename(p)[: -len(".parquet")] not in by_name)
    if strays:
        raise ValueError(f"encode: {shard_dir} holds {len(strays)} shard(s) that none of the inputs makes "
                         f"(e.g. {strays[:3]}), which the interleave step would read too; they come from other "
                         "inputs or an older shard naming: delete them (and their .done.json) and rerun")


def _check_parquet_inputs(config: EncodeConfig, paths: list[str], limit: int = 16) -> None:
    """Before any work: the first `limit` parquet inputs must have an audio column, and MLS inputs
    (input_format "mls", or MLS's columns under "auto") audio and transcript columns (a wrong dataset
    is an error, not thousands of skipped rows; a later odd file fails its own shard with the same
    message, and finished shards stay done). Only footers are read; unreadable files are left to
    the shard, which counts them as 'corrupt'."""
    import fsspec
    import pyarrow.parquet as pq

    wrong = []
    parquet = [p for p in paths if (config.input_format if config.input_format != "auto" else detect_format(p))
               in ("parquet", "mls")]
    for path in parquet[:limit]:
        try:
            with fsspec.open(path, "rb") as f:
                names = pq.ParquetFile(f).schema_arrow.names
        except Exception:  # truncated / not parquet: the shard reports it as a skipped 'corrupt' file
            continue
        if config.input_format == "mls" or (config.input_format == "auto" and is_mls_schema(names)):
            if any(c not in names for c in REQUIRED_COLUMNS):
                wrong.append(f"  {path}: columns {names} (MLS's reader needs {', '.join(REQUIRED_COLUMNS)})")
        elif not any(c in names for c in ("audio", "wav", "flac", "mp3")):
            wrong.append(f"  {path}: columns {names}")
    if wrong:
        raise ValueError("encode: parquet input(s) without an audio column (looked for audio, wav, flac, mp3; "
                         f"MLS inputs: {', '.join(REQUIRED_COLUMNS)}); no shard was started:\n" + "\n".join(wrong[:20])
                         + (f"\n  ... and {len(wrong) - 20} more" if len(wrong) > 20 else ""))


def _summarize(config: EncodeConfig, per_shard: list[dict]) -> dict:
    skipped: Counter = Counter()
    for s in per_shard:
        skipped.update(s["skipped"])
    utterances = sum(s["utterances"] for s in per_shard)
    total_skipped = sum(skipped.values())
    inputs_total = utterances + total_skipped
    return {
        "mimi_model": config.mimi_model,
        "plumbing_run": config.mimi_model == "random",
        "num_codebooks": config.num_codebooks,
        "shards": len(per_shard),
        "hours": sum(s["seconds"] for s in per_shard) / 3600.0,
        "utterances": utterances,
        "recordings": sum(s["recordings"] for s in per_shard),
        "audio_tokens": sum(s["audio_tokens"] for s in per_shard),
        "skipped": dict(sorted(skipped.items())),
        "skipped_total": total_skipped,
        "inputs_total": inputs_total,
        "bad_fraction": (total_skipped / inputs_total) if inputs_total else 0.0,
    }


def _run_shards(config: EncodeConfig, todo: list[str]) -> None:
    """One Ray task per input shard when Ray is up (a GPU each if asked), else in-process."""
    encoded: list[int] = []

    def progress(i: int, _result: dict) -> None:  # for the executor's console
        encoded.append(i)
        report_progress(len(encoded), len(todo), "shards encoded")

    run_shards(encode_shard, [(config, path) for path in todo], desc="encode shards",
               num_gpus=1 if config.use_gpu else 0, on_result=progress, env=ENCODE_ENV)
