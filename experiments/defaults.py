"""Shared recipe pieces: small factories whose arguments are the decisions a researcher makes.

Everything else defaults to the paper (shared/reference.md). Only values that change what a
step computes are `versioned`; paths come from `output_path_of` / `this_output_path`.
Importing this module imports no framework: the step functions import theirs when they run.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Optional, Sequence

from pipeline import (
    ExecutorStep, ResourceConfig, VersionedValue, output_path_of, this_output_path, unwrap_versioned, versioned,
)
from steps.download import DownloadConfig, download_dataset
from steps.download_presets import get_download_preset, raw_step
from steps.encode import EncodeConfig, encode_speech
from steps.pre_encoded import PreEncodedConfig, convert_pre_encoded
from steps.interleave import InterleaveConfig, interleave
from steps.tokenize import TokenizeConfig, tokenize
from steps.training.mixtures import Mixture
from steps.training.optimizer import IsoFlopRecipe, SodaRecipe
from steps.training.train import train
from steps.training.train_config import TrainConfig
from tokenizer.build import LLAMA3, BuildTokenizerConfig, build_tokenizer_step
from pipeline.node_types import tpu_slice
from steps.scaling.analysis import RunRef
from steps.training.launch import slice_spec
from steps.training.presets import get_preset

# why a step's outputs are not meaningful (ExecutorStep.plumbing): the log marks them and all built on them
RANDOM_MIMI = "audio encoded with a random-weight Mimi, whose codes are not speech tokens"
RANDOM_JUDGES = "random-init Whisper and WavLM judges"

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
                   batch_size: int = 8, use_gpu: bool = False, cpus: float = 1.0,
                   max_chunk_seconds: float = 60.0) -> ExecutorStep:
    """Mimi-encode the audio shards of a `raw/...` step (one Ray task per shard: a webdataset tar, a
    parquet file, or a YODAS2 audio archive). Mimi sees at most `max_chunk_seconds` at once (SODA's
    preparation: 60 s)."""
    return ExecutorStep(
        name=f"encoded/{name}",
        fn=encode_speech,
        config=EncodeConfig(input_paths=(output_path_of(raw, files),), output_path=this_output_path(),
                            mimi_model=versioned(mimi_model), num_codebooks=versioned(8), seed=versioned(0),
                            max_chunk_seconds=versioned(max_chunk_seconds), batch_size=batch_size, use_gpu=use_gpu),
        description=f"Mimi codes (8 codebooks) of {raw.name}",
        resources=ResourceConfig(cpus=cpus),
        plumbing=RANDOM_MIMI if mimi_model == "random" else None,
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


def download(name: str, preset: DownloadConfig | str) -> ExecutorStep:
    """A `raw/...` step: a preset from steps.download_presets (its config, or its name in
    `steps.download_presets.PRESETS`), pinned to its revision."""
    if isinstance(preset, str):
        preset = get_download_preset(preset)
    if not isinstance(preset, DownloadConfig):
        raise TypeError(f"download({name!r}): preset must be a DownloadConfig or a preset name, "
                        f"got {type(preset).__name__}")
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


# TrainConfig fields that do not change the trained model: safe to leave out of the hash.
UNVERSIONED_TRAIN_OPTIONS = frozenset({
    "checkpoint_every_steps", "checkpoint_every_minutes", "steps_per_eval", "max_eval_batches", "export_hf",
    "wandb", "per_device_parallelism", "max_preemptions", "max_failures", "plumbing_run", "eval_caches", "require_accelerator",
})


def default_train(name: str, *, caches: dict[str, ExecutorStep], tokenizer: ExecutorStep, mixture: Mixture,
                  batch_size: int, token_budget: Optional[int] = None, num_steps: Optional[int] = None,
                  tpu: Optional[str] = None, optimizer=SodaRecipe(), seed: int = 0, preset: Optional[str] = None,
                  shape=None, warm_start_hf: Optional[str] = None, anneal_mixture: Optional[Mixture] = None,
                  seq_len: Optional[int] = None, mp: Optional[str] = None,
                  initialize_from: Optional[ExecutorStep] = None, **options) -> ExecutorStep:
    """A Levanter training run. Model, data mix, token budget, batch, optimizer (LR) and the
    accelerator are arguments, so each experiment shows them where it declares the run.

    The model is a named `preset`, an explicit `shape` (a `steps.training.accounting.ModelShape`,
    e.g. the 150M proxy, which has no preset), or an HF checkpoint to warm-start from
    (`warm_start_hf`, its own shape): give exactly one. `anneal_mixture` switches the data for the LR
    decay phase; `initialize_from` (a train step) continues that run's train state, its checkpoint
    before this run's anneal start (steps.training.train.TrainConfig). Everything that changes the
    model is versioned; `options` may only hold the
    TrainConfig fields in UNVERSIONED_TRAIN_OPTIONS (checkpoint cadence, W&B, HF export, ...).
    """
    given = [k for k, v in (("preset", preset), ("shape", shape), ("warm_start_hf", warm_start_hf)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"default_train({name!r}): give exactly one of preset, shape, warm_start_hf; "
                         f"got {given or 'none'}")
    unknown = sorted(set(options) - UNVERSIONED_TRAIN_OPTIONS)
    if unknown:
        raise TypeError(f"default_train({name!r}): {unknown} would change the model but stay out of the step's "
                        f"hash; only {sorted(UNVERSIONED_TRAIN_OPTIONS)} may pass as options")
    _check_train_args(name, caches=caches, mixture=mixture, anneal_mixture=anneal_mixture, batch_size=batch_size,
                      token_budget=token_budget, num_steps=num_steps, preset=preset, seq_len=seq_len, tpu=tpu)
    optional = {"seq_len": seq_len, "mp": mp}
    model = preset or (f"warm start from {warm_start_hf}" if warm_start_hf else
                       f"{shape.hidden}-wide {shape.layers}-layer decoder")
    return ExecutorStep(
        name=f"checkpoints/{name}",
        fn=train,
        config=TrainConfig(caches={source: output_path_of(step) for source, step in caches.items()},
                           tokenizer=output_path_of(tokenizer), preset=_versioned(preset or "custom"),
                           shape=_versioned(shape), warm_start_hf=_versioned(warm_start_hf),
                           mixture=_versioned(mixture), anneal_mixture=_versioned(anneal_mixture),
                           batch_size=_versioned(batch_size), token_budget=_versioned(token_budget),
                           num_steps=_versioned(num_steps), optimizer=_versioned(optimizer), seed=_versioned(seed),
                           initialize_from=output_path_of(initialize_from) if initialize_from else None,
                           tpu=tpu, output_path=this_output_path(),
                           **{k: _versioned(v) for k, v in optional.items() if v is not None}, **options),
        description=_train_description(model, mixture, anneal_mixture, batch_size, token_budget, num_steps),
        resources=ResourceConfig(tpu=tpu, max_retries=3) if tpu else ResourceConfig(cpus=2),
    )


def isoflop_train(point, *, caches: dict[str, ExecutorStep], tokenizer: ExecutorStep, mixture: Mixture,
                  tpu: Optional[str] = None, **options) -> ExecutorStep:
    """The training run of one IsoFLOP grid point (`steps.scaling.grid.GridPoint`): the point's own
    shape (the one whose FLOPs the grid counted, whatever the grid's settings), batch, steps and
    recipe (LR and beta2 of the point)."""
    return default_train(point.name, shape=point.shape, caches=caches, tokenizer=tokenizer, mixture=mixture,
                         batch_size=point.batch, num_steps=point.steps, optimizer=IsoFlopRecipe.for_point(point),
                         tpu=tpu, **options)


def _train_description(model, mixture, anneal_mixture, batch_size, token_budget, num_steps) -> str:
    model, mixture, anneal, batch, budget, steps = map(unwrap_versioned, (model, mixture, anneal_mixture, batch_size,
                                                                     token_budget, num_steps))
    return (f"{model} on {mixture.name}" + (f", annealed on {anneal.name}" if anneal else "") + f", batch {batch}"
            + (f", {budget:.3g} tokens" if budget else f", {steps} steps"))


def _check_train_args(name: str, *, caches, mixture, anneal_mixture, batch_size, token_budget, num_steps, preset,
                      seq_len, tpu) -> None:
    """What `steps.training.train.resolve` would refuse at run time, refused when the experiment is
    declared (a dry run), naming the argument and what is allowed."""
    where = f"default_train({name!r})"
    if preset is not None:
        try:
            get_preset(unwrap_versioned(preset))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{where}: preset: {exc.args[0]}") from exc
    for field, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        value = unwrap_versioned(value)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ValueError(f"{where}: {field} must be a positive int, got {value!r}")
    budget, steps = unwrap_versioned(token_budget), unwrap_versioned(num_steps)
    if (budget is None) == (steps is None):
        raise ValueError(f"{where}: give exactly one of num_steps and token_budget "
                         f"(got num_steps={steps!r}, token_budget={budget!r})")
    for field, value in (("token_budget", budget), ("num_steps", steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value <= 0):
            raise ValueError(f"{where}: {field} must be a positive number, got {value!r}")
    for field, mix in (("mixture", unwrap_versioned(mixture)), ("anneal_mixture", unwrap_versioned(anneal_mixture))):
        if mix is None:
            continue
        if not isinstance(mix, Mixture):
            raise TypeError(f"{where}: {field} must be a steps.training.mixtures.Mixture, got {type(mix).__name__}")
        missing = [source for source in mix.active_sources if source not in caches]
        if missing:
            raise ValueError(f"{where}: {field} {mix.name!r} samples {missing} but caches has no step for them "
                             f"(caches: {sorted(caches)})")
    if tpu is not None:
        slice_spec(tpu)


def slice_for_batch(batch: int, largest: str) -> str:
    """`largest`, or the largest smaller slice of its generation whose JAX devices divide `batch`, so the
    batch splits evenly (a batch of 8 cannot be spread over a v5p-32's 16 devices; a v5p-16 has 8)."""
    spec = tpu_slice(largest)
    size = int(largest.rsplit("-", 1)[1])
    while size >= 1:
        candidate = f"{spec.generation}-{size}"
        try:
            if batch % tpu_slice(candidate).devices == 0:
                return candidate
        except ValueError:  # no whole chip at this size
            break
        size //= 2
    raise ValueError(f"no {spec.generation} slice up to {largest} has a device count dividing batch {batch}")


def _versioned(value):
    """versioned(value), unless the caller already marked it."""
    return value if isinstance(value, VersionedValue) else versioned(value)


def run_ref(name: str, model: ExecutorStep, evals: dict[str, ExecutorStep], budget: float = 0.0):
    """A trained model and its evaluation steps, as the analysis steps read them."""
    return RunRef(budget=budget, train=output_path_of(model), name=name,
                  evals={task: output_path_of(step) for task, step in evals.items()})
