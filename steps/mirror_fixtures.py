"""`soda make-mirror DIR`: a tiny offline data mirror holding every dataset the production
experiments download, in each dataset's published layout and schema, at the revision its preset
asks for, plus `DIR/datasets.lock` naming those revisions. Then

    SODA_DATA_MIRROR=DIR SODA_DATASETS_LOCK=DIR/datasets.lock python experiments/<script>.py ...

finds every download's files in DIR (steps.mirror's layout). It exercises the data plumbing
(download -> pre-encoded documents, text documents, eval loaders, S2ST preparation) without a
network; it measures nothing. About 3 MB, written in seconds, local or through fsspec (`gs://...`).

Revisions: a dataset with a known commit in the code (steps/download_presets.py) is laid out at
that commit; a placeholder one at a fake commit, the sha1 of the fixture's own files (stable for
the same code and library versions). The lock holds exactly these revisions.

Every fixture is built from the shipped corpus (steps/local_corpus: 33 utterances of 8 synthetic
voices) and fixtures (eval.fixtures' writers, the CVSS fixture of steps/s2st). Per dataset, the
layout's source and what is approximated are recorded in FIXTURES below.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import logging
import os
import re
import tarfile
import tempfile
import uuid
import zlib
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from eval.fixtures import corpus_utterances, write_fixture
from steps.audio_io import recording_of
from steps.dataset_lock import write_lock
from steps.download_presets import hub_datasets
from steps.mirror import mirrored_url
from steps.raw_yodas2 import SAMPLES_PER_CENTISECOND, utterance_id
from tokenizer.audio import codes_to_chars
from tokenizer.documents import AUDIO_FIRST, TEXT_FIRST, Utterance, render

logger = logging.getLogger(__name__)

FRAME_RATE = 12.5  # Mimi frames per second
CODEBOOK_SIZE = 2048
NEMOTRON_ROOT = "https://data.commoncrawl.org"
NEMOTRON_LISTING = "contrib/Nemotron/Nemotron-CC/data-jsonl.paths.gz"
NEMOTRON_DATA = "contrib/Nemotron/Nemotron-CC/data-jsonl"
CVSS_ROOT = "gs://cvss"
CVSS_LANGUAGES = ("fr", "es", "de")


@dataclass
class BuildContext:
    """What several fixtures share, made once per mirror."""

    utterances: list  # eval.fixtures.corpus_utterances()
    cvss_pairs: str  # a local directory holding the CVSS + Common Voice fixture (steps.s2st.fixture)


@dataclass(frozen=True)
class MirrorFixture:
    """One dataset of the mirror.

    source: a hub dataset repo ("owner/name") when `hub`, else the source root URL.
    write: writes the dataset's files, source-relative, under a local directory.
    layout: where the file layout and schema come from.
    approximated: what the fixture does not reproduce.
    in_lock: whether `DIR/datasets.lock` names it. The lock holds exactly the datasets the
      production experiments download; a raw-path dataset no experiment reads yet is laid out at
      its preset's code pin (a real commit), which a preset finds without a lock entry.
    """

    source: str
    hub: bool
    write: Callable[[str, BuildContext], None]
    layout: str
    approximated: str
    in_lock: bool = True


# ---- shared pieces ---------------------------------------------------------------------------


def _write_bytes(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _write_parquet(path: str, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _tar(members: Sequence[tuple[str, bytes]]) -> bytes:
    """An uncompressed tar of (name, bytes), byte-identical on every run (mtime 0, sorted input order)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _files_of(directory: str) -> list[tuple[str, str]]:
    """(relative posix path, absolute path) of the files under `directory`, sorted."""
    out = []
    for dirpath, _, names in os.walk(directory):
        for name in names:
            full = os.path.join(dirpath, name)
            out.append((os.path.relpath(full, directory).replace(os.sep, "/"), full))
    return sorted(out)


def fixture_revision(directory: str) -> str:
    """A fake commit for a placeholder dataset: sha1 over the fixture's paths and bytes."""
    digest = hashlib.sha1()
    for rel, full in _files_of(directory):
        digest.update(rel.encode() + b"\0")
        with open(full, "rb") as f:
            digest.update(f.read())
        digest.update(b"\0")
    return digest.hexdigest()


def mimi_like_codes(utterance_id: str, seconds: float) -> np.ndarray:
    """Codes shaped like Mimi's first 8 codebooks for `seconds` of audio (12.5 frames/s), drawn
    from a generator seeded by the utterance id: deterministic, not a real encoding."""
    frames = max(1, int(np.ceil(seconds * FRAME_RATE)))
    rng = np.random.default_rng(zlib.crc32(utterance_id.encode()))
    return rng.integers(0, CODEBOOK_SIZE, size=(8, frames))


def _recordings(utterances: list[dict]) -> dict[str, list[Utterance]]:
    """recording id -> its utterances with Mimi-like audio characters, in time order."""
    recs: dict[str, list[Utterance]] = {}
    for u in utterances:
        rec, order = recording_of(u["id"])
        seconds = len(u["audio"]) / 24_000
        recs.setdefault(rec, []).append(Utterance(u["id"], rec, order, u["text"], seconds,
                                                  codes_to_chars(mimi_like_codes(u["id"], seconds))))
    return {rec: sorted(us, key=lambda x: x.order) for rec, us in sorted(recs.items())}


def _mm_pretrain_rows(recordings: dict[str, list[Utterance]], split: str) -> list[dict]:
    """The released documents' rows: `{rec}_type1` text-first and `{rec}_type2` audio-first, each
    `<|begin_of_text|>` ... `<|end_of_text|>`."""
    rows = []
    for rec, utts in recordings.items():
        for suffix, fmt in (("_type1", TEXT_FIRST), ("_type2", AUDIO_FIRST)):
            rows.append({"id": f"{rec}{suffix}", "split": split, "text": render(utts, fmt, end_with_eos=True)})
    return rows


# ---- one writer per dataset ------------------------------------------------------------------


def write_yodas2_mm_pretrain(out: str, ctx: BuildContext) -> None:
    recs = list(_recordings(ctx.utterances).items())
    for shard, chosen in (("en000", recs[:2]), ("en100", recs[2:3]), ("es000", recs[3:4])):
        _write_parquet(os.path.join(out, shard, "00000000.parquet"),
                       _mm_pretrain_rows(dict(chosen), f"{shard}/00000000"))


def write_emilia_mm_pretrain(out: str, ctx: BuildContext) -> None:
    recs = list(_recordings(ctx.utterances).items())
    for subset, chosen in (("Emilia", recs[4:6]), ("Emilia-YODAS", recs[6:8])):
        _write_parquet(os.path.join(out, subset, "EN", "EN-B000000.parquet"),
                       _mm_pretrain_rows(dict(chosen), f"{subset}/EN/EN-B000000"))


def _nemotron_records(texts: list[str], seed: str) -> bytes:
    import zstandard

    lines = [json.dumps({"warc_record_id": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, seed + text)}>",
                         "text": text}) for text in texts]
    return zstandard.ZstdCompressor(level=3).compress(("\n".join(lines) + "\n").encode("utf-8"))


def write_nemotron_cc(out: str, ctx: BuildContext) -> None:
    """Two HQ-actual files and two files of other buckets (listed, not chosen by the preset)."""
    paragraphs = {}
    for u in ctx.utterances:
        paragraphs.setdefault(recording_of(u["id"])[0], []).append(u["text"])
    docs = [" ".join(p) for _, p in sorted(paragraphs.items())]
    files = {
        "quality=high/kind=actual/kind2=actual/CC-MAIN-2013-20-part-00000.jsonl.zstd": docs[:3],
        "quality=high/kind=actual/kind2=actual/CC-MAIN-2024-30-part-00001.jsonl.zstd": docs[3:6],
        "quality=high/kind=synthetic/kind2=diverse_qa_pairs/CC-MAIN-2013-20-part-00000.jsonl.zstd": docs[6:7],
        "quality=medium/kind=actual/kind2=actual/CC-MAIN-2013-20-part-00000.jsonl.zstd": docs[7:],
    }
    listing = []
    for rel, texts in files.items():
        path = f"{NEMOTRON_DATA}/{rel}"
        _write_bytes(os.path.join(out, *path.split("/")), _nemotron_records(texts, rel))
        listing.append(path)
    _write_bytes(os.path.join(out, *NEMOTRON_LISTING.split("/")),
                 gzip.compress(("\n".join(listing) + "\n").encode(), mtime=0))


def write_mls_eng(out: str, ctx: BuildContext) -> None:
    """MLS-like rows in two shards (steps/raw_mls.py): ids `{speaker}_{book}_{segment}`, each corpus
    recording standing for one speaker's book; lowercased, unpunctuated transcripts, as MLS's are.
    Shard 0 holds the 11 MP3 utterances, shard 1 three FLAC ones (MLS's own codec)."""
    recordings = sorted({recording_of(u["id"])[0] for u in ctx.utterances})
    shards = ([u for u in ctx.utterances if u["ext"] == "mp3"], [u for u in ctx.utterances if u["ext"] == "flac"][:3])
    for n, chosen in enumerate(shards):
        rows, begin = [], {}
        for u in chosen:
            rec, order = recording_of(u["id"])
            speaker, book = 100 + recordings.index(rec), 2000 + recordings.index(rec)
            mls_id = f"{speaker}_{book}_{order:06d}"
            seconds = len(u["audio"]) / 24_000
            start = begin.get(rec, 0.0)
            begin[rec] = start + seconds
            rows.append({"audio": {"bytes": u["bytes"], "path": f"{mls_id}.{u['ext']}"},
                         "original_path": f"mls_english/train/audio/{speaker}/{book}/{mls_id}.flac",
                         "begin_time": start, "end_time": start + seconds,
                         "transcript": re.sub(r"[^a-z' ]+", "", u["text"].lower()),
                         "audio_duration": seconds, "speaker_id": str(speaker), "book_id": str(book)})
        _write_parquet(os.path.join(out, "data", f"train-{n:05d}-of-{len(shards):05d}.parquet"), rows)


def write_common_voice(out: str, ctx: BuildContext) -> None:
    """The hub's Common Voice layout: transcript/{lang}/*.tsv and audio/{lang}/{split}/{lang}_{split}_{n}.tar."""
    for lang in CVSS_LANGUAGES:
        cv = os.path.join(ctx.cvss_pairs, "common_voice", lang)
        with open(os.path.join(cv, "validated.tsv"), "rb") as f:
            _write_bytes(os.path.join(out, "transcript", lang, "validated.tsv"), f.read())
        clips = [(f"{lang}_validated_0/{name}", open(os.path.join(cv, "clips", name), "rb").read())
                 for name in sorted(os.listdir(os.path.join(cv, "clips")))]
        _write_bytes(os.path.join(out, "audio", lang, "validated", f"{lang}_validated_0.tar"), _tar(clips))


def write_cvss(out: str, ctx: BuildContext) -> None:
    """gs://cvss: cvss_t_v1.0/cvss_t_{lang}_en_v1.0.tar.gz holding {split}.tsv and {split}/*.wav."""
    for lang in CVSS_LANGUAGES:
        src = os.path.join(ctx.cvss_pairs, "cvss", f"{lang}-en")
        members = [(rel, open(full, "rb").read()) for rel, full in _files_of(src)]
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
            gz.write(_tar(members))
        _write_bytes(os.path.join(out, "cvss_t_v1.0", f"cvss_t_{lang}_en_v1.0.tar.gz"), buf.getvalue())


@dataclass
class Yodas2Recording:
    """One YODAS2 video for `write_yodas2_shard`: its 24 kHz audio and its utterances as published."""

    audio_id: str
    audio: np.ndarray  # float32 mono 24 kHz, written as 16-bit wav
    utterances: dict  # utt_id -> transcript, in the text file's order
    duration: Optional[float] = None  # the duration line; default len(audio) / 24 kHz to 0.01 s


def write_yodas2_shard(out: str, lang_shard: str, index: int, recordings: Sequence[Yodas2Recording]) -> str:
    """One YODAS2 shard in the published layout (steps.raw_yodas2) under `out`; returns the archive path."""
    import soundfile as sf

    members, text, durations = [], [], []
    for rec in recordings:
        buf = io.BytesIO()
        sf.write(buf, np.asarray(rec.audio, dtype=np.float32), 24_000, format="WAV", subtype="PCM_16")
        members.append((f"{rec.audio_id}.wav", buf.getvalue()))
        text.append({"audio_id": rec.audio_id, "text": dict(rec.utterances)})
        seconds = rec.duration if rec.duration is not None else len(rec.audio) / 24_000
        durations.append(f"{rec.audio_id} {seconds:.2f}\n")
    base = os.path.join(out, "data", lang_shard)
    archive = os.path.join(base, "audio", f"{index:08d}.tar.gz")
    _write_bytes(archive, gzip.compress(_tar(members), compresslevel=6, mtime=0))
    _write_bytes(os.path.join(base, "text", f"{index:08d}.json"), json.dumps(text, ensure_ascii=False).encode())
    _write_bytes(os.path.join(base, "duration", f"{index:08d}.txt"), "".join(durations).encode())
    return archive


def yodas2_video_id(name: str) -> str:
    """An 11-character YouTube-like id (A-Z a-z 0-9 - _) derived from `name`."""
    import base64

    return base64.urlsafe_b64encode(hashlib.sha1(name.encode()).digest()).decode()[:11]


def yodas2_recording(audio_id: str, clips: Sequence[tuple[str, np.ndarray]], gap_seconds: float = 0.5,
                     tail_seconds: float = 0.5, gap_fill: Optional[Callable[[int], np.ndarray]] = None) -> Yodas2Recording:
    """A long-form recording of `clips` (transcript, 24 kHz audio) laid end to end, each padded with
    zeros to whole centiseconds and separated by `gap_seconds` (silence, or `gap_fill(n)`), with
    utterance ids carrying the exact cut points."""
    step = SAMPLES_PER_CENTISECOND
    fill = gap_fill or (lambda n: np.zeros(n, dtype=np.float32))
    gap = int(round(gap_seconds * 100)) * step
    parts, utterances, position = [fill(gap)], {}, gap
    for k, (text, audio) in enumerate(clips):
        padded = np.zeros(-(-len(audio) // step) * step, dtype=np.float32)
        padded[:len(audio)] = audio
        utterances[utterance_id(audio_id, k, position // step, (position + len(padded)) // step)] = text
        parts.extend([padded, fill(gap)])
        position += len(padded) + gap
    parts.append(np.zeros(int(round(tail_seconds * 100)) * step, dtype=np.float32))
    return Yodas2Recording(audio_id, np.concatenate(parts), utterances)


def write_yodas2_raw(out: str, ctx: BuildContext) -> None:
    """en000: two archives of the corpus recordings as long-form videos; the last video is over
    120 s (mostly silence between its utterances), which the old 'too long' rule skipped whole."""
    by_rec: dict[str, list[dict]] = {}
    for u in ctx.utterances:
        by_rec.setdefault(recording_of(u["id"])[0], []).append(u)
    recs = [(rec, sorted(us, key=lambda u: recording_of(u["id"])[1])) for rec, us in sorted(by_rec.items())]

    def video(rec, utts, gap=0.5):
        return yodas2_recording(yodas2_video_id(rec), [(u["text"], u["audio"]) for u in utts], gap_seconds=gap)

    write_yodas2_shard(out, "en000", 0, [video(*recs[0]), video(*recs[1])])
    write_yodas2_shard(out, "en000", 1, [video(*recs[2]), video(*recs[3], gap=30.0)])


def _eval_fixture(kind: str) -> Callable[[str, BuildContext], None]:
    return lambda out, ctx: write_fixture(kind, out)


FIXTURES: tuple[MirrorFixture, ...] = (
    MirrorFixture("potsawee/yodas2-mm-pretrain", True, write_yodas2_mm_pretrain,
                  "steps/pre_encoded.py (read from SODA's Marin scripts): `{lang}{nnn}/{nnnnnnnn}.parquet`, "
                  "columns id ({recording}_type1|_type2), split, text",
                  "8-codebook codes are random (seeded per utterance), not Mimi's; English transcripts in es000; "
                  "4 recordings"),
    MirrorFixture("potsawee/emilia-mm-pretrain", True, write_emilia_mm_pretrain,
                  "steps/pre_encoded.py: Emilia/EN/*.parquet and Emilia-YODAS/EN/*.parquet, columns id, split, text",
                  "file names (EN-B000000.parquet) and the split values are guesses; the first release's stray "
                  "spaces around transcripts are not reproduced; random codes"),
    MirrorFixture(NEMOTRON_ROOT, False, write_nemotron_cc,
                  "Common Crawl's contrib/Nemotron/Nemotron-CC/index.html (listing data-jsonl.paths.gz, "
                  ".jsonl.zstd) and public downloaders reading it (paths like data-jsonl/quality=high/"
                  "kind=actual/kind2=actual/CC-MAIN-2013-20-part-00016.jsonl.zstd; fields text, warc_record_id)",
                  "4 of 31,279 files; records carry only warc_record_id and text (the release's other metadata "
                  "fields are not reproduced); texts are the corpus transcripts"),
    MirrorFixture("espnet/yodas2", True, write_yodas2_raw,
                  "the espnet/yodas2 hub tree and loading script yodas2.py (steps/raw_yodas2.py): "
                  "data/{lang}{nnn}/audio/{nnnnnnnn}.tar.gz of {audio_id}.wav, text/{nnnnnnnn}.json "
                  "[{audio_id, text: {audio_id-NNNNN-START-END: transcript}}] (centiseconds), "
                  "duration/{nnnnnnnn}.txt '{audio_id} {seconds}'",
                  "en000 only, 2 archives, 4 videos of the corpus' synthetic voices with silence between "
                  "utterances; 24 kHz 16-bit wav members (the release's member codec is not checked here); "
                  "video ids are hashes", in_lock=False),
    MirrorFixture("openslr/librispeech_asr", True, _eval_fixture("librispeech"),
                  "the hub's parquet conversion (refs/convert/parquet) as documented in eval/datasets.py: "
                  "clean/validation/*.parquet, clean/test/*.parquet; columns file, audio, text, speaker_id, "
                  "chapter_id, id", "4 synthetic utterances per split; 0000.parquet names the single file"),
    MirrorFixture("slprl/SALMon", True, _eval_fixture("salmon"),
                  "the hub repo as documented in eval/datasets.py: {part}/train-*.parquet with task, ind, "
                  "positive_audio, negative_audio",
                  "2 of 8 parts, 2 spliced pairs each"),
    MirrorFixture("speed/sBLIMP", True, _eval_fixture("sblimp"),
                  "eval/datasets.py's schema: **/*.parquet with id, positive, negative (Audio), "
                  "positive_transcription, negative_transcription",
                  "the data/ file name is a guess (the loader globs **); 2 pairs"),
    MirrorFixture("speed/sWUGGY", True, _eval_fixture("swuggy"),
                  "as sBLIMP", "the data/ file name is a guess; 2 pairs"),
    MirrorFixture("zhaochenyang20/seed-tts-eval", True, _eval_fixture("seed-tts-eval"),
                  "BytedanceSpeech/seed-tts-eval's release as its hub copy holds it (steps/download_presets.py): "
                  "en/meta.lst (utt|prompt_text|prompt_wav|target_text), en/prompt-wavs/*.wav",
                  "2 prompts of 1,088; 16 kHz wavs"),
    MirrorFixture("Rowan/hellaswag", True, _eval_fixture("hellaswag"),
                  "the hub's parquet conversion: default/validation/*.parquet with the columns lm-eval-harness "
                  "reads (ind, activity_label, ctx_a, ctx_b, ctx, endings, source_id, split, split_type, label)",
                  "3 hand-written items; the file name 0000.parquet follows the conversion's naming"),
    MirrorFixture("parler-tts/mls_eng", True, write_mls_eng,
                  "the parler-tts/mls_eng hub tree at the pinned commit (data/train-00016-of-01416.parquet) and "
                  "its dataset card (steps/raw_mls.py): data/{split}-NNNNN-of-NNNNN.parquet with audio (Audio "
                  "{bytes, path}), original_path, begin_time, end_time, transcript, audio_duration, speaker_id, "
                  "book_id; MLS ids {speaker}_{book}_{segment}",
                  "2 train shards of 1,416 (11 MP3 rows at the corpus' rates, 3 FLAC rows); audio.path is the MLS id "
                  "with the real extension and original_path MLS's own release path (mls_english/train/audio/"
                  "{speaker}/{book}/{id}.flac), both guesses at the release's values; speaker and book numbers are "
                  "made up; begin/end times count from 0 per recording; lowercased corpus sentences"),
    MirrorFixture("mozilla-foundation/common_voice_4_0", True, write_common_voice,
                  "steps/s2st/prepare.py (the hub's Common Voice layout): transcript/{lang}/*.tsv, "
                  "audio/{lang}/{split}/{lang}_{split}_{n}.tar of mp3 clips",
                  "one validated.tsv per language (the release also has train/dev/test/other tsvs)"),
    MirrorFixture(CVSS_ROOT, False, write_cvss,
                  "CVSS's bucket as google/cvss's loading script reads it: cvss_t_v1.0/cvss_t_{src}_en_v1.0.tar.gz "
                  "with {split}.tsv (no header) and {split}/{clip}.wav (24 kHz)",
                  "fr/es/de only, 4 pairs per split overall; archive members have no leading directory"),
)


# ---- the mirror ------------------------------------------------------------------------------


def _code_pins() -> dict[str, str]:
    return {d.repo: d.pin for d in hub_datasets() if d.pinned}


def _copy_tree(local_dir: str, dest: str) -> int:
    """Copy a local directory's files under `dest` (a local path or fsspec URL); returns bytes copied."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(dest)
    total = 0
    for rel, full in _files_of(local_dir):
        target = f"{root.rstrip('/')}/{rel}"
        parent = target.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        with open(full, "rb") as f:
            data = f.read()
        with fs.open(target, "wb") as f:
            f.write(data)
        total += len(data)
    return total


def build_fixtures(workdir: str) -> dict[str, str]:
    """Write every fixture under `workdir/{n}`; returns source -> local directory."""
    cvss_pairs = os.path.join(workdir, "_cvss_pairs")
    write_fixture("cvss", cvss_pairs)
    ctx = BuildContext(utterances=corpus_utterances(), cvss_pairs=cvss_pairs)
    built = {}
    for n, fixture in enumerate(FIXTURES):
        out = os.path.join(workdir, f"{n:02d}")
        fixture.write(out, ctx)
        built[fixture.source] = out
    return built


def make_mirror(root: str) -> str:
    """Write the offline mirror under `root` (a local directory or fsspec URL) and its lock;
    returns the lock's path (`{root}/datasets.lock`)."""
    pins = _code_pins()
    lock: dict[str, dict] = {}
    total = 0
    with tempfile.TemporaryDirectory(prefix="soda-mirror-") as workdir:
        built = build_fixtures(workdir)
        for fixture in FIXTURES:
            local = built[fixture.source]
            if fixture.hub:
                pinned = fixture.source in pins
                if not (pinned or fixture.in_lock):
                    raise ValueError(f"mirror fixture {fixture.source}: a fixture left out of the lock needs a "
                                     "pinned commit in steps/download_presets.py")
                revision = pins[fixture.source] if pinned else fixture_revision(local)
                dest = mirrored_url(f"hf://datasets/{fixture.source}@{revision}", root)
                if fixture.in_lock:
                    lock[fixture.source] = {"repo": fixture.source, "revision": revision,
                                            "resolved_from": revision if pinned else "fixture", "resolved_at": None}
            else:
                dest = mirrored_url(fixture.source, root)
            total += _copy_tree(local, dest)
    lock_file = f"{root.rstrip('/')}/datasets.lock"
    write_lock(lock_file, lock)
    logger.info("make-mirror: %d datasets (%.1f MB) under %s; lock %s", len(FIXTURES), total / 1e6, root, lock_file)
    return lock_file


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    """`soda make-mirror DIR`."""
    parser = argparse.ArgumentParser(prog="soda make-mirror",
                                     description="Write a tiny offline data mirror (every dataset the production "
                                                 "experiments download, in its published layout) and its lock.")
    parser.add_argument("root", help="the mirror root: a local directory or fsspec URL (gs://bucket/mirror)")
    args = parser.parse_args(argv)
    lock = make_mirror(args.root)
    print(f"wrote {len(FIXTURES)} datasets under {args.root}\n"
          f"use it with: SODA_DATA_MIRROR={args.root} SODA_DATASETS_LOCK={lock}")
    return 0
