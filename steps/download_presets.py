"""Download presets: the datasets SODA reads, each pinned to a revision (reference.md section 4).

Each preset returns a `DownloadConfig` whose revision is `versioned(...)` (it enters the step's
hash) and whose output is the step's own directory. Use them through `raw_step`:

    yodas2 = raw_step("raw/yodas2-en", yodas2_en_raw())

Revisions: a 40-hex constant is a real commit found in public sources (noted beside it). A
constant starting with "UNPINNED-" is a placeholder: the download step refuses to run with it
until someone looks up the commit on huggingface.co and sets it here (or passes `revision=`).
"""

from __future__ import annotations

from typing import Optional

from pipeline.step import ExecutorStep, ResourceConfig, this_output_path, versioned
from steps.download import DownloadConfig, download_dataset

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
# Commits used by Marin's SODA experiment scripts for the same repos under their first owner
# (potsawee/yodas2-mm-pretrain, potsawee/emilia-mm-pretrain). Check they resolve under
# soda-research/ (a transferred repo keeps its history); otherwise set the new commits here.
YODAS2_MM_PRETRAIN_REVISION = "8eda080a5fd6dfc070dd306c1e6446ab7c5b5f17"
YODAS2_MM_PRETRAIN_EN_INCLUDE = ("en{{000..007},{100..129}}/*.parquet",)
EMILIA_MM_PRETRAIN_REVISION = "e41392e668b273145344fda2f737cd75a6ebb558"
EMILIA_MM_PRETRAIN_EN_INCLUDE = ("Emilia/EN/*.parquet", "Emilia-YODAS/EN/*.parquet")

# --- text -------------------------------------------------------------------------------------
# Nemotron-CC is published by Common Crawl, not on the hub: s3://commoncrawl/contrib/Nemotron/
# Nemotron-CC/data-jsonl/quality=high/kind=actual/**/*.jsonl.gz (needs s3fs, anonymous access).
# The release is immutable, so its "revision" is a label naming the release.
NEMOTRON_CC_URL = "s3://commoncrawl/contrib/Nemotron/Nemotron-CC/data-jsonl"
NEMOTRON_CC_REVISION = "nemotron-cc-v1-2024-12"
NEMOTRON_CC_HQ_ACTUAL_INCLUDE = ("quality=high/kind=actual/**/*.jsonl.gz",)

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


def _config(dataset: Optional[str], revision: str, include, **kw) -> DownloadConfig:
    return DownloadConfig(
        hf_dataset_id=dataset,
        revision=versioned(revision),
        output_path=this_output_path(),
        include=tuple(include),
        **kw,
    )


def yodas2_en_raw(revision: str = YODAS2_REVISION) -> DownloadConfig:
    """YODAS2 English raw audio (long-form tar.gz per shard + per-utterance text json)."""
    return _config("espnet/yodas2", revision, YODAS2_EN_INCLUDE)


def emilia_en_raw(revision: str = EMILIA_REVISION) -> DownloadConfig:
    """Emilia English webdataset shards (mp3 + json)."""
    return _config("amphion/Emilia-Dataset", revision, EMILIA_EN_INCLUDE)


def emilia_yodas_en_raw(revision: str = EMILIA_REVISION) -> DownloadConfig:
    """Emilia-YODAS English webdataset shards (mp3 + json)."""
    return _config("amphion/Emilia-Dataset", revision, EMILIA_YODAS_EN_INCLUDE)


def yodas2_mm_pretrain_en(revision: str = YODAS2_MM_PRETRAIN_REVISION,
                          dataset: str = "soda-research/yodas2-mm-pretrain") -> DownloadConfig:
    """The released pre-encoded YODAS2 English documents (both formats, parquet id/split/text)."""
    return _config(dataset, revision, YODAS2_MM_PRETRAIN_EN_INCLUDE)


def emilia_mm_pretrain_en(revision: str = EMILIA_MM_PRETRAIN_REVISION,
                          dataset: str = "soda-research/emilia-mm-pretrain") -> DownloadConfig:
    """The released pre-encoded Emilia + Emilia-YODAS English documents."""
    return _config(dataset, revision, EMILIA_MM_PRETRAIN_EN_INCLUDE)


def nemotron_cc_hq_actual(revision: str = NEMOTRON_CC_REVISION) -> DownloadConfig:
    """Nemotron-CC high-quality actual (non-synthetic) text, from Common Crawl's bucket."""
    return _config(None, revision, NEMOTRON_CC_HQ_ACTUAL_INCLUDE, source_url=NEMOTRON_CC_URL,
                   source_storage_options={"anon": True})


def librispeech_dev_test_clean(revision: str = LIBRISPEECH_REVISION) -> DownloadConfig:
    """LibriSpeech dev-clean (validation NLL) and test-clean (ASR) as parquet."""
    return _config("openslr/librispeech_asr", revision, LIBRISPEECH_INCLUDE)


def salmon(revision: str = SALMON_REVISION) -> DownloadConfig:
    return _config("slprl/SALMon", revision, SALMON_INCLUDE)


def sblimp(revision: str = SBLIMP_REVISION) -> DownloadConfig:
    return _config("speed/sBLIMP", revision, ("**/*.parquet", "*.json", "*.md"))


def swuggy(revision: str = SWUGGY_REVISION) -> DownloadConfig:
    return _config("speed/sWUGGY", revision, ("**/*.parquet", "*.json", "*.md"))


def seed_tts_eval_en(revision: str = SEED_TTS_EVAL_REVISION) -> DownloadConfig:
    return _config(SEED_TTS_EVAL_DATASET, revision, ("en/meta.lst", "en/prompt-wavs/*.wav"))


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
