"""The eval step: one task of the paper's evaluation suite on one model (shared/reference.md section 8).

    sblimp = eval_step("sblimp", trained, raw_sblimp)        # trained: a train step; raw_sblimp: a raw/ step
    nll = eval_step("validation_nll", trained, raw_librispeech)

`evaluate(config)` is the step fn. The model is a train step's output (Levanter checkpoint, scored
in JAX; generation runs on its HF conversion), a `checkpoints/step-N` directory, or an HF export
dir (torch, cuda if present). The task comes from the registry `eval.tasks.TASKS`; its data
from `dataset_path`, a raw/ download step's output or a local fixture (eval.fixtures).

Output (`output_path`, local or gs://):
    examples/part-NNNNN.jsonl  per-example outputs, one chunk per file (a rerun skips finished chunks)
    audio/{id}.flac            generated TTS audio (save_audio=True)
    summary.json               {"task", "metrics": {name: value}, "convention": {...}, "n", "model",
                                "dataset", "plumbing_run", "skipped", "config", ...}
The scaling analysis reads summary["metrics"]; validation NLL is task "validation_nll" with
headline metric "nll_asr_all".
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

from pipeline import ExecutorStep, InputName, ResourceConfig, output_path_of, this_output_path, versioned
from steps.training.train_output import TrainOutput
from eval.judges import describe_sim_judge, is_random_judge
from eval.model import load_scoring_model
from eval.session import find_tokenizer_dir
from eval.tasks import TASKS, get_task
from eval.tasks.common import EvalContext
from pipeline.cli_checks import first_problem, input_dir_problem, number_problem
from pipeline.fileio import atomic_write_json, exists, join, read_json

logger = logging.getLogger(__name__)

JUDGED_TASKS = ("tts", "s2st")  # scored by the ASR and speaker judges (eval.judges)


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation. Defaults are the paper's protocol (reference.md section 8).

    model_path: a train step's output, one Levanter checkpoint dir, or an HF model dir.
    backend: "auto" (HF dir -> torch; train output -> Levanter), "levanter", or "hf" (a train
      output's hf/ export).
    dataset_path: the task's data (a raw/ download or an eval.fixtures directory).
    codebooks: audio pair tasks only: score codebooks 0..k-1 (frame-major); None: all 8.
    input_codebooks: audio pair tasks only: the model reads audio of codebooks 0..k-1 only (a model
      trained on such documents, e.g. the token-composition ablation's S model: codebook 0); every
      token of that audio is scored. None: all 8. Not with `codebooks`.
    mimi_model: "kyutai/mimi", a local Mimi dir, or "random" (plumbing run).
    tts_asr_judge / tts_sim_judge: HF ids or local dirs (eval.judges); the s2st task's judges too. The SIM
      judge: seed-tts-eval's `wavlm_large_finetune.pth` (WavLM-large + ECAPA-TDNN; a path, or the bare name
      in ~/.cache/soda/judges/), or a WavLMForXVector id/dir such as "microsoft/wavlm-base-plus-sv".
    whisper_normalizer: where Whisper's normalizer.json is (file, dir, or HF id in the cache).
    """

    task: str
    model_path: str
    dataset_path: str
    output_path: str = this_output_path()
    backend: str = "auto"
    tokenizer: Optional[str] = None  # None: the model's own (HF export / train run)
    split: Optional[str] = None  # LibriSpeech: None -> test-clean (asr) / dev-clean (validation_nll)
    batch_size: int = 8
    chunk_size: int = 64
    seed: int = 0
    max_examples: Optional[int] = None
    codebooks: Optional[int] = None
    input_codebooks: Optional[int] = None
    mimi_model: str = "kyutai/mimi"
    mimi_config_overrides: Optional[dict] = None
    mimi_batch_size: int = 16
    device: Optional[str] = None
    asr_temperature: float = 0.5
    asr_top_p: float = 0.8
    asr_max_new_tokens: int = 200
    tts_temperature: float = 0.9
    tts_top_p: float = 0.8
    tts_max_new_tokens: int = 1500
    s2st_temperature: float = 0.9
    s2st_top_p: float = 0.8
    s2st_max_new_tokens: int = 2000
    tts_asr_judge: str = "openai/whisper-large-v3"
    tts_sim_judge: str = "wavlm_large_finetune.pth"
    whisper_normalizer: Optional[str] = "openai/whisper-large-v3"
    save_audio: bool = False
    nll_lowercase: bool = False
    plumbing_run: bool = False


def _model_summary(model) -> Optional[dict]:
    """The train step's summary.json for the scored model, if it came from one."""
    summary = getattr(model, "summary", None)
    if summary is not None:
        return summary
    run = TrainOutput.of(getattr(model, "source", ""))
    return run.summary() if run is not None else None


def check_codebooks(config: EvalConfig) -> None:
    """Refuse codebook settings that cannot mean anything, naming the field."""
    for name in ("codebooks", "input_codebooks"):
        k = getattr(config, name)
        if k is not None and not 1 <= k <= 8:
            raise ValueError(f"EvalConfig.{name} must be in 1..8 (Mimi's codebooks), got {k}")
    if config.codebooks is not None and config.input_codebooks is not None:
        raise ValueError("EvalConfig: give codebooks (score part of 8-codebook input) or input_codebooks (the model "
                         f"reads only those codebooks), not both; got {config.codebooks} and {config.input_codebooks}")


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """The step fn: run `config.task` and write per-example outputs and summary.json."""
    spec = get_task(config.task)
    check_codebooks(config)
    out = join(config.output_path, "summary.json")
    if exists(out):
        logger.info("eval %s already done: %s", config.task, out)
        return read_json(out)
    started = time.time()
    model = load_scoring_model(config.model_path, config.backend, config.tokenizer, config.device)
    ctx = EvalContext(config, model, find_tokenizer_dir(model, config.tokenizer, config.model_path), config.output_path)
    result = spec.fn()(ctx)

    train = _model_summary(model) or {}
    used_mimi = ctx.mimi_loaded
    random_judges = spec.name in JUDGED_TASKS and (is_random_judge(config.tts_asr_judge)
                                                   or is_random_judge(config.tts_sim_judge))
    reasons = [r for r, on in (("config", config.plumbing_run), ("random Mimi", used_mimi and ctx.mimi_is_random),
                               ("model trained on plumbing data", bool(train.get("plumbing_run"))),
                               ("random-init judges", random_judges)) if on]
    summary = {
        "task": spec.name,
        "metrics": result.metrics,
        "convention": result.convention,
        "n": result.n,
        "model": config.model_path,
        "model_backend": model.backend,
        "model_source": model.source,
        "dataset": config.dataset_path,
        "data": spec.data,
        "plumbing_run": bool(reasons),
        "plumbing_reasons": reasons,
        "skipped": ctx.stats.skipped,
        "skipped_examples": ctx.stats.skipped_ids,
        "train": {k: train.get(k) for k in ("preset", "params_total", "params_nonembedding", "tokens",
                                             "training_flops", "steps")} if train else None,
        "seconds": round(time.time() - started, 3),
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "output_path"},
        **result.extra,
    }
    if spec.name in JUDGED_TASKS:
        summary["judges"] = result.convention["judges"]
        summary["sim_judge"] = result.extra.get("sim_judge") or describe_sim_judge(config.tts_sim_judge)
    atomic_write_json(out, summary)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in list(result.metrics.items())[:4])
    logger.info("eval %s on %s: n=%d, %s%s -> %s", spec.name, config.model_path, result.n, shown,
                " (plumbing run)" if reasons else "", config.output_path)
    return summary


# ---- declaring steps --------------------------------------------------------------------------

# fields that do not change what is computed (never versioned)
_UNVERSIONED = {"batch_size", "chunk_size", "device", "mimi_batch_size", "save_audio", "tokenizer", "backend"}


def eval_step(task: str, model, dataset, name: Optional[str] = None, gpus: float = 0.0, **overrides):
    """An `evaluation/<task>-<model>` step. `model` / `dataset`: an ExecutorStep (its output) or a
    path. gpus: what the step asks of the cluster (torch scoring uses cuda when it gets one).
    Overrides are EvalConfig fields; those that change results enter the step's hash. A path-valued
    override (`tokenizer`, `tts_asr_judge`, `tts_sim_judge`, ...) may be a step or a step's sub-path
    (`judges / "random-whisper"`): the eval then depends on that step, whose own hash covers it."""
    spec = get_task(task)

    def ref(x):
        return output_path_of(x) if isinstance(x, ExecutorStep) else x

    fields = {f.name for f in dataclasses.fields(EvalConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise TypeError(f"eval_step: unknown EvalConfig field(s) {bad}")
    overrides = {k: ref(v) for k, v in overrides.items()}
    kw = {k: (v if k in _UNVERSIONED or v is None or isinstance(v, InputName) else versioned(v))
          for k, v in overrides.items()}
    model_name = model.name.rsplit("/", 1)[-1] if isinstance(model, ExecutorStep) else "model"
    return ExecutorStep(
        name=name or f"evaluation/{spec.name}-{model_name}",
        fn=evaluate,
        config=EvalConfig(task=versioned(spec.name), model_path=ref(model), dataset_path=ref(dataset), **kw),
        description=f"{spec.name} ({spec.data}) on {model_name}",
        resources=ResourceConfig(cpus=1, gpus=gpus),
    )


# ---- CLI ----------------------------------------------------------------------------------------


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="soda evaluate", description="Run one SODA eval task on a model.")
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--model", required=True, help="train step output, checkpoint dir, or HF model dir")
    parser.add_argument("--data", required=True, help="the task's raw/ download or local fixture dir")
    parser.add_argument("--out", required=True, help="output directory (local or gs://)")
    parser.add_argument("--backend", default="auto", choices=["auto", "levanter", "hf"])
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--max-examples", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--codebooks", type=int, default=None)
    parser.add_argument("--mimi", default="kyutai/mimi", help="Mimi HF id / dir, or 'random' (plumbing)")
    parser.add_argument("--asr-judge", default=EvalConfig.tts_asr_judge)
    parser.add_argument("--sim-judge", default=EvalConfig.tts_sim_judge)
    args = parser.parse_args(argv)
    problem = _cli_problem(args)
    if problem:  # before any model loads
        print(f"soda evaluate: {problem}", file=sys.stderr)
        return 2
    summary = evaluate(EvalConfig(task=args.task, model_path=args.model, dataset_path=args.data,
                                  output_path=args.out, backend=args.backend, tokenizer=args.tokenizer,
                                  max_examples=args.max_examples, batch_size=args.batch_size, seed=args.seed,
                                  codebooks=args.codebooks, mimi_model=args.mimi, tts_asr_judge=args.asr_judge,
                                  tts_sim_judge=args.sim_judge))
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in summary["metrics"].items())
    print(f"{summary['task']} (n={summary['n']}{', plumbing run' if summary['plumbing_run'] else ''}): {metrics}")
    print(f"wrote {args.out}/summary.json")
    return 0


def _cli_problem(args) -> Optional[str]:
    return first_problem(
        input_dir_problem(args.model, "--model"),
        input_dir_problem(args.data, "--data"),
        args.tokenizer and input_dir_problem(args.tokenizer, "--tokenizer"),
        number_problem("--max-examples", args.max_examples, minimum=1),
        number_problem("--batch-size", args.batch_size, minimum=1),
        number_problem("--seed", args.seed, minimum=0),
        number_problem("--codebooks", args.codebooks, minimum=1, maximum=8),
    )
