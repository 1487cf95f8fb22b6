"""CVSS-style speech-to-speech translation pairs: Common Voice source speech and transcript joined
with CVSS target text and target speech.

CVSS (HF `google/cvss`, a loading script over `https://storage.googleapis.com/cvss`, i.e. the
public bucket `gs://cvss`) ships one archive per language pair and variant,
`{variant}_v1.0/{variant}_{src}_en_v1.0.tar.gz` with `variant` `cvss_c` (one canonical voice) or
`cvss_t` (the source speaker's voice transferred: what voice-preserving S2ST needs). Each archive
holds `train.tsv`, `dev.tsv`, `test.tsv` (no header; `path<TAB>translation`, where `path` is the
Common Voice clip name such as `common_voice_fr_17732749.mp3`) and `{split}/{path}.wav` (24 kHz
mono). CVSS carries only the target side: the source speech and transcript come from Common Voice
(release 4, as CoVoST 2 and CVSS used): `clips/{path}` (mp3) and tsv files with a header
(`client_id path sentence up_votes down_votes age gender accent`).

`steps.s2st.prepare` unpacks the downloads into the layout this module reads (the two releases'
own layouts side by side); `steps.s2st.fixture` writes the same layout offline:

    {root}/cvss/{src}-{tgt}/{split}.tsv            path<TAB>translation (CVSS)
    {root}/cvss/{src}-{tgt}/{split}/{path}.wav     target speech (CVSS)
    {root}/common_voice/{src}/*.tsv                Common Voice tsvs (path -> sentence)
    {root}/common_voice/{src}/clips/{path}         source speech (Common Voice)

    for pair in iter_pairs(root, "test", limit=8): ...   # CvssPair, audio float32 mono 24 kHz

Rows that cannot be used (no target or source audio file, undecodable audio, empty transcript, no
Common Voice row for the clip, a malformed tsv line) are skipped, logged and counted by reason
(pass `skipped=Counter()` to get the counts); a missing root, language directory or split file
raises FileNotFoundError naming the path.
"""

from __future__ import annotations

import csv
import io
import logging
import posixpath
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
from pipeline.fileio import join, url_to_fs
from steps.audio_io import BadAudioError, load_audio_file

logger = logging.getLogger(__name__)

CVSS_DIR = "cvss"
COMMON_VOICE_DIR = "common_voice"
SPLITS = ("train", "dev", "test")
SPLIT_ALIASES = {"validation": "dev", "valid": "dev"}
SAMPLE_RATE = 24_000
SKIP_REASONS = (
    "malformed_row",  # a CVSS tsv line without exactly two tab-separated fields
    "empty_target_text",
    "missing_source_text",  # no Common Voice row for the clip, or an empty sentence
    "missing_target_audio",
    "missing_source_audio",
    "bad_target_audio",  # undecodable, empty or non-finite
    "bad_source_audio",
)


@dataclass(frozen=True)
class CvssPair:
    id: str  # "{src}-{tgt}/{clip stem}", e.g. "fr-en/common_voice_fr_17732749"
    source_lang: str
    target_lang: str
    source_text: str
    target_text: str
    source_audio: np.ndarray  # float32 mono 24 kHz
    target_audio: np.ndarray  # float32 mono 24 kHz


def _fs(url: str):
    return url_to_fs(url)


def _join(*parts: str) -> str:
    return join(*parts)


def canonical_split(split: str) -> str:
    split = SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"unknown CVSS split {split!r}; expected one of {SPLITS} (or 'validation')")
    return split


def language_pairs(root: str) -> list[tuple[str, str]]:
    """The (source, target) language pairs under `{root}/cvss/`, sorted."""
    fs, path = _fs(_join(root, CVSS_DIR))
    if not fs.isdir(path):
        raise FileNotFoundError(
            f"no CVSS directory {_join(root, CVSS_DIR)!r}: expected {{root}}/cvss/{{src}}-{{tgt}}/{{split}}.tsv "
            "(run the s2st prepare step on the downloads, or write the local fixture)"
        )
    pairs = []
    for entry in fs.ls(path, detail=True):
        name = posixpath.basename(entry["name"].rstrip("/"))
        if entry["type"] == "directory" and name.count("-") == 1:
            src, tgt = name.split("-")
            pairs.append((src, tgt))
    if not pairs:
        raise FileNotFoundError(f"no {{src}}-{{tgt}} language directories under {_join(root, CVSS_DIR)!r}")
    return sorted(pairs)


def _read_text(url: str) -> str:
    fs, path = _fs(url)
    with fs.open(path, "rb") as f:
        return f.read().decode("utf-8")


def read_cvss_tsv(url: str, skipped: Counter) -> list[tuple[str, str]]:
    """(clip path, translation) rows of a CVSS split file; malformed lines are counted."""
    fs, path = _fs(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"CVSS split file {url!r} does not exist")
    rows = []
    for lineno, line in enumerate(_read_text(url).splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip():
            skipped["malformed_row"] += 1
            logger.warning("%s line %d: expected 'path<TAB>translation', got %d fields; skipped",
                           url, lineno, len(fields))
            continue
        rows.append((fields[0].strip(), fields[1].strip()))
    return rows


def read_common_voice_sentences(root: str, lang: str) -> dict[str, str]:
    """Clip path -> sentence from every Common Voice tsv of `lang` (validated, train, dev, ...)."""
    cv_dir = _join(root, COMMON_VOICE_DIR, lang)
    fs, path = _fs(cv_dir)
    names = sorted(p for p in fs.glob(f"{path.rstrip('/')}/*.tsv"))
    if not names:
        raise FileNotFoundError(
            f"no Common Voice transcripts for {lang!r}: expected {cv_dir}/validated.tsv (or train/dev/test.tsv)"
        )
    sentences: dict[str, str] = {}
    for name in names:
        with fs.open(name, "rb") as f:
            reader = csv.DictReader(io.TextIOWrapper(f, encoding="utf-8"), delimiter="\t",
                                    quoting=csv.QUOTE_NONE)
            if not reader.fieldnames or "path" not in reader.fieldnames or "sentence" not in reader.fieldnames:
                logger.info("skipping %s: no 'path' and 'sentence' columns (%s)", name, reader.fieldnames)
                continue
            for row in reader:
                clip, sentence = row.get("path"), row.get("sentence")
                if clip and sentence and sentence.strip():
                    sentences.setdefault(clip.strip(), sentence.strip())
    return sentences


def _load(url: str) -> np.ndarray:
    return load_audio_file(url)


def _target_audio(lang_dir: str, split: str, clip: str) -> np.ndarray:
    """CVSS names target files `{path}.wav` (`common_voice_fr_1.mp3.wav`); `{stem}.wav` is accepted."""
    try:
        return _load(_join(lang_dir, split, f"{clip}.wav"))
    except FileNotFoundError:
        stem = clip.rsplit(".", 1)[0]
        if stem == clip:
            raise
        return _load(_join(lang_dir, split, f"{stem}.wav"))


def _audio_or_skip(load, what: str, pair_id: str, skipped: Counter) -> Optional[np.ndarray]:
    try:
        return load()
    except FileNotFoundError as e:
        skipped[f"missing_{what}_audio"] += 1
        logger.warning("%s: no %s audio (%s); skipped", pair_id, what, e)
    except BadAudioError as e:
        skipped[f"bad_{what}_audio"] += 1
        logger.warning("%s: bad %s audio (%s); skipped", pair_id, what, e)
    return None


def iter_pairs(
    root: str,
    split: str,
    *,
    limit: Optional[int] = None,
    skipped: Optional[Counter] = None,
    languages: Optional[Sequence[str]] = None,
) -> Iterator[CvssPair]:
    """The usable pairs of `split` under `root` (layout in the module docstring), language pairs in
    sorted order, rows in file order, at most `limit`. Skipped rows are counted into `skipped` by
    reason (`SKIP_REASONS`); `languages` restricts the source languages."""
    split = canonical_split(split)
    skipped = Counter() if skipped is None else skipped
    if limit is not None and limit <= 0:
        return
    produced = 0
    for src, tgt in language_pairs(root):
        if languages is not None and src not in languages:
            continue
        lang_dir = _join(root, CVSS_DIR, f"{src}-{tgt}")
        rows = read_cvss_tsv(_join(lang_dir, f"{split}.tsv"), skipped)
        sentences = read_common_voice_sentences(root, src)
        clips_dir = _join(root, COMMON_VOICE_DIR, src, "clips")
        for clip, translation in rows:
            pair_id = f"{src}-{tgt}/{clip.rsplit('.', 1)[0]}"
            if not translation:
                skipped["empty_target_text"] += 1
                logger.warning("%s: empty translation; skipped", pair_id)
                continue
            source_text = sentences.get(clip)
            if not source_text:
                skipped["missing_source_text"] += 1
                logger.warning("%s: no Common Voice sentence for %s; skipped", pair_id, clip)
                continue
            target = _audio_or_skip(lambda: _target_audio(lang_dir, split, clip), "target", pair_id, skipped)
            if target is None:
                continue
            source = _audio_or_skip(lambda: _load(_join(clips_dir, clip)), "source", pair_id, skipped)
            if source is None:
                continue
            yield CvssPair(pair_id, src, tgt, source_text, translation, source, target)
            produced += 1
            if limit is not None and produced >= limit:
                return
