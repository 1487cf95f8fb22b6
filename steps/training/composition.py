"""Token composition for the S / S+A / S+A+T ablation (shared/seeds/003_*.txt "Token Composition").

- S+A+T: the standard interleaved documents (all 8 codebooks and transcripts): unchanged.
- S+A: all 8 codebooks, transcripts dropped (`<|text_start|>...<|text_end|>` spans removed).
- S: codebook 0 (semantic) only, transcripts dropped.

`compose_document(doc, composition)` is a pure function over the private-use string. Per-codebook
selection is frame-major, `reshape(-1, 8)[:, :k]` over each audio run (reference.md section 1),
never `reshape(8, -1)[:k]`, which would keep a prefix of time.

Where it plugs in: between the interleave step (documents/) and the tokenize step, as its own
executor step `compose_documents` (documents/*.parquet in, documents/*.parquet out, same
columns). With transcripts dropped, a recording's text-first and audio-first documents become the
same string, so only the audio-first rows are kept (no duplicated data). The tokenize step then
reads the composed documents/ as usual. (An interleave option calling `compose_document` per
document would do the same; the interleave step's owner may add one.)
"""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from pipeline import this_output_path
from tokenizer.audio import AUDIO_CHAR_END, CODEBOOK_SIZE, NUM_CODEBOOKS, UNICODE_OFFSET
from tokenizer.audio import codepoints_to_str, str_to_codepoints
from tokenizer.vocab import AUDIO_START, BOS, EOS, TEXT_END, TEXT_START
from pipeline.fileio import atomic_write_bytes, atomic_write_json, exists, join, list_input_files, url_to_fs

logger = logging.getLogger(__name__)

CODEBOOKS_KEPT = {"S": 1, "S+A": NUM_CODEBOOKS, "S+A+T": NUM_CODEBOOKS}
_TEXT_SPAN = re.compile(re.escape(TEXT_START) + r".*?" + re.escape(TEXT_END), re.DOTALL)


def keep_codebooks(audio: np.ndarray | str, k: int, num_codebooks: int = NUM_CODEBOOKS) -> str:
    """The first `k` codebooks of a frame-major audio run (string or code points)."""
    points = str_to_codepoints(audio) if isinstance(audio, str) else np.asarray(audio)
    if len(points) % num_codebooks:
        raise ValueError(f"audio run of {len(points)} tokens is not a whole number of "
                         f"{num_codebooks}-codebook frames")
    frames = points.reshape(-1, num_codebooks)  # frame-major: one row per frame
    codebook = (frames.astype(np.int64) - UNICODE_OFFSET) // CODEBOOK_SIZE
    if frames.size and not (codebook == np.arange(num_codebooks)).all():
        t, j = (int(i) for i in np.argwhere(codebook != np.arange(num_codebooks))[0])
        raise ValueError(f"audio run: frame {t} position {j} holds a codebook {int(codebook[t, j])} token; "
                         "expected frame-major codebooks 0..7 (was the audio flattened codebook-major?)")
    return codepoints_to_str(frames[:, :k].reshape(-1))


def _audio_runs(points: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each maximal run of audio code points."""
    is_audio = (points >= UNICODE_OFFSET) & (points < AUDIO_CHAR_END)
    edges = np.diff(np.concatenate([[0], is_audio.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def compose_document(doc: str, composition: str) -> str:
    """`doc` rebuilt with the tokens of `composition` ("S", "S+A" or "S+A+T").

    Returns "" for a document left with no audio once text is dropped (text-only documents).
    """
    if composition not in CODEBOOKS_KEPT:
        raise ValueError(f"composition must be one of {list(CODEBOOKS_KEPT)}, got {composition!r}")
    if composition == "S+A+T":
        return doc
    doc = _TEXT_SPAN.sub("", doc)
    if AUDIO_START not in doc:
        return ""
    if TEXT_START in doc or TEXT_END in doc:
        raise ValueError("document has an unmatched <|text_start|>/<|text_end|> delimiter")
    k = CODEBOOKS_KEPT[composition]
    if k == NUM_CODEBOOKS:
        return doc
    points = str_to_codepoints(doc)
    pieces, last = [], 0
    for start, end in _audio_runs(points):
        pieces.append(doc[last:start])
        pieces.append(keep_codebooks(points[start:end], k))
        last = end
    pieces.append(doc[last:])
    return "".join(pieces)


# ---- the step ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ComposeConfig:
    """Rewrite the interleave step's documents (`input_path`) with `composition`'s tokens."""

    input_path: str
    composition: str = "S+A+T"
    output_path: str = this_output_path()


def compose_documents(config: ComposeConfig) -> dict:
    """The step fn: one output parquet per input parquet (skipped when already written)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if config.composition not in CODEBOOKS_KEPT:
        raise ValueError(f"ComposeConfig.composition must be one of {list(CODEBOOKS_KEPT)}, got {config.composition!r}")
    counts: Counter = Counter()
    inputs = list_input_files(config.input_path, (".parquet",), what="document")
    for i, path in enumerate(inputs):
        out_file = join(config.output_path, "documents", f"part-{i:05d}.parquet")
        if exists(out_file):
            counts["files_already_done"] += 1
            continue
        fs, p = url_to_fs(path)
        with fs.open(p, "rb") as f:
            table = pq.read_table(f)
        rows = table.to_pylist()
        kept = []
        for row in rows:
            if config.composition != "S+A+T" and row.get("format") == "text_first":
                counts["text_first_dropped"] += 1  # identical to its audio-first twin once text is gone
                continue
            text = compose_document(row["text"] or "", config.composition)
            if not text or text in (BOS, BOS + EOS):
                counts["empty_dropped"] += 1
                continue
            kept.append({**row, "text": text})
        counts["documents_in"] += len(rows)
        counts["documents_out"] += len(kept)
        out = pa.Table.from_pylist(kept, schema=table.schema) if kept else table.slice(0, 0)
        buf = io.BytesIO()
        pq.write_table(out, buf, compression="zstd")
        atomic_write_bytes(out_file, buf.getvalue())
    summary = {"composition": config.composition, "input_files": len(inputs), **counts}
    atomic_write_json(join(config.output_path, "summary.json"), summary)
    logger.info("compose %s: %s -> %s", config.composition, dict(counts), config.output_path)
    return summary
