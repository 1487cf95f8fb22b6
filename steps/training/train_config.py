"""A train step's configuration (`TrainConfig`) and what it resolves to (`resolve`: the model's
shape, the number of steps and the learning rate), without Levanter: the step (steps.training.train),
the placement check (steps.training.placement) and the experiment scripts read it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from pipeline import this_output_path
from steps.training.accounting import ModelShape
from steps.training.mixtures import FINAL, Mixture
from steps.training.optimizer import IsoFlopRecipe, SodaRecipe
from steps.training.presets import get_preset


@dataclass(frozen=True)
class WandbSettings:
    project: str = "soda"
    entity: Optional[str] = None
    tags: tuple[str, ...] = ()
    group: Optional[str] = None
    mode: Optional[str] = None  # None: "online" with WANDB_API_KEY, else "offline"


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the paper's recipe (reference.md section 5).

    caches: source name -> a tokenize step's output (the Levanter cache root). Every source with
      a non-zero weight in `mixture` (or `anneal_mixture`) needs one.
    tokenizer: the SODA tokenizer directory (build-tokenizer step output) or an HF id.
    preset / shape: a name from steps.training.presets, or an explicit ModelShape (wins).
    num_steps / token_budget: give one; steps = ceil(tokens / (batch_size * seq_len)).
    anneal_mixture: switch to this mix for the LR decay phase (the data-source ablation).
    warm_start_hf: an HF Qwen3 checkpoint (id, hf://id or local dir) to start from; its
      embeddings are resized to the tokenizer and its own shape is used (preset ignored).
    initialize_from: another train run's output (or one of its `checkpoints/step-N`) to continue
      from: the whole Levanter train state -- parameters, optimizer moments and step counter -- is
      loaded (Levanter's `trainer.initialize_from`) when this run has no checkpoint of its own, so the
      LR schedule and the data position continue at that step. Given a run's output, the checkpoint
      is its latest before this run's LR decay starts when `anneal_mixture` is set (the paper's
      annealing restarted SODA-prelim just before its decay), else its latest. Shape, batch and
      recipe must be the checkpoint's. The optimizer state is kept, not reset: the annealed run
      is the original run with other data from the decay on. Use it as `output_path_of(step)`, a
      dependency whose identity enters this run's hash.
    tpu: a slice type such as "v5p-64": with Ray up, train on every host of the slice, supervised
      from off the slice; each preemption or lost host resumes from the latest checkpoint
      (`max_preemptions`, default no limit), an error of the code is retried `max_failures` times.
    plumbing_run: the data came from a random Mimi (also detected from cache summaries).
    component_formats: cache name -> "text" (default: plain token caches) or "supervised"
      (caches with per-token `loss_weights`, e.g. steps.s2st.sft_data; read with Levanter's
      SupervisedLmDatasetFormat, one document per packed segment, the loss where the weight is 1).
    """

    caches: dict[str, str]
    tokenizer: str
    preset: str = "soda-135m"
    shape: Optional[ModelShape] = None
    mixture: Mixture = FINAL
    anneal_mixture: Optional[Mixture] = None
    eval_caches: dict[str, str] = field(default_factory=dict)  # name -> cache with a validation/ split
    seq_len: Optional[int] = None  # None: the shape's
    batch_size: int = 512
    num_steps: Optional[int] = None
    token_budget: Optional[int] = None
    optimizer: SodaRecipe | IsoFlopRecipe = SodaRecipe()
    seed: int = 0
    checkpoint_every_steps: int = 10_000  # permanent checkpoints
    checkpoint_every_minutes: Optional[float] = 15.0  # temporary checkpoints (None: off)
    steps_per_eval: int = 1000
    max_eval_batches: Optional[int] = 64
    export_hf: bool = True
    warm_start_hf: Optional[str] = None
    initialize_from: Optional[str] = None
    mp: str = "p=f32,c=bfloat16"
    per_device_parallelism: int = -1
    tpu: Optional[str] = None
    require_accelerator: Optional[bool] = None  # None: True iff tpu is set
    max_preemptions: Optional[int] = None  # slice preemptions / lost hosts retried (None: no limit)
    max_failures: int = 1  # retries after an error of the code on some host (steps.training.launch)
    plumbing_run: bool = False
    wandb: Optional[WandbSettings] = None
    component_formats: dict[str, str] = field(default_factory=dict)
    output_path: str = this_output_path()


DATA_FORMATS = ("text", "supervised")


@dataclass(frozen=True)
class Resolved:
    """What a config means: the shape, steps and learning rate actually used."""

    preset: str
    shape: ModelShape
    seq_len: int
    num_steps: int
    learning_rate: float
    lr_width: int


def resolve(config: TrainConfig, vocab_size: Optional[int] = None, hf_shape: Optional[ModelShape] = None) -> Resolved:
    """Check the config and work out the shape, steps and LR. Raises ValueError on bad input."""
    if hf_shape is not None:
        preset_name, shape, lr_width = f"warm-start:{config.warm_start_hf}", hf_shape, hf_shape.hidden
    elif config.shape is not None:
        preset_name, shape, lr_width = "custom", config.shape, config.shape.hidden
    else:
        preset = get_preset(config.preset)
        preset_name, shape, lr_width = preset.name, preset.shape, preset.width_for_lr
    seq_len = config.seq_len or shape.seq_len
    shape = shape.replace(seq_len=seq_len, **({"vocab_size": vocab_size} if vocab_size else {}))
    for mix in filter(None, (config.mixture, config.anneal_mixture)):
        missing = [s for s in mix.active_sources if s not in config.caches]
        if missing:
            raise ValueError(f"TrainConfig.caches: mixture {mix.name!r} samples {missing} but no cache is "
                             f"given for them (caches: {sorted(config.caches)})")
    if config.batch_size <= 0:
        raise ValueError(f"TrainConfig.batch_size must be positive, got {config.batch_size}")
    if config.warm_start_hf and config.initialize_from:
        raise ValueError("TrainConfig: give at most one of warm_start_hf (an HF model, fresh optimizer) and "
                         f"initialize_from (another run's train state); got {config.warm_start_hf!r} and "
                         f"{config.initialize_from!r}")
    if (config.num_steps is None) == (config.token_budget is None):
        raise ValueError("TrainConfig: give exactly one of num_steps and token_budget "
                         f"(got num_steps={config.num_steps}, token_budget={config.token_budget})")
    steps = config.num_steps or math.ceil(config.token_budget / (config.batch_size * seq_len))
    if steps <= 0:
        raise ValueError(f"TrainConfig: the run has {steps} steps; raise num_steps or token_budget")
    lr = config.optimizer.lr(config.batch_size, lr_width)
    return Resolved(preset_name, shape, seq_len, steps, lr, lr_width)
