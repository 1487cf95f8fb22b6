"""The train step: a SODA decoder trained with Levanter's `train_lm` on tokenize-step caches.

`train(config)` is the step fn. It builds Levanter's `TrainLmConfig` programmatically (model
preset -> Qwen3Config, caches + mixture weights -> LmDataConfig, recipe -> CautiousConfig) and
calls `levanter.main.train_lm.main`, in this process or, when `tpu` is set and Ray is up, on every
host of a TPU slice (steps.training.launch). Then it writes `summary.json`.

Output layout (`output_path`, local or gs://):
    checkpoints/step-N/       Levanter checkpoints; the run id is the output's basename, so a
                              rerun of the step resumes from the latest one (steps.training.train_output)
    metrics.jsonl             one JSON object per logged step (step, train/loss, eval/loss, ...);
    metrics/part-N.jsonl      on gs:// the same rows in immutable chunks (read both: metrics.read_metrics)
    train_sessions.jsonl      one line per (re)start: the first step it logged
    slice_events.jsonl        one line per slice attempt that ended early: preempted / waiting / failed, why
    hf/step-N/                the final model as an HF Qwen3 checkpoint (export_hf)
    warm_start/               the warm-start checkpoint resized to the tokenizer (warm_start_hf)
    summary.json              params_total, params_nonembedding, tokens, training_flops, model,
                              final_loss, steps, preset, plumbing_run, ...
    logs/                     Levanter's log files (local outputs only)

Offline / CPU: the tokenizer is a local directory (data and model converter both use it, so
nothing is fetched from the hub), `require_accelerator` is False unless a TPU is asked for,
MARIN_PREFIX defaults to a local directory, and W&B runs offline without WANDB_API_KEY.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
from typing import Any, Optional

from steps.training import launch, levanter_fixes
from steps.training.accounting import params_nonembedding, params_total, training_flops
from steps.training.mixtures import anneal_start_step, levanter_train_weights
from steps.training.placement import train_placement_problems
from steps.training.train_config import DATA_FORMATS, Resolved, TrainConfig, resolve
from steps.training.train_output import TrainOutput, is_checkpoint
from pipeline import strict_json
from pipeline.fileio import atomic_write_bytes, atomic_write_json, exists, join, local_copy, read_json
from steps.training.launch import distributed_settings_from_env
from steps.training.metrics import SESSIONS_FILE, read_jsonl, read_metrics, tracker_config
from steps.training.optimizer import levanter_optimizer
from steps.training.presets import levanter_config, shape_from_levanter
from steps.training.warm_start import levanter_config_from_hf, prepare_warm_start

logger = logging.getLogger(__name__)

HF_SAVE_NEVER = 10**12  # Levanter's HF hook then only runs when forced, i.e. after the last step


# ---- building Levanter's config -----------------------------------------------------------


def _local_log_dir(output: str) -> str:
    if "://" not in output:
        return os.path.join(output, "logs")
    return os.path.join(tempfile.gettempdir(), "soda-levanter-logs", os.path.basename(output.rstrip("/")))


def _trackers(config: TrainConfig, run_id: str):
    trackers = [tracker_config(config.output_path)]
    if config.wandb is not None:
        from levanter.tracker.wandb import WandbConfig

        mode = config.wandb.mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        trackers.append(WandbConfig(project=config.wandb.project, entity=config.wandb.entity, name=run_id,
                                    id=run_id, tags=list(config.wandb.tags), group=config.wandb.group,
                                    mode=mode, save_code=False))
    return tuple(trackers)


def _format_kwargs(config: TrainConfig, name: str) -> dict[str, Any]:
    """DatasetComponent arguments for cache `name`'s data format (see TrainConfig.component_formats)."""
    fmt = config.component_formats.get(name, "text")
    if fmt not in DATA_FORMATS:
        raise ValueError(f"TrainConfig.component_formats[{name!r}] = {fmt!r}; expected one of {DATA_FORMATS}")
    if fmt == "text":
        return {}
    from levanter.data.text import SupervisedLmDatasetFormat

    return {"format": SupervisedLmDatasetFormat(), "pack": True}


def build_train_lm_config(config: TrainConfig, plan: Resolved, warm_dir: Optional[str] = None,
                          distributed: Optional[dict] = None, init_checkpoint: Optional[str] = None):
    """Levanter's TrainLmConfig for this run."""
    from datetime import timedelta
    from pathlib import Path

    import jmp
    from levanter.checkpoint import CheckpointerConfig
    from levanter.data.text import DatasetComponent, LmDataConfig
    from levanter.distributed import DistributedConfig
    from levanter.main.train_lm import TrainLmConfig
    from levanter.trainer import TrainerConfig

    run_id = os.path.basename(config.output_path.rstrip("/"))
    tokenizer = local_copy(config.tokenizer)  # Levanter and transformers read a tokenizer from real files
    # flat: the train split only, so a cache without a validation/ split is not an error
    components = {name: DatasetComponent(cache_dir=join(path, "train"), source=None, flat_cache=True,
                                         **_format_kwargs(config, name))
                  for name, path in config.caches.items()}
    for name, path in config.eval_caches.items():  # weight 0: read for its validation/ split only
        components[f"eval-{name}"] = DatasetComponent(cache_dir=path, source=None, **_format_kwargs(config, name))
    weights = levanter_train_weights(
        config.mixture, config.anneal_mixture,
        anneal_start_step(plan.num_steps, config.batch_size, config.optimizer.decay) if config.anneal_mixture else 0,
    )
    if isinstance(weights, dict):
        weights = {**{n: 0.0 for n in components}, **weights}
    data = LmDataConfig(tokenizer=tokenizer, components=components, train_weights=weights,
                        auto_build_caches=False, cache_dir=None)
    if warm_dir:
        warm_dir = local_copy(warm_dir)
        model = levanter_config_from_hf(warm_dir, plan.seq_len, tokenizer)
    else:
        model = levanter_config(plan.shape, tokenizer=tokenizer)
    keep = [dict(every=config.checkpoint_every_steps)] if config.checkpoint_every_steps else None
    minutes = config.checkpoint_every_minutes
    checkpointer = CheckpointerConfig(
        base_path=TrainOutput(config.output_path).checkpoints_dir,
        append_run_id_to_base_path=False,
        save_interval=timedelta(minutes=minutes) if minutes else None,
        keep=keep,
    )
    require = config.require_accelerator if config.require_accelerator is not None else bool(config.tpu)
    trainer = TrainerConfig(
        seed=config.seed,
        mp=jmp.get_policy(config.mp),
        id=run_id,
        log_dir=Path(_local_log_dir(config.output_path)),
        log_jaxprs=False,
        log_xla_hlo=False,
        tracker=_trackers(config, run_id),
        train_batch_size=config.batch_size,
        per_device_parallelism=config.per_device_parallelism,
        num_train_steps=plan.num_steps,
        steps_per_eval=config.steps_per_eval,
        max_eval_batches=config.max_eval_batches,
        checkpointer=checkpointer,
        require_accelerator=require,
        distributed=DistributedConfig(**(distributed or {})),
        initialize_from=init_checkpoint,
    )
    return TrainLmConfig(
        data=data,
        trainer=trainer,
        model=model,
        train_seq_len=plan.seq_len,
        optimizer=levanter_optimizer(config.optimizer, config.batch_size, plan.lr_width),
        z_loss_weight=config.optimizer.z_loss_weight,
        initialize_from_hf=warm_dir or False,
        hf_save_path=TrainOutput(config.output_path).hf_dir if config.export_hf else None,
        hf_save_steps=HF_SAVE_NEVER,
    )


# ---- running ------------------------------------------------------------------------------


def _ensure_offline_env(output: str) -> None:
    if "MARIN_PREFIX" not in os.environ:  # else Levanter's filesystem helpers ask GCE metadata
        os.environ["MARIN_PREFIX"] = output if "://" in output else os.path.dirname(os.path.abspath(output))


def train_on_host(config: TrainConfig, plan: Resolved, warm_dir: Optional[str] = None,
                  init_checkpoint: Optional[str] = None) -> dict[str, Any]:
    """Run Levanter's train_lm for this process (one host of a slice, or the only process);
    returns what JAX saw: process count and index, devices, backend."""
    import jax
    from levanter.main.train_lm import main

    _ensure_offline_env(config.output_path)
    distributed = distributed_settings_from_env()
    if distributed:
        # Cross-process collectives on CPU hosts need gloo (JAX's CPU default has none); TPU and
        # GPU backends ignore this setting. It must be set before jax.distributed.initialize.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    lm_config = build_train_lm_config(config, plan, warm_dir, distributed, init_checkpoint)
    levanter_fixes.apply()
    main(lm_config)
    return {"jax_process_count": jax.process_count(), "jax_process_index": jax.process_index(),
            "jax_device_count": jax.device_count(), "jax_local_device_count": jax.local_device_count(),
            "jax_backend": jax.default_backend()}


def _vocab_size(tokenizer: str) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(local_copy(tokenizer)))


def _caches_say_plumbing(caches: dict[str, str]) -> bool:
    for path in caches.values():
        summary = join(path, "summary.json")
        if exists(summary) and read_json(summary).get("plumbing_run"):
            return True
    return False


def train(config: TrainConfig) -> dict[str, Any]:
    """The step fn: train (resuming from the latest checkpoint if any), then write summary.json."""
    _ensure_offline_env(config.output_path)
    vocab = _vocab_size(config.tokenizer)
    warm_dir, hf_shape = None, None
    if config.warm_start_hf:
        warm_dir = prepare_warm_start(config.warm_start_hf, config.tokenizer, join(config.output_path, "warm_start"))
        seq = config.seq_len or 4096
        hf_shape = shape_from_levanter(levanter_config_from_hf(warm_dir, seq, config.tokenizer), vocab)
    plan = resolve(config, vocab_size=vocab, hf_shape=hf_shape)
    init_checkpoint = checkpoint_to_initialize_from(config, plan)
    if init_checkpoint:
        logger.info("train: a run without checkpoints of its own continues from %s", init_checkpoint)
    logger.info("train %s: %s, %d steps x %d x %d tokens, lr %.3g -> %s", plan.preset, plan.shape,
                plan.num_steps, config.batch_size, plan.seq_len, plan.learning_rate, config.output_path)
    if config.tpu and launch.ray_is_up() and not launch.on_slice_host():
        hosts = launch.run_on_slice(train_on_host, (config, plan, warm_dir, init_checkpoint), config.tpu,
                                    max_preemptions=config.max_preemptions, max_failures=config.max_failures,
                                    on_event=lambda event: record_slice_event(config.output_path, event))
    else:
        hosts = [train_on_host(config, plan, warm_dir, init_checkpoint)]
    return write_summary(config, plan, hosts, init_checkpoint)


def checkpoint_to_initialize_from(config: TrainConfig, plan: Resolved) -> Optional[str]:
    """The checkpoint `config.initialize_from` names (see TrainConfig), or None."""
    source = config.initialize_from
    if not source:
        return None
    if is_checkpoint(source):
        return source  # a checkpoint itself
    # an annealed run continues from before its LR decay starts (the schedule's decay start; the data
    # switch, anneal_start_step, is that step rounded up to a mixture block)
    limit = math.ceil(plan.num_steps * (1 - config.optimizer.decay)) if config.anneal_mixture else None
    checkpoints = TrainOutput(source).checkpoints()
    found = [(step, path) for step, path in checkpoints if limit is None or step < limit]
    if not found:
        raise ValueError(f"TrainConfig.initialize_from: {source} has no complete checkpoint"
                         + (f" before step {limit} (where this run's LR decay starts)" if limit is not None else "")
                         + f"; checkpoints there: {[s for s, _ in checkpoints] or 'none'}")
    return found[-1][1]


SLICE_EVENTS_FILE = "slice_events.jsonl"


def record_slice_event(output: str, event) -> None:
    """Add a launch attempt that ended without results (a preemption, a lost host, a retried error) to
    `{output}/slice_events.jsonl`; rewritten whole (object stores cannot append; a run has few)."""
    url = join(output, SLICE_EVENTS_FILE)
    rows = read_jsonl(url) + [dataclasses.asdict(event)]
    atomic_write_bytes(url, "".join(strict_json.dumps(r) + "\n" for r in rows).encode())


def _jax_layout(config: TrainConfig, hosts: list[dict]) -> dict[str, Any]:
    """How the last session ran: JAX processes, devices, backend, and the slice it asked for."""
    first = hosts[0] if hosts else {}
    return {"tpu": config.tpu, "hosts": len(hosts),
            **{k: first.get(k) for k in ("jax_process_count", "jax_device_count", "jax_local_device_count",
                                         "jax_backend")}}


def _slice_event_counts(events: list[dict]) -> dict[str, int]:
    return {"preemptions": sum(e.get("kind") == "preempted" for e in events),
            "failures_retried": sum(e.get("kind") == "failed" for e in events)}


def _loss(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def write_summary(config: TrainConfig, plan: Resolved, hosts: Optional[list[dict]] = None,
                  init_checkpoint: Optional[str] = None) -> dict[str, Any]:
    """`summary.json` of the run; `hosts` are train_on_host's reports, one per JAX process;
    `init_checkpoint` the other run's checkpoint it continued from (checkpoint_to_initialize_from)."""
    rows = read_metrics(config.output_path)  # metrics.jsonl and/or metrics/part-*.jsonl, one row per step
    # A loss that was NaN or inf is null in metrics.jsonl (strict JSON): it stays NaN here, so a diverged
    # run's final loss is written as null and counted under "non_finite", never an earlier finite loss.
    losses = [(r["step"], _loss(r["train/loss"])) for r in rows if "train/loss" in r]
    evals = [(r["step"], _loss(r["eval/loss"])) for r in rows if "eval/loss" in r]
    # Levanter numbers steps from 0: a row at step s is logged after s + 1 optimizer updates.
    steps = max((r["step"] for r in rows), default=-1) + 1
    tokens = steps * config.batch_size * plan.seq_len
    hf_dir = TrainOutput(config.output_path).latest_hf_export() if config.export_hf else None
    summary = {
        "preset": plan.preset,
        "model": dataclasses.asdict(plan.shape),
        "params_total": params_total(plan.shape),
        "params_nonembedding": params_nonembedding(plan.shape),
        "steps": steps,
        "num_train_steps": plan.num_steps,
        "batch_size": config.batch_size,
        "seq_len": plan.seq_len,
        "tokens": tokens,
        "training_flops": training_flops(plan.shape, tokens),
        "learning_rate": plan.learning_rate,
        "mixture": config.mixture.as_dict,
        "mixture_name": config.mixture.name,
        "anneal_mixture": config.anneal_mixture.name if config.anneal_mixture else None,
        "first_loss": losses[0][1] if losses else None,
        "final_loss": losses[-1][1] if losses else None,
        "final_eval_loss": evals[-1][1] if evals else None,
        "sessions": len(read_jsonl(join(config.output_path, SESSIONS_FILE))),
        **_slice_event_counts(read_jsonl(join(config.output_path, SLICE_EVENTS_FILE))),
        "hf_export": hf_dir,
        "warm_start": config.warm_start_hf,
        "initialized_from": init_checkpoint,
        "plumbing_run": bool(config.plumbing_run or _caches_say_plumbing(config.caches)),
        **_jax_layout(config, hosts or []),
    }
    atomic_write_json(join(config.output_path, "summary.json"), summary)
    logger.info("trained %s: %d steps, %.3g tokens, final loss %s -> %s", plan.preset, steps, tokens,
                summary["final_loss"], config.output_path)
    return summary


# Where the step can run (batch over the slice's devices, memory per device), asked by the executor
# before anything starts; see steps/training/placement.py.
train.placement_problems = train_placement_problems
