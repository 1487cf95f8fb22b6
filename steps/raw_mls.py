"""Read MLS English as published: `parler-tts/mls_eng`, one 10-20 s chunk of an audiobook per row.

The layout, from the hub tree of `parler-tts/mls_eng` at faf6604dcf0bb9ec0d9c280a140ad74da9c931b0
(main's "Update README.md"; files such as data/train-00016-of-01416.parquet) and its dataset card:

    data/{split}-{nnnnn}-of-{NNNNN}.parquet    train (1,416 shards), dev, test
    columns: audio (HF Audio struct {bytes, path}), original_path, begin_time, end_time, transcript,
             audio_duration, speaker_id, book_id

MLS (Pratap et al. 2020, arXiv:2012.03411) cut LibriVox audiobooks into chunks of 10-20 s; its
utterance ids are `{speaker}_{book}_{segment}` (e.g. 10214_10108_000000). The generic parquet reader
(steps.audio_io.iter_parquet) finds no id column in these files and keys rows `row{n}` per file, so
ids repeat across the shards; this reader does not.

Ids (`utterance_id_of`): the stem of `audio.path` when it has the MLS form, else the stem of
`original_path` when that has it, else `{shard}-row{n}` (shard = the file name without
`.parquet`, n = the row in the file: `train-00016-of-01416-row00000042`), unique across shards. Not
checked here: which of the two paths carries the id in every file of the release (hence all three).

Documents: one per chunk. The SODA paper used MLS's fixed 10-20 s chunks as they are, so each chunk
is a recording of its own (recording_id = utterance_id, order 0): chunks of one book are not joined
into a longer document, though begin_time/end_time would allow it.

Checks, as Skipped items counted like any bad input:
- 'missing_audio': a row without audio bytes;
- 'missing_transcript': an empty or null `transcript` (when transcripts are required);
- 'duration_mismatch': the decoded audio is longer or shorter than the row's `audio_duration` by more
  than `DURATION_TOLERANCE_SECONDS` (a null `audio_duration` is not checked);
- 'too_long' (over `max_seconds`, EncodeConfig.max_utterance_seconds), and the decoding reasons of
  steps.audio_io ('corrupt', 'truncated', 'unreadable_format', 'zero_length', 'non_finite');
- a file that is not parquet, or breaks mid-file: one 'corrupt' item (the rows read before stay).
A file without `audio` and `transcript` columns is an error naming the file.
"""

from __future__ import annotations

import os
import re
from typing import Iterator, Optional

from steps.audio_io import BadAudioError, Skipped, Utterance, _ext_of, read_audio
from steps.table_readers import open_parquet

LAYOUT_COLUMNS = ("audio", "original_path", "begin_time", "end_time", "speaker_id", "book_id")  # auto-detection
REQUIRED_COLUMNS = ("audio", "transcript")
DURATION_TOLERANCE_SECONDS = 0.1  # decoded length vs audio_duration; resampling moves it by well under 1 ms
BATCH_ROWS = 64  # rows decoded from parquet at a time (about 30 MB of 16 kHz FLAC)
_MLS_ID = re.compile(r"^\d+_\d+_\d+$")


def is_mls_schema(names) -> bool:
    """True for a parquet schema with MLS's own columns (not just any audio + transcript)."""
    return all(c in names for c in LAYOUT_COLUMNS)


def is_mls_parquet(path: str) -> bool:
    """True for a parquet file whose footer has MLS's columns; False for any other file, or one that
    cannot be read (the generic reader then reports it as 'corrupt')."""
    import fsspec
    import pyarrow.parquet as pq

    if not path.rstrip("/").lower().endswith(".parquet"):
        return False
    try:
        with fsspec.open(path, "rb") as f:
            return is_mls_schema(pq.ParquetFile(f).schema_arrow.names)
    except Exception:  # not parquet, truncated, unreachable: not for this reader to decide
        return False


def shard_of(path: str) -> str:
    base = os.path.basename(path.rstrip("/"))
    return base[: -len(".parquet")] if base.endswith(".parquet") else base


def _stem(path) -> str:
    return os.path.splitext(os.path.basename(str(path)))[0] if path else ""


def utterance_id_of(row: dict, shard: str, n: int) -> str:
    """The MLS id from `audio.path` or `original_path`, else `{shard}-row{n:08d}`."""
    audio = row.get("audio")
    for candidate in (_stem(audio.get("path")) if isinstance(audio, dict) else "", _stem(row.get("original_path"))):
        if _MLS_ID.match(candidate):
            return candidate
    return f"{shard}-row{n:08d}"


def check_row(row: dict, utterance_id: str, source: str, require_transcript: bool = True,
              max_seconds: Optional[float] = None) -> Utterance | Skipped:
    """Decode and check one row; see the module docstring for the reasons."""
    audio = row.get("audio")
    data, ext = (audio.get("bytes"), _ext_of(audio.get("path") or "") or None) if isinstance(audio, dict) else (audio, None)
    if not data:
        return Skipped(utterance_id, source, "missing_audio", "the row's audio holds no bytes")
    transcript = row.get("transcript")
    transcript = transcript.strip() if isinstance(transcript, str) else None
    if require_transcript and not transcript:
        return Skipped(utterance_id, source, "missing_transcript", "empty or null transcript")
    try:
        samples = read_audio(data, ext, max_seconds=max_seconds)
    except BadAudioError as exc:
        detail = exc.detail + (" (max_utterance_seconds)" if exc.reason == "too_long" else "")
        return Skipped(utterance_id, source, exc.reason, detail)
    utt = Utterance(utterance_id, utterance_id, 0, transcript or None, samples, source)
    declared = row.get("audio_duration")
    if isinstance(declared, (int, float)) and abs(utt.duration - declared) > DURATION_TOLERANCE_SECONDS:
        return Skipped(utterance_id, source, "duration_mismatch",
                       f"decoded {utt.duration:.3f} s, audio_duration says {declared:.3f} s "
                       f"(more than {DURATION_TOLERANCE_SECONDS:g} s apart)")
    return utt


def iter_mls_parquet(path: str, require_transcript: bool = True, max_seconds: Optional[float] = None,
                     batch_rows: int = BATCH_ROWS) -> Iterator[Utterance | Skipped]:
    """Every row of one MLS parquet file, in file order, as an Utterance or a Skipped item."""
    import fsspec
    import pyarrow as pa

    shard = shard_of(path)
    with fsspec.open(path, "rb") as f:
        try:
            pf = open_parquet(f, path)
        except ValueError as exc:
            yield Skipped(shard, path, "corrupt", str(exc))
            return
        names = pf.schema_arrow.names
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise ValueError(f"{path}: not MLS's layout (parler-tts/mls_eng): no {', '.join(missing)} column(s) "
                             f"in {names}; use input_format='parquet' for other parquet files")
        columns = [c for c in ("audio", "original_path", "transcript", "audio_duration") if c in names]
        n = 0
        batches = pf.iter_batches(batch_size=batch_rows, columns=columns)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:  # a damaged row group: the rows before it are kept
                yield Skipped(f"{shard}-row{n:08d}", f"{path}::row{n}", "corrupt", f"parquet data breaks at row {n}: {exc}")
                return
            for row in batch.to_pylist():
                yield check_row(row, utterance_id_of(row, shard, n), f"{path}::row{n}", require_transcript, max_seconds)
                n += 1
