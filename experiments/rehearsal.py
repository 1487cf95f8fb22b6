"""The rehearsal scale: a production DAG shrunk to toy size, every step and edge kept.

`soda rehearse SCRIPT` (infra/rehearse.py) runs an experiment script with `--rehearsal`; the
scripts' shared main (experiments/main.py) then passes the declared steps through
`rehearsal_dag`, which rewrites each step by its function (a registry, `RULES`), never by
branches inside experiment scripts:

- **training** (`steps.training.train.train`): the model becomes a tiny decoder of the same family
  (Qwen3 shape, QK-norm, untied as declared, the full SODA vocabulary) whose width follows the
  declared model's (width / 16, two layers); `train_steps` steps of `batch_size` x `seq_len`
  tokens, a permanent checkpoint every `checkpoint_every_steps`, the HF export kept. The TPU slice
  becomes the smallest multi-host slice of the same generation (`rehearsal_slice`: v5p-* -> v5p-16,
  2 hosts of 4 chips), so training still goes through the per-host launch and JAX's multi-process
  runtime.
- **fine-tuning** (`steps.training.finetune.finetune`): the recipe's batch and steps as for training,
  sequences of `finetune_seq_len` (S2ST documents hold both sides' audio), the rehearsal slice.
- **Mimi encoding** (`steps.encode.encode_speech`, the S2ST SFT data): the random-weight Mimi, and SFT
  documents of at most `finetune_seq_len` tokens.
- **evaluation** (`steps.evaluate.evaluate`): at most `eval_examples` examples per task, short
  generations, the random-weight Mimi (`kyutai/mimi` is on the Hub), and random-init TTS judges made
  by one added step, `judges/random-init` (Whisper is on the Hub, the WavLM + ECAPA speaker model a download).
- **Hub models** as a tokenizer's base or a warm start's checkpoint (`Qwen/Qwen3-0.6B-Base`): one
  added step per model id, `hub/<id>`, writes a tiny random Qwen3 checkpoint with a Qwen-style
  tokenizer in the Hub's layout (steps.stand_ins); the tokenizer build and the warm start read it
  as they would the real one. A warm-started run keeps the stand-in's own (tiny) shape.
- **sweeps** (`run_scaling_analysis`, `run_correlation`): of the runs that carry an IsoFLOP budget, each
  budget keeps `sweep_points_per_budget` of its points, the middle ones of its width range, so every
  budget and every kind of step stays while most grid points (and their evaluations) drop out of the
  DAG. Runs without a budget label (the final models) are all kept. With one point per budget the
  fits have no parabola: the analysis records Approach 2 as not fitted and fits Approach 3.
- everything else (downloads, documents, the tokenizer, token caches) runs as declared.

What stays real: every step function, every dependency, the object-store prefix, the data layouts
(from the dataset mirror), the slice launch. What does not: model and data scale, hardware, the Hub.
Every rewritten value is `versioned`, so a rehearsal's outputs never share a path with a real run's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from eval.judges import RandomJudgesConfig, make_random_judges_step
from experiments.defaults import RANDOM_JUDGES, RANDOM_MIMI
from pipeline import ExecutorStep, ResourceConfig, output_path_of, unwrap_versioned, versioned
from pipeline.rewrite import rewrite_dag
from steps.encode import encode_speech
from steps.evaluate import evaluate
from steps.s2st.sft_data import build_s2st_sft_data
from steps.scaling.analysis import run_correlation, run_scaling_analysis
from steps.training.accounting import ModelShape
from steps.training.launch import slice_spec
from steps.stand_ins import StandInCheckpointConfig, stand_in_checkpoint_step
from steps.training.finetune import finetune
from steps.training.train import train
from tokenizer.build import LLAMA3, build_tokenizer_step
from steps.training.presets import get_preset


@dataclass(frozen=True)
class RehearsalScale:
    """How small a rehearsal is. The defaults run exp1699 on 2 CPU cores in minutes."""

    train_steps: int = 8
    batch_size: int = 8  # divides the rehearsal slice's 8 devices
    seq_len: int = 128
    checkpoint_every_steps: int = 4  # a permanent checkpoint mid-run and the final one
    width_divisor: int = 16
    min_width: int = 32
    layers: int = 2
    eval_examples: int = 4
    tts_max_new_tokens: int = 48
    asr_max_new_tokens: int = 12
    s2st_max_new_tokens: int = 48
    min_hosts_per_slice: int = 2  # the JAX multi-process runtime needs at least two processes
    sweep_points_per_budget: int = 1
    finetune_seq_len: int = 1024


def rehearsal_slice(tpu_type: str, min_hosts: int = RehearsalScale.min_hosts_per_slice) -> str:
    """The smallest slice of `tpu_type`'s generation with at least `min_hosts` hosts (v5p-256 -> v5p-16)."""
    spec = slice_spec(tpu_type)
    size = 1
    while size <= 1 << 16:
        candidate = f"{spec.generation}-{size}"
        try:
            if slice_spec(candidate).hosts >= min_hosts:
                return candidate
        except ValueError:  # no whole chip at this size
            pass
        size *= 2
    raise ValueError(f"no slice of generation {spec.generation} has {min_hosts} hosts")


def tiny_shape(shape: ModelShape, scale: RehearsalScale) -> ModelShape:
    """A decoder of the same family as `shape`, `width_divisor` times narrower, `scale.layers` deep."""
    hidden = max(scale.min_width, (shape.hidden // scale.width_divisor) // 16 * 16)
    heads = 2
    kv_heads = 1 if shape.kv_heads < shape.heads else heads  # grouped-query attention stays grouped
    return ModelShape(hidden=hidden, intermediate=3 * hidden, layers=scale.layers, heads=heads, kv_heads=kv_heads,
                      head_dim=hidden // heads, seq_len=scale.seq_len, vocab_size=shape.vocab_size,
                      tied_embeddings=shape.tied_embeddings, qk_norm=shape.qk_norm)


def _declared_shape(config) -> Optional[ModelShape]:
    shape = unwrap_versioned(config.shape)
    if shape is not None:
        return shape
    if unwrap_versioned(config.warm_start_hf):
        return None
    return get_preset(unwrap_versioned(config.preset)).shape


class _Rewriter:
    """The rules, sharing the steps a rehearsal adds (the random judges)."""

    def __init__(self, scale: RehearsalScale):
        self.scale = scale
        self._judges: Optional[ExecutorStep] = None
        self._stand_ins: dict[str, ExecutorStep] = {}

    def stand_in(self, hub_id: str) -> ExecutorStep:
        """The added step standing in for Hub model `hub_id` (one per id)."""
        hub_id = hub_id[len("hf://"):] if hub_id.startswith("hf://") else hub_id
        if hub_id not in self._stand_ins:
            self._stand_ins[hub_id] = ExecutorStep(
                name=f"hub/{hub_id.replace('/', '--')}", fn=stand_in_checkpoint_step,
                config=StandInCheckpointConfig(stands_for=versioned(hub_id), seed=versioned(0)),
                description=f"a tiny random Qwen3 standing in for {hub_id} (rehearsal: the Hub is not reachable)")
        return self._stand_ins[hub_id]

    def judges(self) -> ExecutorStep:
        if self._judges is None:
            self._judges = ExecutorStep(
                name="judges/random-init", fn=make_random_judges_step, config=RandomJudgesConfig(seed=versioned(0)),
                description="random-init Whisper and WavLM judges (rehearsal: the real judges are on the Hub)",
                plumbing=RANDOM_JUDGES)
        return self._judges

    def train(self, step: ExecutorStep) -> ExecutorStep:
        s, config = self.scale, step.config
        shape = _declared_shape(config)
        warm = unwrap_versioned(config.warm_start_hf)
        if shape is None:  # a warm start: the stand-in checkpoint is tiny already, and its shape is the model's
            config = dataclasses.replace(config, warm_start_hf=output_path_of(self.stand_in(warm)) if _on_hub(warm)
                                         else config.warm_start_hf)
        else:
            config = dataclasses.replace(config, shape=versioned(tiny_shape(shape, s)))
        config = dataclasses.replace(config, seq_len=versioned(s.seq_len), batch_size=versioned(s.batch_size),
                                     num_steps=versioned(s.train_steps), token_budget=versioned(None))
        return self._on_rehearsal_slice(step, config)

    def _on_rehearsal_slice(self, step: ExecutorStep, config) -> ExecutorStep:
        """A training step (pre-training or fine-tune) with `config`, on the rehearsal's slice and CPU hosts,
        checkpointing on the rehearsal's cadence."""
        s = self.scale
        tpu = rehearsal_slice(config.tpu, s.min_hosts_per_slice) if config.tpu else None
        config = dataclasses.replace(config, tpu=tpu, require_accelerator=False,  # the rehearsal's hosts are CPUs
                                     checkpoint_every_steps=s.checkpoint_every_steps, checkpoint_every_minutes=None,
                                     steps_per_eval=10 * s.train_steps)
        resources = step.resources or ResourceConfig()
        resources = dataclasses.replace(resources, tpu=tpu) if tpu else resources
        return dataclasses.replace(step, config=config, resources=resources,
                                   description=f"[rehearsal] {step.description or step.name}")

    def evaluate(self, step: ExecutorStep) -> ExecutorStep:
        s = self.scale
        judges = self.judges()
        config = dataclasses.replace(
            step.config, max_examples=versioned(s.eval_examples), mimi_model=versioned("random"),
            tts_asr_judge=output_path_of(judges, "random-whisper"), tts_sim_judge=output_path_of(judges, "random-wavlm-ecapa"),
            whisper_normalizer=None, tts_max_new_tokens=versioned(s.tts_max_new_tokens),
            asr_max_new_tokens=versioned(s.asr_max_new_tokens), s2st_max_new_tokens=versioned(s.s2st_max_new_tokens),
            plumbing_run=versioned(True))
        return dataclasses.replace(step, config=config, description=f"[rehearsal] {step.description or step.name}",
                                   plumbing=RANDOM_JUDGES)

    def finetune(self, step: ExecutorStep) -> ExecutorStep:
        s, config = self.scale, step.config
        recipe = dataclasses.replace(unwrap_versioned(config.recipe), batch_size=s.batch_size, num_steps=s.train_steps,
                                     seq_len=s.finetune_seq_len)
        return self._on_rehearsal_slice(step, dataclasses.replace(config, recipe=versioned(recipe)))

    def mimi(self, step: ExecutorStep) -> ExecutorStep:
        changes = {"mimi_model": versioned("random")}
        if hasattr(step.config, "max_document_tokens"):  # SFT documents must fit the fine-tune's sequences
            changes["max_document_tokens"] = versioned(self.scale.finetune_seq_len)
        return dataclasses.replace(step, config=dataclasses.replace(step.config, **changes),
                                   description=f"[rehearsal] {step.description or step.name}", plumbing=RANDOM_MIMI)

    def tokenizer(self, step: ExecutorStep) -> ExecutorStep:
        base = unwrap_versioned(step.config.base)
        if not _on_hub(base):
            return step
        return dataclasses.replace(step, config=dataclasses.replace(step.config, base=output_path_of(self.stand_in(base))),
                                   description=f"[rehearsal] {step.description or step.name}")

    def sweep(self, step: ExecutorStep) -> ExecutorStep:
        runs = sweep_points(step.config.runs, self.scale.sweep_points_per_budget)
        return dataclasses.replace(step, config=dataclasses.replace(step.config, runs=runs))


def _on_hub(ref) -> bool:
    """Whether `ref` names a Hub model (`org/name`, `hf://org/name`) rather than a path or an output."""
    import os

    if not isinstance(ref, str) or ref == LLAMA3:
        return False
    if ref.startswith("hf://"):
        return True
    return "://" not in ref and not ref.startswith(("/", ".")) and ref.count("/") == 1 and not os.path.exists(ref)


def sweep_points(runs: Sequence, per_budget: int) -> tuple:
    """The runs a rehearsal keeps: every run without a budget label, and of each budget's runs (in
    declared order, i.e. by width) the `per_budget` in the middle."""
    by_budget: dict[float, list] = {}
    for run in runs:
        if run.budget:
            by_budget.setdefault(run.budget, []).append(run)
    kept = set()
    for group in by_budget.values():
        start = max(0, (len(group) - per_budget) // 2)
        kept.update(id(run) for run in group[start:start + per_budget])
    return tuple(run for run in runs if not run.budget or id(run) in kept)


# step function -> the rule that shrinks it (a registry, not an if-chain over names)
RULES: dict[Callable, Callable[[_Rewriter, ExecutorStep], ExecutorStep]] = {
    train: _Rewriter.train,
    evaluate: _Rewriter.evaluate,
    finetune: _Rewriter.finetune,
    encode_speech: _Rewriter.mimi,
    build_s2st_sft_data: _Rewriter.mimi,
    build_tokenizer_step: _Rewriter.tokenizer,
    run_scaling_analysis: _Rewriter.sweep,
    run_correlation: _Rewriter.sweep,
}


def rehearsal_dag(steps: Sequence[ExecutorStep], scale: RehearsalScale = RehearsalScale()) -> list[ExecutorStep]:
    """The DAG under `steps` at rehearsal scale (see the module docstring)."""
    rewriter = _Rewriter(scale)

    def rule(step: ExecutorStep) -> ExecutorStep:
        shrink = RULES.get(step.fn)
        return shrink(rewriter, step) if shrink else step

    return rewrite_dag(steps, rule)
