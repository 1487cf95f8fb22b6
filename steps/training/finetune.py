"""The fine-tune step: a SODA checkpoint trained further on a supervised (loss-masked) cache,
e.g. the S2ST SFT data of steps.s2st.sft_data.

`finetune(config)` is the step fn. It starts from `init_from`, which is either
- a train step's output: its final HF export (`hf/step-N`, which the train step writes by
  default), or, for a run without one (or one of its `checkpoints/step-N`), the Levanter
  checkpoint's *model* written once as an HF directory under `{output}/warm_start/` by Levanter's
  converter in a separate CPU-only process (the step's process supervises the slice's training
  processes and keeps no JAX runtime of its own), or
- an HF export directory (a train step's `hf/step-N`, or a released SODA model),
and then runs the train step (steps.training.train) with `warm_start_hf` pointing there: Levanter's
`initialize_from_hf` loads the weights when the run has no checkpoint of its own, with a fresh
optimizer and a fresh LR schedule. (Levanter's `initialize_from_checkpoint_path` is not used: it
loads the whole pre-training train state, whose optimizer step counter would put the fine-tune's
LR schedule at the pre-training's last step.)

Resume: the run's checkpoints are `{output}/checkpoints/step-N` with the output's basename as
run id, exactly as for pre-training, and Levanter only initialises from the warm start when no
checkpoint of the run exists; so a rerun resumes from the fine-tune's own latest checkpoint, never
from the init model again. The output layout (metrics.jsonl or metrics/part-N.jsonl, train_sessions.jsonl,
hf/step-N, summary.json) is the train step's; the summary adds `init_from`, `init_kind` and the recipe.

The S2ST recipe (`FinetuneRecipe`) is this project's choice; the paper does not publish the
released fine-tune's hyperparameters. Defaults: LR 2e-4 peak, 3% linear warmup then linear
decay to 0, batch 64 sequences, 5,000 steps, AdamW-style betas (0.9, 0.95), eps 1e-8, no weight
decay, clip 1, z-loss 1e-4; sequences at the init model's length, one document per packed segment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

from pipeline import ExecutorStep, ResourceConfig, output_path_of, this_output_path, versioned
from steps.training.optimizer import SodaRecipe
from steps.training.train_config import TrainConfig, WandbSettings
from steps.training.train_output import TrainOutput, is_hf_dir
from pipeline.fileio import atomic_write_json, exists, join
from steps.training.mixtures import Mixture
from steps.training.train import train
from steps.training.warm_start import DONE_MARKER, prepare_warm_start

logger = logging.getLogger(__name__)

SFT_SOURCE = "sft"


@dataclass(frozen=True)
class FinetuneRecipe:
    """Fine-tune hyperparameters (see the module docstring for why these defaults)."""

    learning_rate: float = 2e-4  # peak
    batch_size: int = 64  # sequences per step
    num_steps: int = 5_000
    warmup: float = 0.03  # fraction of steps, linear from 0
    decay: float = 0.97  # fraction of steps of linear decay at the end (warmup + decay = 1: no plateau)
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    z_loss_weight: float = 1e-4
    seq_len: Optional[int] = None  # None: the init model's

    def optimizer(self) -> SodaRecipe:
        """The recipe as the train step's optimizer config (Levanter's Cautious, linear schedule)."""
        return SodaRecipe(learning_rate=self.learning_rate, weight_decay=self.weight_decay, beta1=self.beta1,
                          beta2=self.beta2, epsilon=self.epsilon, warmup=self.warmup, decay=self.decay,
                          min_lr_ratio=self.min_lr_ratio, max_grad_norm=self.max_grad_norm,
                          z_loss_weight=self.z_loss_weight)


@dataclass(frozen=True)
class FinetuneConfig:
    """init_from: a train step's output, a Levanter checkpoint dir, or an HF model dir.
    data: a supervised cache with a `train/` split (and optionally `validation/`, evaluated every
    `steps_per_eval` steps), such as the S2ST SFT data step's output."""

    init_from: str
    data: str
    tokenizer: str
    recipe: FinetuneRecipe = FinetuneRecipe()
    evaluate: bool = True
    seed: int = 0
    checkpoint_every_steps: int = 1_000
    checkpoint_every_minutes: Optional[float] = 15.0
    steps_per_eval: int = 500
    max_eval_batches: Optional[int] = 16
    export_hf: bool = True
    mp: str = "p=f32,c=bfloat16"
    per_device_parallelism: int = -1
    tpu: Optional[str] = None
    require_accelerator: Optional[bool] = None
    max_preemptions: Optional[int] = None  # as TrainConfig: preemptions retried without limit
    max_failures: int = 1
    plumbing_run: bool = False
    wandb: Optional[WandbSettings] = None
    output_path: str = this_output_path()
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in summary.json as is


def init_hf_dir(config: FinetuneConfig) -> tuple[str, str]:
    """(HF directory to warm-start from, "hf" | "levanter"). A Levanter checkpoint's model is
    converted once into `{output}/warm_start` (a rerun finds it there and converts nothing)."""
    import tempfile

    if is_hf_dir(config.init_from):
        return config.init_from, "hf"
    run = TrainOutput.of(config.init_from)
    exported = run.latest_hf_export() if run is not None and run.path == config.init_from.rstrip("/") else None
    if exported:
        return exported, "hf-export"
    warm = join(config.output_path, "warm_start")
    if exists(join(warm, DONE_MARKER)):
        return warm, "levanter"
    with tempfile.TemporaryDirectory(prefix="soda-finetune-init-") as tmp:
        _export_on_cpu(config.init_from, config.tokenizer, tmp)
        logger.info("fine-tune init: Levanter checkpoint of %s -> HF %s", config.init_from, warm)
        prepare_warm_start(tmp, config.tokenizer, warm)
    return warm, "levanter"


def _export_on_cpu(init_from: str, tokenizer: str, out_dir: str) -> None:
    """The latest Levanter checkpoint's model as an HF directory, converted in a child process that
    sees only the CPU (JAX_PLATFORMS=cpu), so this process never opens the host's accelerators."""
    import os
    import subprocess
    import sys

    code = ("import sys; from eval.model import LevanterLM; "
            "LevanterLM(sys.argv[1], tokenizer=sys.argv[2]).export_hf(sys.argv[3])")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("TPU_VISIBLE_CHIPS", None)
    done = subprocess.run([sys.executable, "-c", code, init_from, tokenizer, out_dir], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"converting the Levanter checkpoint of {init_from} to HF failed:\n"
                           f"{done.stderr.strip()[-3000:]}")


def train_config(config: FinetuneConfig, warm_dir: str):
    """The train step's config for this fine-tune."""
    r = config.recipe
    has_eval = config.evaluate and exists(join(config.data, "validation", "shard_ledger.json"))
    return TrainConfig(
        caches={SFT_SOURCE: config.data}, tokenizer=config.tokenizer, mixture=Mixture(
            "sft", ((SFT_SOURCE, 1.0),), "the supervised fine-tune cache only", sources=(SFT_SOURCE,)),
        eval_caches={SFT_SOURCE: config.data} if has_eval else {}, component_formats={SFT_SOURCE: "supervised"},
        seq_len=r.seq_len, batch_size=r.batch_size, num_steps=r.num_steps, optimizer=r.optimizer(),
        seed=config.seed, checkpoint_every_steps=config.checkpoint_every_steps,
        checkpoint_every_minutes=config.checkpoint_every_minutes, steps_per_eval=config.steps_per_eval,
        max_eval_batches=config.max_eval_batches, export_hf=config.export_hf, warm_start_hf=warm_dir, mp=config.mp,
        per_device_parallelism=config.per_device_parallelism, tpu=config.tpu,
        require_accelerator=config.require_accelerator, max_preemptions=config.max_preemptions,
        max_failures=config.max_failures,
        plumbing_run=config.plumbing_run or _init_is_plumbing(config.init_from), wandb=config.wandb,
        output_path=config.output_path)


def _init_is_plumbing(init_from: str) -> bool:
    run = TrainOutput.of(init_from)
    return run is not None and run.is_plumbing()


def finetune(config: FinetuneConfig) -> dict[str, Any]:
    """The step fn: warm start from `init_from` (or resume), train, write summary.json."""
    import dataclasses

    warm_dir, kind = init_hf_dir(config)
    summary = train(train_config(config, warm_dir))
    summary.update({"init_from": config.init_from, "init_kind": kind, "finetune": True,
                    "recipe": dataclasses.asdict(config.recipe), **config.extra})
    atomic_write_json(join(config.output_path, "summary.json"), summary)
    logger.info("fine-tuned %s -> %s (%d steps, final loss %s)", config.init_from, config.output_path,
                summary["steps"], summary["final_loss"])
    return summary


def finetune_step(name: str, init, data, tokenizer, recipe: FinetuneRecipe = FinetuneRecipe(), *,
                  tpu: Optional[str] = None, **options):
    """`name` (e.g. "checkpoints/soda-600m-s2st"): fine-tune `init` (a train step, or an HF dir
    path) on `data` (a supervised cache step). The recipe is versioned; `options` are the
    FinetuneConfig fields that leave the model unchanged (checkpoint cadence, W&B, ...)."""
    init_path = versioned(init) if isinstance(init, str) else output_path_of(init)  # an HF dir: its identity
    config = FinetuneConfig(init_from=init_path, data=output_path_of(data), tokenizer=output_path_of(tokenizer),
                            recipe=versioned(recipe), seed=versioned(options.pop("seed", 0)),
                            mp=versioned(options.pop("mp", "p=f32,c=bfloat16")), tpu=tpu, **options)
    return ExecutorStep(name=name, fn=finetune, config=config,
                        description=f"fine-tune of {getattr(init, 'name', init)} on {data.name}",
                        resources=ResourceConfig(tpu=tpu) if tpu else ResourceConfig(cpus=1))
