"""Downloads of CVSS and Common Voice -> the layout `steps.s2st.cvss` reads.

Sources (both copied by `steps.download`, pinned):
- CVSS (HF `google/cvss` is a loading script over the public bucket `gs://cvss`):
  `{variant}_v1.0/{variant}_{src}_en_v1.0.tar.gz`, each with `{split}.tsv` and `{split}/*.wav`.
- Common Voice in the hub's layout (`mozilla-foundation/common_voice_*`, gated: accept the terms,
  set HF_TOKEN, and lock its commit with `soda lock-datasets`): `transcript/{src}/{split}.tsv`
  and `audio/{src}/{split}/{src}_{split}_{n}.tar` of mp3 clips. CoVoST 2 and CVSS were built on
  release 4; later releases keep the clip names.

The prepare step streams each archive once and writes only what the pairs need (the CVSS files,
the Common Voice tsvs, the clips CVSS names), one language at a time with a done marker, so a
rerun redoes only unfinished languages. `summary.json` counts rows, clips found and clips missing.
"""

from __future__ import annotations

import logging
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Iterator, Optional

from pipeline.step import ExecutorStep, ResourceConfig, this_output_path, versioned
from steps.dataset_lock import HubDataset, locked_revision
from steps.download import DownloadConfig
from pipeline import output_path_of
from pipeline.fileio import atomic_write_bytes, atomic_write_json, exists, join, read_json, same_kind, url_to_fs
from steps.s2st.cvss import COMMON_VOICE_DIR, CVSS_DIR, SPLITS

logger = logging.getLogger(__name__)

CVSS_BUCKET = "gs://cvss"
CVSS_RELEASE = "cvss-v1.0"  # the bucket's release is immutable; its label is the revision
CVSS_VARIANTS = ("cvss_t", "cvss_c")
# The hub's Common Voice release 4 copy (gated). No commit is known: the revision comes from the
# dataset lock (`soda lock-datasets` with HF_TOKEN set), else the download refuses the placeholder.
COMMON_VOICE_DATASET = "mozilla-foundation/common_voice_4_0"
COMMON_VOICE_REVISION = "UNPINNED-common-voice-4"
COMMON_VOICE = HubDataset(COMMON_VOICE_DATASET, COMMON_VOICE_REVISION)
PAPER_LANGUAGES = ("fr", "es", "de")  # high-resource CVSS pairs; extend freely


def cvss_download(languages=PAPER_LANGUAGES, variant: str = "cvss_t") -> DownloadConfig:
    """Copy the CVSS archives of `languages` (CVSS-T by default: voice-transferred targets)."""
    if variant not in CVSS_VARIANTS:
        raise ValueError(f"unknown CVSS variant {variant!r}; expected one of {CVSS_VARIANTS}")
    include = tuple(f"{variant}_v1.0/{variant}_{lang}_en_v1.0.tar.gz" for lang in languages)
    return DownloadConfig(hf_dataset_id=None, revision=versioned(CVSS_RELEASE), output_path=this_output_path(),
                          include=include, source_url=CVSS_BUCKET, source_storage_options={"token": "anon"})


def common_voice_download(languages=PAPER_LANGUAGES, revision: Optional[str] = None) -> DownloadConfig:
    """Copy the Common Voice 4 transcripts and audio tars of `languages`, at `revision`, else the
    dataset lock's commit, else the placeholder."""
    if revision is None:
        revision = locked_revision(COMMON_VOICE_DATASET, COMMON_VOICE_REVISION)
    include = tuple(p for lang in languages for p in (f"transcript/{lang}/*.tsv", f"audio/{lang}/*/*.tar"))
    return DownloadConfig(hf_dataset_id=COMMON_VOICE_DATASET, revision=versioned(revision),
                          output_path=this_output_path(), include=include)


@dataclass(frozen=True)
class PrepareCvssConfig:
    cvss_path: str  # a cvss_download step's output
    common_voice_path: str  # a common_voice_download step's output
    output_path: str
    languages: tuple[str, ...] = PAPER_LANGUAGES
    variant: str = "cvss_t"


def _iter_tar(url: str) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of a tar or tar.gz, streamed once (local or fsspec URL)."""
    fs, path = url_to_fs(url)
    with fs.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
        for member in tar:
            if member.isfile():
                f = tar.extractfile(member)
                if f is not None:
                    yield member.name, f.read()


def _glob(pattern: str) -> list[str]:
    fs, path = url_to_fs(pattern)
    return sorted(same_kind(pattern, p) for p in fs.glob(path))


def prepare_language(config: PrepareCvssConfig, lang: str) -> dict:
    """Unpack one language's CVSS archive and the Common Voice clips it names."""
    archives = _glob(join(config.cvss_path, "**", f"{config.variant}_{lang}_en_v*.tar.gz"))
    if not archives:
        raise FileNotFoundError(f"no {config.variant}_{lang}_en_v*.tar.gz under {config.cvss_path!r}")
    lang_dir = join(config.output_path, CVSS_DIR, f"{lang}-en")
    needed: set[str] = set()
    rows = {}
    for name, data in _iter_tar(archives[-1]):
        parts = [p for p in name.split("/") if p not in ("", ".")]
        base = parts[-1]
        if base in {f"{s}.tsv" for s in SPLITS}:
            atomic_write_bytes(join(lang_dir, base), data)
            lines = [ln.split("\t")[0] for ln in data.decode("utf-8").splitlines() if ln.strip()]
            needed.update(lines)
            rows[base[:-4]] = len(lines)
        elif len(parts) >= 2 and parts[-2] in SPLITS and base.endswith(".wav"):
            atomic_write_bytes(join(lang_dir, parts[-2], base), data)
    missing_tsv = [s for s in SPLITS if s not in rows]
    if missing_tsv:
        raise ValueError(f"{archives[-1]}: no {', '.join(f'{s}.tsv' for s in missing_tsv)} in the archive")
    cv_dir = join(config.output_path, COMMON_VOICE_DIR, lang)
    transcripts = _glob(join(config.common_voice_path, "transcript", lang, "*.tsv"))
    if not transcripts:
        raise FileNotFoundError(f"no Common Voice transcripts {config.common_voice_path}/transcript/{lang}/*.tsv")

    for url in transcripts:
        fs, path = url_to_fs(url)
        with fs.open(path, "rb") as f:
            atomic_write_bytes(join(cv_dir, posixpath.basename(path)), f.read())
    found: set[str] = set()
    for tar_url in _glob(join(config.common_voice_path, "audio", lang, "*", "*.tar")):
        for name, data in _iter_tar(tar_url):
            base = posixpath.basename(name)
            if base in needed and base not in found:
                atomic_write_bytes(join(cv_dir, "clips", base), data)
                found.add(base)
    missing = len(needed - found)
    if missing:
        logger.warning("%s: %d of %d clips named by CVSS are not in the Common Voice audio", lang, missing, len(needed))
    return {"rows": rows, "clips": len(found), "clips_missing": missing, "archive": archives[-1]}


def prepare_cvss(config: PrepareCvssConfig) -> dict:
    per_lang = {}
    for lang in config.languages:
        marker = join(config.output_path, "done", f"{lang}.json")
        if exists(marker):
            per_lang[lang] = read_json(marker)
            continue
        per_lang[lang] = prepare_language(config, lang)
        atomic_write_json(marker, per_lang[lang])
        logger.info("prepared %s: %s", lang, per_lang[lang])
    summary = {"variant": config.variant, "languages": per_lang,
               "clips": sum(v["clips"] for v in per_lang.values()),
               "clips_missing": sum(v["clips_missing"] for v in per_lang.values())}
    atomic_write_json(join(config.output_path, "summary.json"), summary)
    logger.info("prepared %d clips of %d languages under %s", summary["clips"], len(per_lang), config.output_path)
    return summary


def prepare_cvss_step(name: str, cvss: ExecutorStep, common_voice: ExecutorStep,
                      languages=PAPER_LANGUAGES, variant: str = "cvss_t") -> ExecutorStep:
    """`s2st/{name}`: the downloads unpacked into the layout `iter_pairs` reads."""
    config = PrepareCvssConfig(cvss_path=output_path_of(cvss), common_voice_path=output_path_of(common_voice),
                               output_path=this_output_path(), languages=versioned(tuple(languages)),
                               variant=versioned(variant))
    return ExecutorStep(name=name, fn=prepare_cvss, config=config,
                        description=f"{variant} + Common Voice pairs ({', '.join(languages)} -> en)",
                        resources=ResourceConfig(cpus=2))
