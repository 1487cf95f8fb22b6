"""Interleave step: encoded utterances -> SODA documents (shared/reference.md section 3).

Input (`corpus="speech"`): parquet shards from the Mimi encode step with columns
`utterance_id, recording_id, order, transcript (nullable), duration, audio`, given as a
directory (searched recursively), a glob or a file, local or gs://. Each recording's utterances
become documents in both formats (see tokenizer.documents), split at utterance boundaries
beyond `max_document_tokens`. `corpus="text"`: jsonl / jsonl.gz / jsonl.zstd (Nemotron-CC's
form; steps.zstd_io) / parquet files with a `text_key` column pass through as format "text"
(sanitised, BOS first unless text_add_bos=False, EOS last like every document).

Output: `documents/part-NNNNN.parquet` (one per input file; columns id, recording_id, format,
text; rows sorted by recording, part, format), `stats/part-NNNNN.json` (the shard's done
marker), and `summary.json`. Output is byte-identical on rerun; a rerun redoes only shards
without their stats file. A recording whose utterances are spread over several input files
becomes separate documents per file; the summary counts such recordings.
"""

from __future__ import annotations

import io
import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Optional

from pipeline import this_output_path
from pipeline.fileio import atomic_write_bytes, atomic_write_json, join, list_input_files, url_to_fs
from steps.table_readers import iter_record_batches, read_parquet
from steps.sharding import finished_parts, run_shards
from tokenizer.documents import FORMATS, STAT_KEYS, TEXT, Utterance, clean_utterances
from tokenizer.documents import documents_from_clean, estimate_document_tokens, text_document

logger = logging.getLogger(__name__)

SPEECH_COLUMNS = ("utterance_id", "recording_id", "order", "transcript", "duration", "audio")
SPEECH_SUFFIXES = (".parquet",)
TEXT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".jsonl.zstd", ".jsonl.zst", ".parquet")
ROWS_PER_GROUP = 256


@dataclass(frozen=True)
class InterleaveConfig:
    """Build interleaved documents from `input_path` into `output_path`.

    max_document_tokens: split recordings longer than this (estimated tokens, BOS included) at
      utterance boundaries; None keeps one document per recording as the paper describes.
    reserved_strings: extra literal strings to remove from transcripts (e.g. a Qwen base's
      non-special added tokens "<think>", "</think>"); `<|...|>` strings are always removed.
    end_with_eos: append <|end_of_text|> to every document (default: yes). The released
      pre-encoded SODA documents are `<|begin_of_text|>` ... `<|end_of_text|>` (reference.md
      section 10; steps/pre_encoded.py keeps them so), and the raw path writes the same, so both
      give the same ids at document boundaries; EOS also marks the boundaries for Levanter's
      packing. False gives section 3's literal templates (BOS only), which no longer match the
      released data.
    """

    input_path: str
    output_path: str = this_output_path()
    corpus: str = "speech"  # "speech" | "text"
    formats: tuple[str, ...] = FORMATS
    max_document_tokens: Optional[int] = 1 << 20
    text_key: str = "text"
    text_add_bos: bool = True
    end_with_eos: bool = True
    reserved_strings: tuple[str, ...] = ()


def _read_speech_rows(path: str) -> dict[str, list]:
    import pyarrow as pa

    fs, p = url_to_fs(path)
    with fs.open(p, "rb") as f:
        table = read_parquet(f, path)
    missing = [c for c in SPEECH_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; the Mimi encode step's shards have "
            f"{list(SPEECH_COLUMNS)} (found {table.column_names})"
        )
    kinds = {"utterance_id": pa.types.is_string, "recording_id": pa.types.is_string, "transcript": pa.types.is_string,
             "audio": pa.types.is_string, "order": pa.types.is_integer, "duration": pa.types.is_floating}
    wrong = [f"{c} is {table.schema.field(c).type}" for c, ok in kinds.items()
             if not (ok(table.schema.field(c).type) or pa.types.is_large_string(table.schema.field(c).type)
                     or pa.types.is_null(table.schema.field(c).type))]
    if wrong:
        raise ValueError(f"{path}: column type(s) differ from the Mimi encode step's schema: {', '.join(wrong)} "
                         "(expected string ids, transcript and audio, integer order, float duration)")
    return {c: table.column(c).to_pylist() for c in SPEECH_COLUMNS}


def _documents_table(docs):
    import pyarrow as pa

    return pa.table(
        {
            "id": pa.array([d.id for d in docs], pa.string()),
            "recording_id": pa.array([d.recording_id for d in docs], pa.string()),
            "format": pa.array([d.format for d in docs], pa.string()),
            "text": pa.array([d.text for d in docs], pa.large_string()),
        }
    )


def process_shard(config: InterleaveConfig, index: int, path: str, out_file: str, stats_file: str) -> dict:
    """Turn one input file into one documents file plus its stats (written last)."""
    import pyarrow.parquet as pq

    counts: Counter = Counter({k: 0 for k in STAT_KEYS})
    docs = []
    utterances_in, audio_seconds = 0, 0.0
    recordings = 0
    if config.corpus == "speech":
        rows = _read_speech_rows(path)
        by_recording: dict[str, list[Utterance]] = defaultdict(list)
        for i in range(len(rows["audio"])):
            rec = rows["recording_id"][i]
            if rec is None:
                raise ValueError(f"{path}: row {i} (utterance {rows['utterance_id'][i]!r}) has no recording_id")
            by_recording[rec].append(
                Utterance(
                    str(rows["utterance_id"][i]),
                    rec,
                    int(rows["order"][i] or 0),
                    rows["transcript"][i],
                    float(rows["duration"][i] or 0.0),
                    rows["audio"][i] or "",
                )
            )
        utterances_in = len(rows["audio"])
        recordings = len(by_recording)
        for rec in sorted(by_recording):
            clean = clean_utterances(by_recording[rec], counts, config.reserved_strings)
            audio_seconds += sum(u.duration for u in clean)
            docs.extend(
                documents_from_clean(
                    rec,
                    clean,
                    counts,
                    formats=config.formats,
                    max_tokens=config.max_document_tokens,
                    end_with_eos=config.end_with_eos,
                )
            )
    elif config.corpus == "text":
        stem = os.path.basename(path).split(".")[0]
        row = 0
        for batch in iter_record_batches(path, [config.text_key], 1024, optional=["id"]):
            for rec in batch:
                doc_id = str(rec["id"]) if rec["id"] is not None else f"{stem}:{row}"
                if rec[config.text_key] is not None and not isinstance(rec[config.text_key], str):
                    raise ValueError(f"{path}: row {row} field {config.text_key!r} is a "
                                     f"{type(rec[config.text_key]).__name__}, expected a string")
                row += 1
                docs.append(
                    text_document(
                        doc_id,
                        rec[config.text_key] or "",
                        counts,
                        add_bos=config.text_add_bos,
                        end_with_eos=config.end_with_eos,
                        reserved=config.reserved_strings,
                    )
                )
    else:
        raise ValueError(f"InterleaveConfig.corpus must be 'speech' or 'text', got {config.corpus!r}")

    buf = io.BytesIO()
    pq.write_table(_documents_table(docs), buf, compression="zstd", row_group_size=ROWS_PER_GROUP)
    atomic_write_bytes(out_file, buf.getvalue())
    by_format = Counter(d.format for d in docs)
    stats = {
        "input": path,
        "output": out_file,
        "recordings": recordings,
        "utterances": int(utterances_in),
        "audio_hours": audio_seconds / 3600.0,
        "documents": len(docs),
        "documents_by_format": {f: by_format.get(f, 0) for f in (*config.formats, TEXT) if by_format.get(f)},
        "tokens_estimate": sum(estimate_document_tokens(d.text) for d in docs),
        **{k: counts[k] for k in STAT_KEYS},
    }
    atomic_write_json(stats_file, stats)
    return stats


def _recordings_in_several_shards(out_files: list[str]) -> int:
    import pyarrow.parquet as pq

    seen: Counter = Counter()
    for out in out_files:
        fs, p = url_to_fs(out)
        with fs.open(p, "rb") as f:
            seen.update(set(pq.read_table(f, columns=["recording_id"]).column(0).to_pylist()))
    return sum(1 for rec, n in seen.items() if rec and n > 1)


def interleave(config: InterleaveConfig) -> dict[str, Any]:
    """The step fn: process unfinished shards (Ray tasks if Ray is up), then write summary.json."""
    for fmt in config.formats:
        if fmt not in FORMATS:
            raise ValueError(f"InterleaveConfig.formats: unknown format {fmt!r}; use {FORMATS}")
    suffixes = SPEECH_SUFFIXES if config.corpus == "speech" else TEXT_SUFFIXES
    inputs = list_input_files(config.input_path, suffixes, what=f"{config.corpus} input")
    out = config.output_path
    def out_file(i: int) -> str:
        return join(out, "documents", f"part-{i:05d}.parquet")

    def stats_file(i: int) -> str:
        return join(out, "stats", f"part-{i:05d}.json")

    todo, stats = finished_parts(inputs, stats_file, out_file)
    jobs = [(config, i, inputs[i], out_file(i), stats_file(i)) for i in todo]
    if stats:
        logger.info("interleave: %d of %d shards already done", len(stats), len(inputs))
    for job, result in zip(jobs, run_shards(process_shard, jobs, desc="interleave")):
        stats[job[1]] = result

    ordered = [stats[i] for i in range(len(inputs))]
    summary: dict[str, Any] = {
        "corpus": config.corpus,
        "input_files": len(inputs),
        "formats": list(config.formats) if config.corpus == "speech" else [TEXT],
        "max_document_tokens": config.max_document_tokens,
        "end_with_eos": config.end_with_eos,
    }
    for key in ("recordings", "utterances", "audio_hours", "documents", "tokens_estimate", *STAT_KEYS):
        summary[key] = sum(s[key] for s in ordered)
    by_format: Counter = Counter()
    for s in ordered:
        by_format.update(s["documents_by_format"])
    summary["documents_by_format"] = dict(sorted(by_format.items()))
    summary["recordings_in_several_shards"] = (
        _recordings_in_several_shards([s["output"] for s in ordered])
        if config.corpus == "speech" and len(ordered) > 1
        else 0
    )
    if summary["recordings_in_several_shards"]:
        logger.warning(
            "interleave: %d recordings have utterances in several input files; each file's part "
            "became separate documents",
            summary["recordings_in_several_shards"],
        )
    atomic_write_json(join(out, "summary.json"), summary)
    logger.info(
        "interleave: %d documents (~%d tokens) from %d files -> %s",
        summary["documents"],
        summary["tokens_estimate"],
        len(inputs),
        join(out, "documents"),
    )
    return summary
