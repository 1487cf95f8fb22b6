"""Shared recipe pieces: small factories whose arguments are the decisions a researcher makes.

Everything else defaults to the paper (shared/reference.md). Only values that change what a
step computes are `versioned`; paths come from `output_path_of` / `this_output_path`.
Importing this module imports no framework: the step functions import theirs when they run.
"""

from __future__ import annotations

import hashlib
import os
from typing import Optional, Sequence

from pipeline import ExecutorStep, ResourceConfig, output_path_of, this_output_path, versioned
from steps.download import DownloadConfig, download_dataset
from steps.download_presets import raw_step
from steps.encode import EncodeConfig, encode_speech
from steps.pre_encoded import PreEncodedConfig, convert_pre_encoded
from steps.interleave import InterleaveConfig, interleave
from steps.tokenize import TokenizeConfig, tokenize
from steps.training.mixtures import Mixture
from steps.training.optimizer import SodaRecipe
from steps.training.train import TrainConfig, train
from tokenizer.build import LLAMA3, BuildTokenizerConfig, build_tokenizer_step

LOCAL_CORPUS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "steps", "local_corpus", "emilia_like")


def directory_digest(path: str, suffix: str = "") -> str:
    """sha256 over the names and bytes of the files in `path`: the revision of shipped data."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        if name.endswith(suffix) and os.path.isfile(os.path.join(path, name)):
            digest.update(name.encode() + b"\0")
            with open(os.path.join(path, name), "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def local_corpus(name: str = "raw/local-corpus-emilia-like", directory: str = LOCAL_CORPUS_DIR) -> ExecutorStep:
    """The shipped synthetic-voice corpus (Emilia webdataset layout), copied into the prefix.

    Its revision is the digest of its files, so editing the corpus re-runs everything after it.
    """
    return ExecutorStep(
        name=name,
        fn=download_dataset,
        config=DownloadConfig(hf_dataset_id=None, revision=versioned(directory_digest(directory, ".tar")),
                              output_path=this_output_path(), include=("*.tar",),
                              source_url="file://" + os.path.abspath(directory)),
        description="the shipped offline speech corpus (espeak-ng and flite voices)",
    )


def default_encode(name: str, raw: ExecutorStep, files: str = "**/*.tar", mimi_model: str = "kyutai/mimi",
                   batch_size: int = 8, use_gpu: bool = False, cpus: float = 1.0) -> ExecutorStep:
    """Mimi-encode the audio shards of a `raw/...` step (one Ray task per shard)."""
    return ExecutorStep(
        name=f"encoded/{name}",
        fn=encode_speech,
        config=EncodeConfig(input_paths=(output_path_of(raw, files),), output_path=this_output_path(),
                            mimi_model=versioned(mimi_model), num_codebooks=versioned(8), seed=versioned(0),
                            batch_size=batch_size, use_gpu=use_gpu),
        description=f"Mimi codes (8 codebooks) of {raw.name}" + (" [random Mimi: plumbing run]"
                                                                 if mimi_model == "random" else ""),
        resources=ResourceConfig(cpus=cpus),
    )


def default_interleave(name: str, encoded: ExecutorStep, max_document_tokens: Optional[int] = 1 << 20,
                       formats: Sequence[str] = ("text_first", "audio_first")) -> ExecutorStep:
    """One document per recording, written text-first and audio-first."""
    return ExecutorStep(
        name=f"documents/{name}",
        fn=interleave,
        config=InterleaveConfig(input_path=output_path_of(encoded, "shards"), output_path=this_output_path(),
                                formats=versioned(tuple(formats)),
                                max_document_tokens=versioned(max_document_tokens)),
        description=f"interleaved documents of {encoded.name}",
    )


def download(name: str, preset: DownloadConfig) -> ExecutorStep:
    """A `raw/...` step: a preset from steps.download_presets, pinned to its revision."""
    return raw_step(f"raw/{name}", preset)


def pre_encoded_documents(name: str, raw: ExecutorStep, files: str) -> ExecutorStep:
    """The released, already interleaved SODA documents (`*-mm-pretrain`), as the paper trained."""
    return ExecutorStep(
        name=f"documents/{name}",
        fn=convert_pre_encoded,
        config=PreEncodedConfig(input_paths=(output_path_of(raw, files),), output_path=this_output_path(),
                                fix_whitespace=versioned(True)),
        description=f"released pre-encoded documents {files} of {raw.name}",
    )


def default_text_documents(name: str, raw: ExecutorStep, files: str = "") -> ExecutorStep:
    """A text-only corpus (e.g. Nemotron-CC HQ-actual) as documents."""
    return ExecutorStep(
        name=f"documents/{name}",
        fn=interleave,
        config=InterleaveConfig(input_path=output_path_of(raw, files) if files else output_path_of(raw),
                                output_path=this_output_path(), corpus=versioned("text")),
        description=f"text documents of {raw.name}",
    )


def default_tokenizer(base: str = LLAMA3, name: str = "tokenizer/soda-llama3") -> ExecutorStep:
    """The base tokenizer extended by the 4 SODA specials and 16,384 audio tokens."""
    return ExecutorStep(
        name=name,
        fn=build_tokenizer_step,
        config=BuildTokenizerConfig(base=versioned(base), output_path=this_output_path()),
        description=f"{base} + SODA's control and audio tokens",
    )


def default_tokenize(name: str, documents: ExecutorStep, tokenizer: ExecutorStep) -> ExecutorStep:
    """Documents -> a Levanter token cache (`<output>/train`) the trainer reads directly."""
    return ExecutorStep(
        name=f"tokenized/{name}",
        fn=tokenize,
        config=TokenizeConfig(input_path=output_path_of(documents, "documents"), tokenizer=output_path_of(tokenizer),
                              output_path=this_output_path()),
        description=f"token cache of {documents.name}",
    )


def default_train(name: str, preset: str, caches: dict[str, ExecutorStep], tokenizer: ExecutorStep,
                  mixture: Mixture, batch_size: int, token_budget: Optional[int] = None,
                  num_steps: Optional[int] = None, tpu: Optional[str] = None, optimizer=SodaRecipe(),
                  seed: int = 0, **options) -> ExecutorStep:
    """A Levanter training run. Model size, data mix, token budget, batch, optimizer (LR) and the
    accelerator are arguments, so each experiment shows them where it declares the run.

    `options` are further TrainConfig fields that do not change the model (checkpoint cadence,
    W&B, HF export); they stay unversioned.
    """
    return ExecutorStep(
        name=f"checkpoints/{name}",
        fn=train,
        config=TrainConfig(caches={source: output_path_of(step) for source, step in caches.items()},
                           tokenizer=output_path_of(tokenizer), preset=versioned(preset),
                           mixture=versioned(mixture), batch_size=versioned(batch_size),
                           token_budget=versioned(token_budget), num_steps=versioned(num_steps),
                           optimizer=versioned(optimizer), seed=versioned(seed), tpu=tpu,
                           output_path=this_output_path(), **options),
        description=f"{preset} on {mixture.name}, batch {batch_size}"
                    + (f", {token_budget:.3g} tokens" if token_budget else f", {num_steps} steps"),
        resources=ResourceConfig(tpu=tpu, max_retries=3) if tpu else ResourceConfig(cpus=2),
    )
