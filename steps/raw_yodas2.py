"""Read YODAS2 as published: long-form recordings cut into their subtitle utterances.

The layout of `espnet/yodas2` on the Hugging Face hub (its dataset card, its loading script
`yodas2.py`, and the files of the hub tree at the pinned revision, e.g. data/co000/text/00000000.json
and data/co000/duration/00000000.txt):

    data/{lang}{nnn}/audio/{nnnnnnnn}.tar.gz   one member `{audio_id}.wav` per YouTube video, whole
    data/{lang}{nnn}/text/{nnnnnnnn}.json      [{"audio_id": ..., "text": {utt_id: transcript, ...}}, ...]
    data/{lang}{nnn}/duration/{nnnnnnnn}.txt   one line `{audio_id} {seconds}` per video

The three files of a shard share its number. An utterance id is
`{audio_id}-{index:05d}-{start:08d}-{end:08d}`, start and end in centiseconds from the start of the
video (e.g. `2qU-GST3DuI-00000-00000000-00000200`: 0.00 to 2.00 s). The loading script reads the
same fields (video id, duration, 24 kHz audio, utterances with utt_id, text, start, end). Not checked
here: the codec of every archive member (any extension steps.audio_io decodes is accepted; the
fixture's are 24 kHz 16-bit wav).

Segmentation (`iter_yodas2_archive`): each recording becomes its utterances in time order (order =
start in centiseconds), cut at exactly sample `start * 240` to `end * 240` of the 24 kHz stream; the
audio between utterances is decoded but never kept. The recording is read and resampled in windows
(steps.audio_io.iter_audio_chunks, from a spooled temp copy of the member: bounded memory whatever
its length; MP3 members are the exception, decoded whole as audio_io explains). Bad segments are
Skipped items, counted like any bad input:
- 'malformed_metadata': an utterance id without the four fields, or a text file entry that is not
  {audio_id, text: {...}};
- 'segment_out_of_range': end <= start, or end past the recording (its duration line, or the audio
  itself when that is shorter);
- 'overlapping_segment': starts before the previous kept utterance of the recording ends (the
  earlier one is kept);
- 'too_long': longer than `max_seconds` (EncodeConfig.max_utterance_seconds);
- 'missing_transcript': an empty transcript, or a recording with no utterances in the text file;
- 'missing_audio': utterances of a video absent from the archive;
- a recording that fails to decode ('truncated', 'corrupt', ...) skips the utterances not yet
  complete when it failed, with that reason; those before it are kept;
- an archive that breaks mid-stream ('corrupt'): the utterances of the recordings not yet read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from steps.audio_io import AUDIO_EXTENSIONS, TARGET_SAMPLE_RATE, BadAudioError, Skipped, Utterance, iter_audio_chunks

SAMPLES_PER_CENTISECOND = TARGET_SAMPLE_RATE // 100  # 240: every published cut point is a whole sample
SPOOL_BYTES = 2 << 20  # an archive member is copied to a temp file; at most this much of it stays in memory
_ARCHIVE = re.compile(r"(?:^|/)audio/(?P<shard>\d{8})\.tar\.gz$")
_UTT_ID = re.compile(r"^(?P<audio>.+)-(?P<index>\d{5})-(?P<start>\d{8})-(?P<end>\d{8})$")


@dataclass(frozen=True)
class Segment:
    utt_id: str
    audio_id: str
    start_cs: int
    end_cs: int
    text: str

    @property
    def start_sample(self) -> int:
        return self.start_cs * SAMPLES_PER_CENTISECOND

    @property
    def end_sample(self) -> int:
        return self.end_cs * SAMPLES_PER_CENTISECOND


def is_yodas2_archive(path: str) -> bool:
    """True for a path shaped like YODAS2's `.../audio/{nnnnnnnn}.tar.gz`."""
    return bool(_ARCHIVE.search(path.rstrip("/")))


def sidecar_paths(archive: str) -> tuple[str, str]:
    """(text json, duration txt) of an audio archive: `../text/{n}.json`, `../duration/{n}.txt`."""
    match = _ARCHIVE.search(archive)
    if not match:
        raise ValueError(f"{archive!r} is not a YODAS2 audio archive (.../audio/NNNNNNNN.tar.gz)")
    base = archive[: match.start()].rstrip("/")
    prefix = f"{base}/" if base else ""
    return f"{prefix}text/{match['shard']}.json", f"{prefix}duration/{match['shard']}.txt"


def utterance_id(audio_id: str, index: int, start_cs: int, end_cs: int) -> str:
    return f"{audio_id}-{index:05d}-{start_cs:08d}-{end_cs:08d}"


def parse_transcripts(data: bytes, source: str) -> tuple[dict[str, list[Segment]], list[Skipped]]:
    """A text file's segments by audio id, and the entries that could not be read."""
    try:
        entries = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{source}: the YODAS2 text file does not parse as json ({exc})") from exc
    if not isinstance(entries, list):
        raise ValueError(f"{source}: expected a json list of {{audio_id, text}} objects, got {type(entries).__name__}")
    by_audio: dict[str, list[Segment]] = {}
    bad: list[Skipped] = []
    for n, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("audio_id"), str) and isinstance(entry.get("text"), dict)):
            bad.append(Skipped(f"entry{n}", f"{source}[{n}]", "malformed_metadata",
                               "expected {\"audio_id\": str, \"text\": {utt_id: transcript}}"))
            continue
        audio_id = entry["audio_id"]
        segments = by_audio.setdefault(audio_id, [])
        for utt_id, text in entry["text"].items():
            match = _UTT_ID.match(utt_id)
            if not match or match["audio"] != audio_id or not isinstance(text, str):
                bad.append(Skipped(utt_id, f"{source}::{audio_id}", "malformed_metadata",
                                   f"utterance id is not {audio_id}-NNNNN-START-END (centiseconds) with a string "
                                   "transcript"))
                continue
            segments.append(Segment(utt_id, audio_id, int(match["start"]), int(match["end"]), text.strip()))
    return by_audio, bad


def parse_durations(data: bytes, source: str) -> dict[str, float]:
    """`{audio_id} {seconds}` lines; a line that does not parse is an error naming it."""
    out = {}
    for line_no, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            out[parts[0]] = float(parts[1])
        except (IndexError, ValueError) as exc:
            raise ValueError(f"{source}:{line_no}: expected '{{audio_id}} {{seconds}}', got {line!r}") from exc
    return out


def plan_segments(segments: list[Segment], duration: Optional[float], source: str, require_transcript: bool = True,
                  max_seconds: Optional[float] = None) -> tuple[list[Segment], list[Skipped]]:
    """The segments to cut, in time order and non-overlapping, and the skipped ones with reasons."""
    kept: list[Segment] = []
    skipped: list[Skipped] = []
    last_end = None
    limit_cs = None if duration is None else int(round(duration * 100))
    for seg in sorted(segments, key=lambda s: (s.start_cs, s.end_cs, s.utt_id)):
        if seg.end_cs <= seg.start_cs:
            skipped.append(Skipped(seg.utt_id, source, "segment_out_of_range",
                                   f"ends at {seg.end_cs / 100:.2f} s, not after its start {seg.start_cs / 100:.2f} s"))
        elif limit_cs is not None and seg.end_cs > limit_cs:
            skipped.append(Skipped(seg.utt_id, source, "segment_out_of_range",
                                   f"ends at {seg.end_cs / 100:.2f} s, past the recording's {duration:.2f} s"))
        elif last_end is not None and seg.start_cs < last_end:
            skipped.append(Skipped(seg.utt_id, source, "overlapping_segment",
                                   f"starts at {seg.start_cs / 100:.2f} s, before the previous utterance ends "
                                   f"({last_end / 100:.2f} s)"))
        elif max_seconds is not None and (seg.end_cs - seg.start_cs) / 100 > max_seconds:
            skipped.append(Skipped(seg.utt_id, source, "too_long",
                                   f"{(seg.end_cs - seg.start_cs) / 100:.1f} s > {max_seconds:g} s "
                                   "(max_utterance_seconds)"))
        elif require_transcript and not seg.text:
            skipped.append(Skipped(seg.utt_id, source, "missing_transcript", "empty transcript"))
        else:
            kept.append(seg)
            last_end = seg.end_cs
    return kept, skipped


def cut_segments(chunks, segments: list[Segment], source: str) -> Iterator[Utterance | Skipped]:
    """Cut time-ordered, non-overlapping `segments` out of a 24 kHz stream of chunks; only the
    current segment's samples are held. Segments the stream does not reach are 'segment_out_of_range';
    a decoding error skips the segments not yet complete with its reason."""
    pending = list(segments)
    pieces: list[np.ndarray] = []
    position = 0  # samples of the stream before the current chunk
    try:
        for chunk in chunks:
            end_of_chunk = position + len(chunk)
            while pending and pending[0].start_sample < end_of_chunk:
                seg = pending[0]
                lo = max(seg.start_sample, position) - position
                hi = min(seg.end_sample, end_of_chunk) - position
                pieces.append(chunk[lo:hi])
                if seg.end_sample > end_of_chunk:
                    break
                pending.pop(0)
                audio = np.concatenate(pieces) if len(pieces) > 1 else np.array(pieces[0], dtype=np.float32)
                pieces = []
                yield Utterance(seg.utt_id, seg.audio_id, seg.start_cs, seg.text, audio, source)
            position = end_of_chunk
    except BadAudioError as exc:
        for seg in pending:
            yield Skipped(seg.utt_id, source, exc.reason, exc.detail)
        return
    for seg in pending:
        yield Skipped(seg.utt_id, source, "segment_out_of_range",
                      f"ends at {seg.end_cs / 100:.2f} s, past the end of the audio ({position / TARGET_SAMPLE_RATE:.2f} s)")


def iter_yodas2_archive(path: str, require_transcript: bool = True,
                        max_seconds: Optional[float] = None) -> Iterator[Utterance | Skipped]:
    """Every utterance of one audio archive (with its text and duration files), recording by
    recording in archive order, each in time order; see the module docstring."""
    import fsspec

    text_path, duration_path = sidecar_paths(path)
    for sidecar in (text_path, duration_path):
        fs, p = fsspec.core.url_to_fs(sidecar)
        if not fs.exists(p):
            raise FileNotFoundError(f"YODAS2 archive {path} has no {sidecar} beside it; download the text/ and "
                                    "duration/ files with the audio (download preset yodas2-en)")
    with fsspec.open(text_path, "rb") as f:
        transcripts, bad = parse_transcripts(f.read(), text_path)
    with fsspec.open(duration_path, "rb") as f:
        durations = parse_durations(f.read(), duration_path)
    yield from bad
    seen: set[str] = set()  # recordings read through (or skipped) in full
    broken = None
    with fsspec.open(path, "rb") as raw:
        try:
            with tarfile.open(fileobj=raw, mode="r|*") as tar:
                for member in tar:
                    base = os.path.basename(member.name)
                    audio_id, _, ext = base.partition(".")
                    if not member.isfile() or base.startswith(".") or ext.lower() not in AUDIO_EXTENSIONS:
                        continue
                    source = f"{path}::{member.name}"
                    if not transcripts.get(audio_id):
                        yield Skipped(audio_id, source, "missing_transcript", "no utterances for this recording in "
                                      f"{os.path.basename(text_path)}")
                        seen.add(audio_id)
                        continue
                    kept, skipped = plan_segments(transcripts[audio_id], durations.get(audio_id), source,
                                                  require_transcript, max_seconds)
                    yield from skipped
                    if not kept:
                        seen.add(audio_id)
                        continue
                    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
                        shutil.copyfileobj(tar.extractfile(member), spool, 1 << 18)
                        spool.seek(0)
                        yield from cut_segments(iter_audio_chunks(spool, ext.lower()), kept, source)
                    seen.add(audio_id)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            broken = f"archive stops early: {exc}"
    for audio_id in sorted(set(transcripts) - seen):
        for seg in transcripts[audio_id]:
            if broken:
                yield Skipped(seg.utt_id, f"{path}::{audio_id}", "corrupt", broken)
            else:
                yield Skipped(seg.utt_id, f"{path}::{audio_id}", "missing_audio", "no recording in the archive")
