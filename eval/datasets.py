"""Loaders for the evaluation datasets, reading a raw/ download step's output (or a local fixture
of the same layout, eval.fixtures). Each loader yields plain dicts, one per example, decoding
audio to 24 kHz mono float32 as it goes (so memory stays bounded), and stops after `limit`.

Layouts and schemas (as published on the hub; the raw/ presets in steps/download_presets.py and
`EXTRA_PRESETS` below copy them):

| loader | HF dataset | files | columns |
|---|---|---|---|
| `audio_pairs` (sBLIMP, sWUGGY) | speed/sBLIMP, speed/sWUGGY | `**/*.parquet` | id, positive, negative (Audio), positive_transcription, negative_transcription |
| `salmon_pairs` | slprl/SALMon | `{part}/train-*.parquet` | task, ind, positive_audio, negative_audio (Audio) |
| `librispeech` | openslr/librispeech_asr (parquet branch) | `clean/validation/*.parquet` (dev-clean), `clean/test/*.parquet` (test-clean) | file, audio (Audio), text, speaker_id, chapter_id, id |
| `seed_tts_eval` | seed-tts-eval mirror | `en/meta.lst`, `en/prompt-wavs/*.wav` | meta.lst lines `utt|prompt_text|prompt_wav|target_text` |
| `hellaswag` | Rowan/hellaswag (parquet branch) | `**/*validation*.parquet` | ind, activity_label, ctx_a, ctx_b, ctx, endings, source_id, split, split_type, label |
| `storycloze_text` | LSDSem/story_cloze 2016 (csv, manual download) | `*.csv`/`*.parquet`/`*.jsonl` | story_id, input_sentence_1..4, sentence_quiz1, sentence_quiz2, answer_right_ending (or the ROCStories csv's InputStoryid, InputSentence1..4, RandomFifthSentenceQuiz1/2, AnswerRightEnding) |
| `storycloze_spoken` | slp-rl/SpokenStoryCloze zips (sSC, tSC; Google Drive) | `**/*_correct.wav` + `**/*_incorrect.wav` | pairs by the shared stem |

An HF `Audio` column in parquet is a struct {bytes, path}. Unreadable audio is skipped and
counted (`LoadStats`), never silently dropped.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from steps.dataset_lock import HubDataset, locked_revision
from pipeline import this_output_path, versioned
from pipeline.fileio import url_to_fs
from steps.audio_io import BadAudioError, check_samples, decode_audio_bytes, to_mono_24k
from steps.download import DownloadConfig

logger = logging.getLogger(__name__)

SALMON_PARTS = ("bg_alignment", "bg_all_consistency", "bg_domain_consistency", "gender_consistency",
                "rir_consistency", "sentiment_alignment", "sentiment_consistency", "speaker_consistency")
LIBRISPEECH_SPLITS = {"dev-clean": "clean/validation", "test-clean": "clean/test"}


@dataclass
class LoadStats:
    """What a loader read and what it had to skip (reason -> count, with the first few ids)."""

    examples: int = 0
    skipped: dict = field(default_factory=dict)
    skipped_ids: list = field(default_factory=list)

    def skip(self, reason: str, ident: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.skipped_ids) < 20:
            self.skipped_ids.append(f"{ident}: {reason}")


# ---- files and audio ------------------------------------------------------------------------


def find_files(root: str, pattern: str) -> list[str]:
    """Files under `root` (local or fsspec URL) matching a glob relative to it, sorted."""
    fs, p = url_to_fs(root)
    found = sorted(fs.glob(f"{p.rstrip('/')}/{pattern}"))
    if "://" in root:
        protocol = root.split("://", 1)[0]
        found = [f if "://" in f else f"{protocol}://{f}" for f in found]
    return [f for f in found if not os.path.basename(f).startswith((".", "_"))]


def _require(files: list[str], root: str, what: str) -> list[str]:
    if not files:
        raise FileNotFoundError(f"no {what} under {root!r}: is this the right raw/ download (or local fixture) "
                                "directory for the task?")
    return files


def _read_bytes(path: str) -> bytes:
    import fsspec

    with fsspec.open(path, "rb") as f:
        return f.read()


def decode_audio(value, where: str) -> np.ndarray:
    """An HF Audio struct {bytes, path}, raw bytes, or a file path -> 24 kHz mono float32.
    Raises steps.audio_io.BadAudioError (with a reason) on unusable audio."""
    ext = None
    if isinstance(value, dict):
        data, ext = value.get("bytes"), os.path.splitext(value.get("path") or "")[1].lstrip(".") or None
        if not data and value.get("path"):
            data = _read_bytes(value["path"])
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str):
        data, ext = _read_bytes(value), os.path.splitext(value)[1].lstrip(".")
    else:
        raise BadAudioError("missing_audio", f"{where}: no audio ({type(value).__name__})")
    samples, sr = decode_audio_bytes(data, ext)
    audio = to_mono_24k(samples, sr)
    check_samples(audio)
    return audio


def _parquet_rows(path: str, columns: Optional[list[str]] = None) -> Iterator[dict]:
    import pyarrow.parquet as pq

    fs, p = url_to_fs(path)
    with fs.open(p, "rb") as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        if columns:
            missing = [c for c in columns if c not in names]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing}; found {names}")
        for batch in pf.iter_batches(batch_size=64):
            yield from batch.to_pylist()


def _pick(row: dict, names: tuple[str, ...], where: str):
    for n in names:
        if n in row:
            return row[n]
    raise ValueError(f"{where}: none of the columns {names} (found {sorted(row)})")


def _audio_or_skip(value, where: str, stats: LoadStats) -> Optional[np.ndarray]:
    try:
        return decode_audio(value, where)
    except BadAudioError as exc:
        stats.skip(exc.reason, where)
        return None


# ---- likelihood pairs ----------------------------------------------------------------------


def audio_pairs(root: str, limit: Optional[int] = None, stats: Optional[LoadStats] = None) -> Iterator[dict]:
    """sBLIMP / sWUGGY rows -> {id, part, positive, negative (24 kHz arrays), positive_text, negative_text}."""
    stats = stats if stats is not None else LoadStats()
    for path in _require(find_files(root, "**/*.parquet"), root, "parquet files"):
        for i, row in enumerate(_parquet_rows(path)):
            if limit is not None and stats.examples >= limit:
                return
            ident = str(row.get("id", f"{os.path.basename(path)}:{i}"))
            pos = _audio_or_skip(_pick(row, ("positive", "positive_audio"), path), f"{ident} positive", stats)
            neg = _audio_or_skip(_pick(row, ("negative", "negative_audio"), path), f"{ident} negative", stats)
            if pos is None or neg is None:
                continue
            stats.examples += 1
            yield {"id": ident, "part": "all", "positive": pos, "negative": neg,
                   "positive_text": row.get("positive_transcription"),
                   "negative_text": row.get("negative_transcription")}


def salmon_pairs(root: str, limit: Optional[int] = None, stats: Optional[LoadStats] = None,
                 parts: Optional[tuple[str, ...]] = None) -> Iterator[dict]:
    """SALMon rows of every part (directory name) -> {id, part, positive, negative}. `limit` is per part."""
    stats = stats if stats is not None else LoadStats()
    files = _require(find_files(root, "*/*.parquet") + find_files(root, "*/*/*.parquet"), root, "SALMon parquet files")
    by_part: dict[str, list[str]] = {}
    for f in files:
        rel = f[len(root.rstrip("/")) + 1 :] if f.startswith(root.rstrip("/")) else f
        part = rel.split("/")[0]
        if parts is None or part in parts:
            by_part.setdefault(part, []).append(f)
    for part, paths in sorted(by_part.items()):
        n = 0
        for path in paths:
            for i, row in enumerate(_parquet_rows(path, ["positive_audio", "negative_audio"])):
                if limit is not None and n >= limit:
                    break
                ident = f"{part}/{row.get('ind', i)}"
                pos = _audio_or_skip(row["positive_audio"], f"{ident} positive", stats)
                neg = _audio_or_skip(row["negative_audio"], f"{ident} negative", stats)
                if pos is None or neg is None:
                    continue
                n += 1
                stats.examples += 1
                yield {"id": ident, "part": part, "positive": pos, "negative": neg}


def text_pairs_from_audio_pairs(root: str, limit: Optional[int] = None, lowercase: bool = False,
                                stats: Optional[LoadStats] = None) -> Iterator[dict]:
    """tBLIMP / tWUGGY: the transcripts of the sBLIMP / sWUGGY pairs (no audio decoded)."""
    stats = stats if stats is not None else LoadStats()
    for path in _require(find_files(root, "**/*.parquet"), root, "parquet files"):
        for i, row in enumerate(_parquet_rows(path, ["positive_transcription", "negative_transcription"])):
            if limit is not None and stats.examples >= limit:
                return
            pos, neg = row["positive_transcription"], row["negative_transcription"]
            ident = str(row.get("id", f"{os.path.basename(path)}:{i}"))
            if not pos or not neg:
                stats.skip("missing_transcript", ident)
                continue
            stats.examples += 1
            yield {"id": ident, "part": "all", "positive": pos.lower() if lowercase else pos,
                   "negative": neg.lower() if lowercase else neg}


_SC_COLUMNS = {
    "id": ("story_id", "InputStoryid"),
    "s": [(f"input_sentence_{k}", f"InputSentence{k}") for k in range(1, 5)],
    "q1": ("sentence_quiz1", "RandomFifthSentenceQuiz1"),
    "q2": ("sentence_quiz2", "RandomFifthSentenceQuiz2"),
    "label": ("answer_right_ending", "AnswerRightEnding"),
}


def _table_rows(path: str) -> Iterator[dict]:
    if path.endswith(".parquet"):
        yield from _parquet_rows(path)
    elif path.endswith(".csv"):
        yield from csv.DictReader(io.StringIO(_read_bytes(path).decode("utf-8-sig")))
    else:
        import json

        for line in _read_bytes(path).decode("utf-8").splitlines():
            if line.strip():
                yield json.loads(line)


def storycloze_text(root: str, limit: Optional[int] = None, stats: Optional[LoadStats] = None) -> Iterator[dict]:
    """Text StoryCloze -> {id, part, positive: story + right ending, negative: story + wrong ending}."""
    stats = stats if stats is not None else LoadStats()
    files = find_files(root, "**/*.csv") + find_files(root, "**/*.parquet") + find_files(root, "**/*.jsonl")
    for path in _require(files, root, "StoryCloze csv/parquet/jsonl files"):
        for row in _table_rows(path):
            if limit is not None and stats.examples >= limit:
                return
            story = " ".join(str(_pick(row, names, path)).strip() for names in _SC_COLUMNS["s"])
            endings = [str(_pick(row, _SC_COLUMNS[k], path)).strip() for k in ("q1", "q2")]
            right = int(_pick(row, _SC_COLUMNS["label"], path))
            if right not in (1, 2):
                raise ValueError(f"{path}: answer_right_ending {right} is not 1 or 2")
            stats.examples += 1
            yield {"id": str(_pick(row, _SC_COLUMNS["id"], path)), "part": "all",
                   "positive": f"{story} {endings[right - 1]}", "negative": f"{story} {endings[2 - right]}"}


_SC_AUDIO = re.compile(r"^(?P<stem>.+)_(?P<kind>correct|incorrect)$")


def storycloze_spoken(root: str, limit: Optional[int] = None, stats: Optional[LoadStats] = None) -> Iterator[dict]:
    """Spoken StoryCloze (sSC or tSC): `{stem}_correct.wav` / `{stem}_incorrect.wav` -> audio pairs."""
    stats = stats if stats is not None else LoadStats()
    pairs: dict[str, dict[str, str]] = {}
    for f in _require(find_files(root, "**/*.wav") + find_files(root, "**/*.flac"), root, "StoryCloze audio"):
        m = _SC_AUDIO.match(os.path.splitext(os.path.basename(f))[0])
        if m:
            pairs.setdefault(m["stem"], {})[m["kind"]] = f
    for stem in sorted(pairs):
        if limit is not None and stats.examples >= limit:
            return
        both = pairs[stem]
        if set(both) != {"correct", "incorrect"}:
            stats.skip("missing_audio", f"{stem} (only {sorted(both)})")
            continue
        pos = _audio_or_skip(both["correct"], f"{stem} correct", stats)
        neg = _audio_or_skip(both["incorrect"], f"{stem} incorrect", stats)
        if pos is None or neg is None:
            continue
        stats.examples += 1
        yield {"id": stem, "part": "all", "positive": pos, "negative": neg}


# ---- multiple choice -------------------------------------------------------------------------


def _hellaswag_clean(text: str) -> str:
    """lm-eval-harness's HellaSwag preprocessing."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag(root: str, limit: Optional[int] = None, stats: Optional[LoadStats] = None) -> Iterator[dict]:
    """HellaSwag validation -> {id, context, choices (each with a leading space), label}, built as
    lm-eval-harness does: context = activity_label + ': ' + ctx_a + ' ' + ctx_b.capitalize()."""
    stats = stats if stats is not None else LoadStats()
    files = [f for f in find_files(root, "**/*.parquet") if "validation" in f.rsplit("/", 2)[-2] + f.rsplit("/", 1)[-1]]
    for path in _require(files, root, "HellaSwag validation parquet files"):
        for row in _parquet_rows(path, ["activity_label", "ctx_a", "ctx_b", "endings", "label"]):
            if limit is not None and stats.examples >= limit:
                return
            if row["label"] in (None, ""):
                stats.skip("missing_label", str(row.get("ind")))
                continue
            ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
            stats.examples += 1
            yield {"id": str(row.get("ind", stats.examples - 1)),
                   "context": _hellaswag_clean(row["activity_label"] + ": " + ctx),
                   "choices": [" " + _hellaswag_clean(e) for e in row["endings"]],
                   "label": int(row["label"])}


# ---- speech with transcripts ------------------------------------------------------------------


def librispeech(root: str, split: str, limit: Optional[int] = None, stats: Optional[LoadStats] = None) -> Iterator[dict]:
    """LibriSpeech `dev-clean` / `test-clean` -> {id, audio (24 kHz), text, seconds}."""
    if split not in LIBRISPEECH_SPLITS:
        raise ValueError(f"LibriSpeech split {split!r}: choose one of {sorted(LIBRISPEECH_SPLITS)}")
    stats = stats if stats is not None else LoadStats()
    sub = LIBRISPEECH_SPLITS[split]
    for path in _require(find_files(root, f"{sub}/*.parquet"), root, f"{sub}/*.parquet ({split})"):
        for row in _parquet_rows(path, ["audio", "text", "id"]):
            if limit is not None and stats.examples >= limit:
                return
            if not (row["text"] or "").strip():
                stats.skip("missing_transcript", row["id"])
                continue
            audio = _audio_or_skip(row["audio"], row["id"], stats)
            if audio is None:
                continue
            stats.examples += 1
            yield {"id": row["id"], "audio": audio, "text": row["text"], "seconds": len(audio) / 24_000}


def seed_tts_eval(root: str, limit: Optional[int] = None, stats: Optional[LoadStats] = None,
                  lang: str = "en") -> Iterator[dict]:
    """seed-tts-eval `{lang}/meta.lst` -> {id, prompt_text, prompt_audio (24 kHz), target_text}."""
    stats = stats if stats is not None else LoadStats()
    meta = f"{root.rstrip('/')}/{lang}/meta.lst"
    try:
        lines = _read_bytes(meta).decode("utf-8").splitlines()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"no {lang}/meta.lst under {root!r} (a seed-tts-eval raw/ download)") from exc
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if limit is not None and stats.examples >= limit:
            return
        fields = line.rstrip("\n").split("|")
        if len(fields) < 4:
            raise ValueError(f"{meta}:{lineno}: expected utt|prompt_text|prompt_wav|target_text, got {len(fields)} fields")
        utt, prompt_text, prompt_wav, target_text = fields[:4]
        wav = prompt_wav if "://" in prompt_wav or prompt_wav.startswith("/") else f"{root.rstrip('/')}/{lang}/{prompt_wav}"
        audio = _audio_or_skip(wav, utt, stats)
        if audio is None:
            continue
        stats.examples += 1
        yield {"id": utt, "prompt_text": prompt_text, "prompt_audio": audio, "target_text": target_text}


# ---- raw/ download presets the project lacked --------------------------------------------------

# A commit on the hub's refs/convert/parquet branch of Rowan/hellaswag; none is known, so the
# revision comes from the dataset lock (`soda lock-datasets` resolves the branch's head).
HELLASWAG_DATASET = "Rowan/hellaswag"
HELLASWAG_REVISION = "UNPINNED-Rowan-hellaswag-parquet"
HELLASWAG = HubDataset(HELLASWAG_DATASET, HELLASWAG_REVISION, branch="refs/convert/parquet")
STORYCLOZE_NOTE = ("StoryCloze is not on the hub as files: the text set is a manual download "
                   "(cs.rochester.edu/nlp/rocstories), the spoken sets are Google Drive zips "
                   "(github.com/slp-rl/SpokenStoryCloze); unpack them into a directory and point "
                   "the eval step's dataset_path at it.")


def hellaswag_raw(revision: Optional[str] = None):
    """A DownloadConfig for Rowan/hellaswag's parquet conversion (validation split), at `revision`,
    else the dataset lock's commit, else the placeholder."""
    revision = revision if revision is not None else locked_revision(HELLASWAG_DATASET, HELLASWAG_REVISION)
    return DownloadConfig(hf_dataset_id=HELLASWAG_DATASET, revision=versioned(revision),
                          output_path=this_output_path(), include=("default/validation/*.parquet",))


EXTRA_PRESETS = {"hellaswag": hellaswag_raw}
