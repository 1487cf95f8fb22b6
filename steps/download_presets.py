"""Download presets: the datasets SODA reads, each pinned to a revision (reference.md section 4).

Each preset returns a `DownloadConfig` whose revision is `versioned(...)` (it enters the step's
hash) and whose output is the step's own directory. Use them through `raw_step`:

    yodas2 = raw_step("raw/yodas2-en", yodas2_en_raw())

Revisions: a preset's revision is the dataset lock's entry for its repo (steps.dataset_lock,
`experiments/datasets.lock` or `$SODA_DATASETS_LOCK`), else the constant here. A 40-hex constant
is a real commit found in public sources (noted beside it). A constant starting with "UNPINNED-"
is a placeholder: the download step refuses it until `soda lock-datasets` has resolved the repo
into the lock (or a caller passes `revision=`). `hub_datasets()` lists every repo the presets
download, which is what `soda lock-datasets` resolves.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from eval.datasets import HELLASWAG
from pipeline.step import ExecutorStep, ResourceConfig, this_output_path, versioned
from steps.dataset_lock import DEFAULT_LOCK, LOCK_ENV, PLACEHOLDER_PREFIX, HubDataset, LockError, locked_revision
from steps.dataset_lock import lock_datasets, lock_path
from steps.download import DownloadConfig, download_dataset
from steps.s2st.prepare import COMMON_VOICE

# --- raw speech -------------------------------------------------------------------------------
# espnet/yodas2: data/{lang}{nnn}/{audio/*.tar.gz, duration/*.txt, text/*.json}. Commit seen in the
# hub's tree URLs for espnet/yodas2 (full snapshot, all languages).
YODAS2_REVISION = "36578388e5166be43df3f09b63fe0b4f2ddbf488"
YODAS2_EN_INCLUDE = ("data/en*/audio/*.tar.gz", "data/en*/text/*.json", "data/en*/duration/*.txt")

# amphion/Emilia-Dataset, current layout: Emilia/EN/*.tar and Emilia-YODAS/EN/*.tar (webdataset:
# {id}.mp3 + {id}.json). No commit of this layout was found; the older commit
# fc71e07e8572f5f3be1dbd02ed3172a4d298f152 has the pre-Emilia-YODAS layout (EN/*.tar.gz*).
EMILIA_REVISION = "UNPINNED-amphion-Emilia-Dataset"
EMILIA_EN_INCLUDE = ("Emilia/EN/*.tar",)
EMILIA_YODAS_EN_INCLUDE = ("Emilia-YODAS/EN/*.tar",)

# --- released pre-encoded SODA documents (parquet: id, split, text) ---------------------------
# These commits are the ones SODA's own Marin scripts pin, and they are commits of the repos under
# their first owner, potsawee/ (reference.md section 10); the presets therefore name the potsawee
# repos. The same documents are also published as soda-research/*-mm-pretrain, whose commits are
# not known here: pass dataset="soda-research/..." with its own revision (or lock it) to use them.
YODAS2_MM_PRETRAIN_DATASET = "potsawee/yodas2-mm-pretrain"
YODAS2_MM_PRETRAIN_REVISION = "8eda080a5fd6dfc070dd306c1e6446ab7c5b5f17"
YODAS2_MM_PRETRAIN_EN_INCLUDE = ("en{{000..007},{100..129}}/*.parquet",)
EMILIA_MM_PRETRAIN_DATASET = "potsawee/emilia-mm-pretrain"
EMILIA_MM_PRETRAIN_REVISION = "e41392e668b273145344fda2f737cd75a6ebb558"
EMILIA_MM_PRETRAIN_EN_INCLUDE = ("Emilia/EN/*.parquet", "Emilia-YODAS/EN/*.parquet")
# Also pinned by SODA's Marin scripts, not used by a preset yet (layouts not checked):
# potsawee/mls-en-mm-pretrain 69f96d72f6a46df18a3f91b72e3e0b42ff771460,
# potsawee/cvss-mm-method1 90ca2216540ca74d97f49b68a2cc83b76cf3e296,
# potsawee/emilia-mm-pretrain-fix bf009b3b14d29e7fe4d3967900b79d652473e786.

# --- raw MLS English (exp8_source_annealing) ---------------------------------------------------
# parler-tts/mls_eng: data/{split}-NNNNN-of-NNNNN.parquet with audio (Audio), original_path, begin_time,
# end_time, transcript, audio_duration, speaker_id, book_id (read by steps/raw_mls.py). Commit: main's
# "Update README.md", seen in the hub's tree URL for parler-tts/mls_eng.
MLS_ENG_DATASET = "parler-tts/mls_eng"
MLS_ENG_REVISION = "faf6604dcf0bb9ec0d9c280a140ad74da9c931b0"
MLS_ENG_TRAIN_INCLUDE = ("data/train-*.parquet",)

# --- text -------------------------------------------------------------------------------------
# Nemotron-CC is published by Common Crawl, not on the hub, and its S3 bucket no longer allows
# anonymous reads; the HTTPS endpoint does. An HTTPS server cannot be listed, so the step reads
# Common Crawl's published listing `contrib/Nemotron/Nemotron-CC/data-jsonl.paths.gz` (gzip'd,
# one path per line relative to https://data.commoncrawl.org/) and copies the entries under
# `data-jsonl/quality=high/kind=actual/` (files `kind2=actual/CC-MAIN-YYYY-WW-part-NNNNN.jsonl.zstd`;
# jsonl with the document in `text`, its id in `warc_record_id`). Sources: Common Crawl's
# contrib/Nemotron/Nemotron-CC/index.html (listing name, .jsonl.zstd) and public download scripts
# that read that listing. The release is immutable, so its "revision" is a label naming it.
NEMOTRON_CC_URL = "https://data.commoncrawl.org"
NEMOTRON_CC_PATHS_LISTING = "contrib/Nemotron/Nemotron-CC/data-jsonl.paths.gz"
NEMOTRON_CC_REVISION = "nemotron-cc-v1-2024-12"
NEMOTRON_CC_HQ_ACTUAL_INCLUDE = ("contrib/Nemotron/Nemotron-CC/data-jsonl/quality=high/kind=actual/**/*.jsonl.zstd",)

# --- evaluation ---------------------------------------------------------------------------------
# openslr/librispeech_asr parquet conversion (clean/validation = dev-clean, clean/test = test-clean);
# commit fed4943... is on the refs/convert/parquet branch.
LIBRISPEECH_REVISION = "fed4943ea9bdc207dc01b65e0928dd100e18a2a1"
LIBRISPEECH_INCLUDE = ("clean/validation/*.parquet", "clean/test/*.parquet")
SALMON_REVISION = "18966bb30c2fe344ad09e1200805fb237bde66c7"  # slprl/SALMon, all 8 parts
SALMON_INCLUDE = ("*/train-*.parquet",)
SBLIMP_REVISION = "UNPINNED-speed-sBLIMP"
SWUGGY_REVISION = "UNPINNED-speed-sWUGGY"
# seed-tts-eval English (1,088 prompts): hub mirror of BytedanceSpeech/seed-tts-eval with
# en/meta.lst (utt|prompt_text|prompt_wav|target_text) and en/prompt-wavs/*.wav.
SEED_TTS_EVAL_DATASET = "zhaochenyang20/seed-tts-eval"
SEED_TTS_EVAL_REVISION = "UNPINNED-seed-tts-eval"

# Every hub repo a preset here downloads, with its code revision (what `soda lock-datasets` resolves).
HUB_DATASETS = (
    HubDataset("espnet/yodas2", YODAS2_REVISION),
    HubDataset("amphion/Emilia-Dataset", EMILIA_REVISION),
    HubDataset(YODAS2_MM_PRETRAIN_DATASET, YODAS2_MM_PRETRAIN_REVISION),
    HubDataset(EMILIA_MM_PRETRAIN_DATASET, EMILIA_MM_PRETRAIN_REVISION),
    HubDataset(MLS_ENG_DATASET, MLS_ENG_REVISION),
    HubDataset("openslr/librispeech_asr", LIBRISPEECH_REVISION, branch="refs/convert/parquet"),
    HubDataset("slprl/SALMon", SALMON_REVISION),
    HubDataset("speed/sBLIMP", SBLIMP_REVISION),
    HubDataset("speed/sWUGGY", SWUGGY_REVISION),
    HubDataset(SEED_TTS_EVAL_DATASET, SEED_TTS_EVAL_REVISION),
)
_CODE_REVISION = {d.repo: d.pin for d in HUB_DATASETS}


def hub_datasets() -> tuple[HubDataset, ...]:
    """Every hub dataset repo the presets download: these, HellaSwag's (eval.datasets) and Common
    Voice's (steps.s2st.prepare)."""
    return (*HUB_DATASETS, HELLASWAG, COMMON_VOICE)


def _revision(dataset: str, revision: Optional[str]) -> str:
    """`revision` when given, else the lock's entry for `dataset`, else the code's constant."""
    if revision is not None:
        return revision
    fallback = _CODE_REVISION.get(dataset, f"{PLACEHOLDER_PREFIX}-{dataset.replace('/', '-')}")
    return locked_revision(dataset, fallback)


def _config(dataset: Optional[str], revision: str, include, **kw) -> DownloadConfig:
    return DownloadConfig(
        hf_dataset_id=dataset,
        revision=versioned(revision),
        output_path=this_output_path(),
        include=tuple(include),
        **kw,
    )


def yodas2_en_raw(revision: Optional[str] = None) -> DownloadConfig:
    """YODAS2 English raw audio: per shard a tar.gz of long-form recordings, a text json (utterance
    ids carry start and end) and a duration txt, the layout steps.raw_yodas2 reads."""
    return _config("espnet/yodas2", _revision("espnet/yodas2", revision), YODAS2_EN_INCLUDE)


def emilia_en_raw(revision: Optional[str] = None) -> DownloadConfig:
    """Emilia English webdataset shards (mp3 + json)."""
    return _config("amphion/Emilia-Dataset", _revision("amphion/Emilia-Dataset", revision), EMILIA_EN_INCLUDE)


def emilia_yodas_en_raw(revision: Optional[str] = None) -> DownloadConfig:
    """Emilia-YODAS English webdataset shards (mp3 + json)."""
    return _config("amphion/Emilia-Dataset", _revision("amphion/Emilia-Dataset", revision), EMILIA_YODAS_EN_INCLUDE)


def yodas2_mm_pretrain_en(revision: Optional[str] = None,
                          dataset: str = YODAS2_MM_PRETRAIN_DATASET) -> DownloadConfig:
    """The released pre-encoded YODAS2 English documents (both formats, parquet id/split/text)."""
    return _config(dataset, _revision(dataset, revision), YODAS2_MM_PRETRAIN_EN_INCLUDE)


def yodas2_mm_pretrain_all(revision: Optional[str] = None,
                           dataset: str = YODAS2_MM_PRETRAIN_DATASET) -> DownloadConfig:
    """The released pre-encoded YODAS2 documents of every language (`{lang}{nnn}/*.parquet`)."""
    return _config(dataset, _revision(dataset, revision), ("*/*.parquet",))


def emilia_mm_pretrain_en(revision: Optional[str] = None,
                          dataset: str = EMILIA_MM_PRETRAIN_DATASET) -> DownloadConfig:
    """The released pre-encoded Emilia + Emilia-YODAS English documents."""
    return _config(dataset, _revision(dataset, revision), EMILIA_MM_PRETRAIN_EN_INCLUDE)


def mls_eng_train(revision: Optional[str] = None) -> DownloadConfig:
    """MLS English train split as parquet (1,416 shards), for the raw (Mimi-encode) path (steps.raw_mls)."""
    return _config(MLS_ENG_DATASET, _revision(MLS_ENG_DATASET, revision), MLS_ENG_TRAIN_INCLUDE)


def nemotron_cc_hq_actual(revision: str = NEMOTRON_CC_REVISION) -> DownloadConfig:
    """Nemotron-CC high-quality actual (non-synthetic) text over Common Crawl's HTTPS endpoint, the
    files chosen from its published paths listing."""
    return _config(None, revision, NEMOTRON_CC_HQ_ACTUAL_INCLUDE, source_url=NEMOTRON_CC_URL,
                   paths_listing=NEMOTRON_CC_PATHS_LISTING)


def librispeech_dev_test_clean(revision: Optional[str] = None) -> DownloadConfig:
    """LibriSpeech dev-clean (validation NLL) and test-clean (ASR) as parquet."""
    return _config("openslr/librispeech_asr", _revision("openslr/librispeech_asr", revision), LIBRISPEECH_INCLUDE)


def salmon(revision: Optional[str] = None) -> DownloadConfig:
    return _config("slprl/SALMon", _revision("slprl/SALMon", revision), SALMON_INCLUDE)


def sblimp(revision: Optional[str] = None) -> DownloadConfig:
    return _config("speed/sBLIMP", _revision("speed/sBLIMP", revision), ("**/*.parquet", "*.json", "*.md"))


def swuggy(revision: Optional[str] = None) -> DownloadConfig:
    return _config("speed/sWUGGY", _revision("speed/sWUGGY", revision), ("**/*.parquet", "*.json", "*.md"))


def seed_tts_eval_en(revision: Optional[str] = None) -> DownloadConfig:
    return _config(SEED_TTS_EVAL_DATASET, _revision(SEED_TTS_EVAL_DATASET, revision),
                   ("en/meta.lst", "en/prompt-wavs/*.wav"))


def raw_step(name: str, config: DownloadConfig, description: Optional[str] = None) -> ExecutorStep:
    """An executor step that runs `download_dataset` with `config` (name like 'raw/yodas2-en')."""
    source = config.hf_dataset_id or config.source_url
    return ExecutorStep(
        name=name,
        fn=download_dataset,
        config=config,
        description=description or f"copy {source} at a pinned revision",
        resources=ResourceConfig(cpus=1),
    )


PRESETS = {
    "yodas2-en": yodas2_en_raw,
    "emilia-en": emilia_en_raw,
    "emilia-yodas-en": emilia_yodas_en_raw,
    "yodas2-mm-pretrain-en": yodas2_mm_pretrain_en,
    "emilia-mm-pretrain-en": emilia_mm_pretrain_en,
    "yodas2-mm-pretrain-all": yodas2_mm_pretrain_all,
    "mls-eng-train": mls_eng_train,
    "nemotron-cc-hq-actual": nemotron_cc_hq_actual,
    "librispeech-dev-test-clean": librispeech_dev_test_clean,
    "salmon": salmon,
    "sblimp": sblimp,
    "swuggy": swuggy,
    "seed-tts-eval-en": seed_tts_eval_en,
}


def get_download_preset(name: str, revision: Optional[str] = None) -> DownloadConfig:
    """The DownloadConfig of preset `name` (at its pinned revision, or `revision`); raises ValueError
    listing the presets for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"unknown download preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]() if revision is None else PRESETS[name](revision)


# ---- soda lock-datasets -------------------------------------------------------------------------


def lock_datasets_cli(argv: Optional[Sequence[str]] = None) -> int:
    """`soda lock-datasets [--lock PATH] [--update] [--only REPO ...]`."""
    parser = argparse.ArgumentParser(prog="soda lock-datasets",
                                     description="Resolve the Hub commit of every dataset repo the presets "
                                                 "download and write the dataset lock.")
    parser.add_argument("--lock", default=None, help=f"lock file (default: ${LOCK_ENV}, else {DEFAULT_LOCK})")
    parser.add_argument("--update", action="store_true",
                        help="resolve each repo's branch again, moving pinned repos to the current head")
    parser.add_argument("--only", nargs="+", metavar="REPO", help="resolve only these repos; keep the others")
    args = parser.parse_args(argv)
    path = args.lock or lock_path()
    try:
        entries = lock_datasets(hub_datasets(), path, update=args.update, only=args.only)
    except LockError as exc:
        print(f"soda lock-datasets: {exc}", file=sys.stderr)
        return 1
    width = max(len(r) for r in entries)
    for repo in sorted(entries):
        e = entries[repo]
        print(f"{repo:<{width}}  {e['revision']}  (from {e.get('resolved_from')})")
    print(f"wrote {len(entries)} dataset revisions to {path}")
    return 0
