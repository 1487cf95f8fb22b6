"""Read speech from the three on-disk forms the encode step accepts, and check it.

Input forms (local paths or fsspec URLs such as gs://):
- webdataset tar (`.tar`, `.tar.gz`): members `{key}.{flac|mp3|wav|ogg|opus}` + `{key}.json`
  (Emilia's layout: json holds id, text, duration, speaker, language);
- parquet with an audio column (HF `Audio` struct {bytes, path} or plain binary), an id column
  (`id`, `utterance_id`, `key` or `segment_id`) and a transcript column (`text`, `transcript` or
  `sentence`);
- a directory of audio files with sidecar transcripts (`{stem}.json` with a `text` field, or
  `{stem}.txt`), or a `manifest.jsonl` listing {id, audio (path relative to the dir), text, ...}.

Every item becomes an `Utterance` (24 kHz mono float32) or a `Skipped` record with a reason from
`SKIP_REASONS`. Stereo and other sample rates are converted, not skipped. Every file is read by
`iter_audio_chunks`, a streaming reader (any length, bounded memory; `soda encode` uses it too);
a file shorter than its container declares is 'truncated' (checked from its headers by
steps.audio_containers), never a good, shorter utterance.

Recording and order (one document = one recording, utterances in time order):
1. metadata fields `recording_id` and `order`, when present, win;
2. Emilia ids `{LANG}_{B}_{S}_W{n}` (and Emilia-YODAS ids ending in `_W{n}`): recording is the id
   without `_W{n}`, order is n;
3. ESPnet/YODAS segment ids `{recording}-{start}-{end}` (start, end of 5+ digits, end >= start):
   recording is the prefix, order is start;
4. LibriSpeech ids `{speaker}-{chapter}-{nnnn}`: recording is the chapter, order is nnnn;
5. otherwise the utterance is a recording of its own (order 0).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
from steps.audio_containers import inspect_container
from steps.table_readers import open_parquet

logger = logging.getLogger(__name__)

TARGET_SAMPLE_RATE = 24_000
AUDIO_EXTENSIONS = ("flac", "mp3", "wav", "ogg", "opus", "m4a")
SKIP_REASONS = (
    "corrupt",  # damaged file, decoder error mid-stream
    "truncated",  # the file is shorter than its header declares (cut short; steps.audio_containers)
    "unreadable_format",  # no decoder recognises the bytes
    "zero_length",  # no samples
    "non_finite",  # NaN or inf samples
    "missing_transcript",  # no transcript, or an empty one
    "malformed_metadata",  # json sidecar that does not parse
    "missing_audio",  # metadata without audio
    "too_long",  # longer than the encode step's max_utterance_seconds (memory grows with length)
    "segment_out_of_range",  # a published segment ends before it starts or past its recording (steps.raw_yodas2)
    "overlapping_segment",  # a published segment starts before the previous one ends (steps.raw_yodas2)
    "duration_mismatch",  # decoded length differs from the row's published duration (steps.raw_mls)
)
_TRANSCRIPT_KEYS = ("text", "transcript", "sentence")
_ID_KEYS = ("id", "utterance_id", "key", "segment_id")


class BadAudioError(ValueError):
    """Audio that cannot be used; `reason` is one of SKIP_REASONS."""

    def __init__(self, reason: str, detail: str):
        assert reason in SKIP_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class RawItem:
    """One utterance as stored: encoded audio bytes plus its metadata, not yet decoded."""

    key: str
    source: str  # "file" or "file::member", for error messages
    audio: Optional[bytes] = None
    audio_ext: Optional[str] = None
    meta: dict = field(default_factory=dict)
    meta_error: Optional[str] = None  # the json sidecar did not parse
    read_error: Optional[str] = None  # the container (tar) broke before this item was complete


@dataclass
class Utterance:
    utterance_id: str
    recording_id: str
    order: int
    transcript: Optional[str]
    audio: np.ndarray  # float32, mono, 24 kHz
    source: str

    @property
    def duration(self) -> float:
        return len(self.audio) / TARGET_SAMPLE_RATE


@dataclass
class Skipped:
    utterance_id: str
    source: str
    reason: str
    detail: str


# ------------------------------------------------------------------------------------------------
# decoding and checks


STREAM_BLOCK_FRAMES = 1 << 16  # frames decoded at a time, at the file's own rate
STREAM_CHUNK_SAMPLES = 375 * 1920  # iter_audio_chunks' default chunk: 30 s at 24 kHz, whole Mimi frames


def decode_audio_bytes(data: bytes, ext: Optional[str] = None) -> tuple[np.ndarray, int]:
    """Decode encoded audio, whole, to float32 (frames, channels) and its sample rate.

    soundfile (libsndfile: wav, flac, ogg, mp3, ...) first; librosa/audioread as the fallback for
    formats libsndfile lacks. Checked as `iter_audio_chunks` checks (truncated, non-finite, ...).
    """
    with _open_source(data) as f, _AudioDecoder(f, ext) as decoder:
        blocks = list(decoder.blocks(STREAM_BLOCK_FRAMES))
        channels = decoder.channels
    samples = np.concatenate(blocks) if blocks else np.zeros((0, channels), dtype=np.float32)
    return samples, decoder.sample_rate


def iter_audio_chunks(source, ext: Optional[str] = None, *, chunk_samples: int = STREAM_CHUNK_SAMPLES,
                      max_seconds: Optional[float] = None) -> Iterator[np.ndarray]:
    """The audio of one file as consecutive 24 kHz mono float32 chunks of `chunk_samples` samples
    (the last one shorter), in memory bounded by the chunk size whatever the file's length.

    `source`: a path or fsspec URL, the encoded bytes, or a seekable binary file object. The file is
    decoded a block at a time, averaged to mono and resampled with soxr's streaming resampler (HQ),
    whose output equals one `soxr.resample` of the whole file, sample for sample. Raises
    BadAudioError: 'truncated' (the container declares more than is present, found from its
    headers before any audio is yielded; for FLAC, STREAMINFO's count is checked at the end),
    'too_long' (over `max_seconds`: before decoding when the header says how long the file is),
    'non_finite', 'corrupt' (decoder error), 'unreadable_format', 'zero_length'. Some of these come
    after chunks were yielded: a caller that must not act on a bad file reads it through first.
    """
    if chunk_samples < 1:
        raise ValueError(f"chunk_samples must be positive, got {chunk_samples}")
    with _open_source(source) as f, _AudioDecoder(f, ext) as decoder:
        sr = decoder.sample_rate
        if max_seconds is not None and decoder.frames > max_seconds * sr:
            raise BadAudioError("too_long", f"{decoder.frames / sr:.1f} s > {max_seconds:g} s")
        resampler = None
        if sr != TARGET_SAMPLE_RATE:
            import soxr

            resampler = soxr.ResampleStream(sr, TARGET_SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        pending: list[np.ndarray] = []
        produced = 0
        for block in decoder.blocks(STREAM_BLOCK_FRAMES):
            mono = np.ascontiguousarray(block.mean(axis=1) if block.shape[1] > 1 else block[:, 0])
            out = resampler.resample_chunk(mono) if resampler is not None else mono
            produced += len(out)
            if max_seconds is not None and produced > max_seconds * TARGET_SAMPLE_RATE:
                raise BadAudioError("too_long", f"more than {max_seconds:g} s (stopped reading there)")
            yield from _take_chunks(pending, out, chunk_samples)
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            produced += len(tail)
            yield from _take_chunks(pending, tail, chunk_samples)
        if pending:
            yield np.concatenate(pending)
        if produced == 0:
            raise BadAudioError("zero_length", "no samples")


def _take_chunks(pending: list[np.ndarray], out: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Append `out` to `pending` and yield every whole chunk of `size` samples it completes."""
    if len(out):
        pending.append(np.asarray(out, dtype=np.float32))
    while sum(len(p) for p in pending) >= size:
        joined = np.concatenate(pending)
        yield joined[:size]
        pending[:] = [joined[size:]] if len(joined) > size else []


def read_audio(source, ext: Optional[str] = None, max_seconds: Optional[float] = None) -> np.ndarray:
    """A whole file (see `iter_audio_chunks` for `source`) as checked 24 kHz mono float32."""
    chunks = list(iter_audio_chunks(source, ext, max_seconds=max_seconds))
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    check_samples(audio)
    return audio


def load_audio_file(path: str) -> np.ndarray:
    """Read one audio file (local or fsspec URL) as checked 24 kHz mono float32."""
    return read_audio(path, _ext_of(path))


@contextlib.contextmanager
def _open_source(source):
    """A seekable binary file for encoded bytes, a path / fsspec URL, or a file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise BadAudioError("zero_length", "file is empty (0 bytes)")
        yield io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        import fsspec

        with fsspec.open(os.fspath(source), "rb") as f:
            yield f
    elif hasattr(source, "read") and hasattr(source, "seek"):
        yield source
    elif not source:
        raise BadAudioError("zero_length", "file is empty (0 bytes)")
    else:
        raise BadAudioError("unreadable_format", f"audio value is a {type(source).__name__}, expected encoded bytes")


class _AudioDecoder:
    """libsndfile (or, for formats it lacks, librosa) on a seekable file, after the container
    check; `blocks(n)` yields float32 (frames, channels) blocks checked for NaN/inf."""

    def __init__(self, f, ext: Optional[str]):
        import soundfile as sf

        if f.seek(0, 2) == 0:
            raise BadAudioError("zero_length", "file is empty (0 bytes)")
        self.container = inspect_container(f)
        if self.container.truncated:
            raise BadAudioError("truncated", self.container.truncated)
        self._sf, self._whole = None, None
        try:
            self._sf = sf.SoundFile(f)
        except sf.LibsndfileError as exc:
            message = re.sub(r"^Error opening <[^>]*>: ", "", str(exc))  # not the file object's repr
            if "unknown format" not in message.lower() and "format not recognised" not in message.lower():
                raise BadAudioError("corrupt", f"decoder error: {message}") from exc
            f.seek(0)
            self._whole, self.sample_rate = _decode_with_librosa(f.read(), ext, message)
            self.channels, self.frames = self._whole.shape[1], len(self._whole)
        else:
            self.sample_rate, self.channels, self.frames = self._sf.samplerate, self._sf.channels, self._sf.frames

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._sf is not None:
            self._sf.close()

    def blocks(self, n: int) -> Iterator[np.ndarray]:
        import soundfile as sf

        if self._sf is not None and self._sf.format == "MP3" and self._whole is None:
            # libsndfile's MPEG decoder loses the bit reservoir between read calls: the frames after each
            # block boundary decode wrong (libmpg123 "part2_3_length ... too large" on stderr; 0.4 off
            # in a test). One read decodes exactly, so an MP3 is decoded whole, after the length check.
            try:
                self._whole = self._sf.read(dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise self._stopped(0, f"decoder error: {exc}") from exc
        decoded = 0
        while True:
            if self._whole is not None:
                block = self._whole[decoded:decoded + n]
            else:
                try:
                    block = self._sf.read(n, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    raise self._stopped(decoded, f"decoder error: {exc}") from exc
            if not len(block):
                break
            bad = ~np.isfinite(block)
            if bad.any():
                at = decoded + int(np.argmax(bad.any(axis=1)))
                raise BadAudioError("non_finite", f"{int(bad.sum())} NaN or inf samples in frames {decoded}.."
                                                  f"{decoded + len(block)} (the first at {at / self.sample_rate:.2f} s)")
            decoded += len(block)
            yield block
        if self.container.declared_frames and decoded < self.container.declared_frames:
            raise self._stopped(decoded, "the stream ends there")

    def _stopped(self, decoded: int, why: str) -> BadAudioError:
        declared = self.container.declared_frames
        if declared and decoded < declared:  # FLAC: STREAMINFO says how long the file was
            return BadAudioError("truncated", f"STREAMINFO declares {declared} samples, decoding stops after "
                                              f"{decoded} ({why}): the file was cut short")
        return BadAudioError("corrupt", why)


def _decode_with_librosa(data: bytes, ext: Optional[str], first_error: str) -> tuple[np.ndarray, int]:
    import tempfile
    import warnings

    import librosa

    suffix = f".{ext}" if ext else ""
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # librosa's "PySoundFile failed" / deprecation notes
                audio, sr = librosa.load(tmp.name, sr=None, mono=False)
        except Exception as exc:  # audioread raises several unrelated types
            raise BadAudioError(
                "unreadable_format",
                f"neither soundfile ({first_error}) nor librosa ({type(exc).__name__}: {exc}) can decode it",
            ) from exc
    audio = np.asarray(audio, dtype=np.float32)
    audio = audio[:, None] if audio.ndim == 1 else audio.T
    return audio, int(sr)


def to_mono_24k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames, channels) or (frames,) at any rate -> float32 mono at 24 kHz (soxr, HQ)."""
    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if sample_rate != TARGET_SAMPLE_RATE and len(audio):
        import soxr

        audio = soxr.resample(audio, sample_rate, TARGET_SAMPLE_RATE, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(audio, dtype=np.float32)


def check_samples(audio: np.ndarray) -> None:
    """Raise BadAudioError for empty audio or NaN/inf samples."""
    if audio.size == 0:
        raise BadAudioError("zero_length", "no samples")
    if not np.isfinite(audio).all():
        bad = int((~np.isfinite(audio)).sum())
        raise BadAudioError("non_finite", f"{bad} of {audio.size} samples are NaN or inf")


# ------------------------------------------------------------------------------------------------
# recordings


_EMILIA_ID = re.compile(r"^(?P<rec>.+)_W(?P<order>\d+)$")
_SEGMENT_ID = re.compile(r"^(?P<rec>.+)-(?P<start>\d{5,})-(?P<end>\d{5,})$")
_LIBRISPEECH_ID = re.compile(r"^(?P<rec>\d+-\d+)-(?P<order>\d{4})$")


def recording_of(utterance_id: str, meta: Optional[dict] = None) -> tuple[str, int]:
    """(recording_id, order) for an utterance; see the module docstring for the rule."""
    meta = meta or {}
    if meta.get("recording_id") not in (None, ""):
        return str(meta["recording_id"]), int(meta.get("order") or 0)
    match = _EMILIA_ID.match(utterance_id)
    if match:
        return match["rec"], int(match["order"])
    match = _SEGMENT_ID.match(utterance_id)
    if match and int(match["end"]) >= int(match["start"]):
        return match["rec"], int(match["start"])
    match = _LIBRISPEECH_ID.match(utterance_id)
    if match:
        return match["rec"], int(match["order"])
    return utterance_id, int(meta.get("order") or 0)


def prepare(item: RawItem, require_transcript: bool = True,
            max_seconds: Optional[float] = None) -> Utterance | Skipped:
    """Decode, convert and check one raw item (`read_audio`); audio longer than `max_seconds` is
    'too_long', found from the header when it says the length, so a long file is not decoded."""
    if item.read_error is not None:
        return Skipped(item.key, item.source, "corrupt", item.read_error)
    if item.meta_error is not None:
        return Skipped(item.key, item.source, "malformed_metadata", item.meta_error)
    utterance_id = str(item.meta.get("id") or item.key)
    if item.audio is None:
        return Skipped(utterance_id, item.source, "missing_audio", "metadata without an audio file")
    transcript = _transcript_of(item.meta)
    if require_transcript and not transcript:
        return Skipped(utterance_id, item.source, "missing_transcript", "no non-empty text/transcript field")
    try:
        audio = read_audio(item.audio, item.audio_ext, max_seconds=max_seconds)
    except BadAudioError as exc:
        detail = exc.detail
        if exc.reason == "too_long":
            detail += " (max_utterance_seconds); segment it first, or raise EncodeConfig.max_utterance_seconds"
        return Skipped(utterance_id, item.source, exc.reason, detail)
    recording_id, order = recording_of(utterance_id, item.meta)
    return Utterance(utterance_id, recording_id, order, transcript, audio, item.source)


def _transcript_of(meta: dict) -> Optional[str]:
    for key in _TRANSCRIPT_KEYS:
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


# ------------------------------------------------------------------------------------------------
# readers


def detect_format(path: str) -> str:
    name = path.rstrip("/").lower()
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "webdataset"
    if name.endswith(".parquet"):
        return "parquet"
    return "audio_dir"


def iter_raw_items(path: str, input_format: str = "auto") -> Iterator[RawItem]:
    """Raw items of one input shard (a tar, a parquet file, or a directory)."""
    fmt = detect_format(path) if input_format == "auto" else input_format
    if fmt == "webdataset":
        return iter_webdataset(path)
    if fmt == "parquet":
        return iter_parquet(path)
    if fmt == "audio_dir":
        return iter_audio_dir(path)
    raise ValueError(f"unknown input_format {input_format!r}: use auto, webdataset, parquet or audio_dir")


def _ext_of(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in os.path.basename(name) else ""


def _parse_json(data: bytes) -> tuple[dict, Optional[str]]:
    try:
        meta = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, f"json does not parse: {exc}"
    if not isinstance(meta, dict):
        return {}, f"json holds a {type(meta).__name__}, expected an object"
    return meta, None


def iter_webdataset(path: str) -> Iterator[RawItem]:
    """Pairs `{key}.{audio}` with `{key}.json` in a (possibly gzipped) tar, in tar order.

    The webdataset key is the member path up to the first dot of its base name. A tar that breaks
    mid-stream yields what was read and then one 'corrupt' item naming the tar.
    """
    import fsspec

    pending: dict[str, RawItem] = {}
    with fsspec.open(path, "rb") as raw:
        try:
            with tarfile.open(fileobj=raw, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    dirname, base = os.path.split(member.name)
                    if base.startswith("."):
                        continue
                    stem, _, ext = base.partition(".")
                    key = f"{dirname}/{stem}" if dirname else stem
                    ext = ext.lower()
                    data = tar.extractfile(member).read()
                    item = pending.setdefault(key, RawItem(key=stem, source=f"{path}::{key}"))
                    if ext == "json":
                        item.meta, item.meta_error = _parse_json(data)
                    elif ext in AUDIO_EXTENSIONS:
                        item.audio, item.audio_ext = data, ext
                    else:
                        continue
                    if item.audio is not None and (item.meta or item.meta_error):
                        yield pending.pop(key)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            yield from pending.values()
            yield RawItem(key=os.path.basename(path), source=path, read_error=f"tar stops early: {exc}")
            return
    yield from pending.values()


def iter_parquet(path: str, batch_rows: int = 256) -> Iterator[RawItem]:
    import fsspec
    import pyarrow as pa

    with fsspec.open(path, "rb") as f:
        try:
            pf = open_parquet(f, path)
        except ValueError as exc:  # truncated or not parquet: one 'corrupt' item, like a broken tar
            yield RawItem(key=os.path.basename(path), source=path, read_error=str(exc))
            return
        names = pf.schema_arrow.names
        id_col = next((c for c in _ID_KEYS if c in names), None)
        audio_col = next((c for c in ("audio", "wav", "flac", "mp3") if c in names), None)
        if audio_col is None:
            raise ValueError(f"{path}: no audio column (looked for audio, wav, flac, mp3) in {names}")
        row = 0
        batches = pf.iter_batches(batch_size=batch_rows)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:  # a damaged row group: what was read is kept
                yield RawItem(key=os.path.basename(path), source=f"{path}::row{row}",
                              read_error=f"parquet data breaks at row {row}: {exc}")
                return
            for record in batch.to_pylist():
                audio = record.get(audio_col)
                ext = None
                if isinstance(audio, dict):
                    ext = _ext_of(audio.get("path") or "") or None
                    audio = audio.get("bytes")
                key = str(record.get(id_col)) if id_col and record.get(id_col) is not None else f"row{row:08d}"
                meta = {k: v for k, v in record.items() if k != audio_col and not isinstance(v, (bytes, dict))}
                meta.setdefault("id", key)
                yield RawItem(key=key, source=f"{path}::row{row}", audio=audio, audio_ext=ext, meta=meta)
                row += 1


def iter_audio_dir(path: str) -> Iterator[RawItem]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(path)
    root = root.rstrip("/")
    files = sorted(fs.find(root))
    manifest = next((f for f in files if os.path.basename(f) == "manifest.jsonl"), None)
    if manifest is not None:
        yield from _iter_manifest(fs, root, manifest)
        return
    by_stem: dict[str, dict[str, str]] = {}
    for f in files:
        rel = f[len(root) + 1 :]
        stem, _, ext = rel.rpartition(".")
        by_stem.setdefault(stem, {})[ext.lower()] = f
    for stem in sorted(by_stem):
        entry = by_stem[stem]
        audio_ext = next((e for e in AUDIO_EXTENSIONS if e in entry), None)
        if audio_ext is None and "json" not in entry and "txt" not in entry:
            continue
        key = os.path.basename(stem)
        item = RawItem(key=key, source=f"{path}/{stem}")
        if audio_ext is not None:
            item.audio, item.audio_ext = fs.cat_file(entry[audio_ext]), audio_ext
        if "json" in entry:
            item.meta, item.meta_error = _parse_json(fs.cat_file(entry["json"]))
        elif "txt" in entry:
            item.meta = {"text": fs.cat_file(entry["txt"]).decode("utf-8", errors="replace")}
        yield item


def _iter_manifest(fs, root: str, manifest: str) -> Iterator[RawItem]:
    for line_no, line in enumerate(fs.cat_file(manifest).decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        meta, error = _parse_json(line.encode("utf-8"))
        source = f"{manifest}:{line_no}"
        if error:
            yield RawItem(key=f"line{line_no}", source=source, meta_error=error)
            continue
        rel = meta.get("audio")
        key = str(meta.get("id") or rel or f"line{line_no}")
        item = RawItem(key=key, source=source, meta=meta)
        if rel and fs.exists(f"{root}/{rel}"):
            item.audio, item.audio_ext = fs.cat_file(f"{root}/{rel}"), _ext_of(rel)
        yield item
