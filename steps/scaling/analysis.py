"""Executor steps of the scaling analysis: fits + plots, and NLL-vs-downstream correlations.

Inputs (contracts with the train and eval steps; the executor fills the paths):

    RunRef(budget=3e18, train=<train step output>, evals={"validation_nll": <eval output>, ...})

- `{train}/summary.json` (train step): {"params_total": int, "params_nonembedding": int,
  "tokens": int, "training_flops": float, "model": {ModelShape fields}, ...}.
- `{eval}/summary.json` (each eval step): {"task": str, "metrics": {name: number, ...}, ...}.
  The validation-NLL eval has task "validation_nll"; its metric `nll_asr_all` (the paper's
  NLL_1) is the loss the fits use (`nll_task`, `nll_metric` change that).
- Downstream metrics are named "{evals key}/{metric}" (e.g. "asr/wer"), so two evals of one
  task (ASR at two temperatures) stay apart. Non-numeric metric values are ignored.
Instead of RunRefs, `runs_csv` (scaling) or `metrics_csv` (correlation) read a table, so
published or external runs can be analysed: see steps/scaling/runs.py for the runs CSV; the
metrics CSV has a `name` column, a column named `nll_metric`, and one column per metric
(empty cell: missing).

Outputs, under the step's output path:
- scaling: fits.json (steps/scaling/fit.py's dict), runs.csv (the fitted table),
  isoflop_curves / optimal_allocation / loss_predictions .png and .svg, summary.json.
- correlation: correlations.json, correlations.md (the paper's table), nll_vs_metrics .png
  and .svg, summary.json.
Runs without a usable NLL are left out of the fits and listed in summary.json under
`skipped`; runs missing a metric are left out of that metric's correlation only. Both steps
are cheap and recompute everything on a rerun; files are written through a temporary name
and summary.json is written last.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Optional

from pipeline import strict_json
from pipeline.step import this_output_path
from steps.scaling.runs import RunsError, read_runs_csv, runs_from_rows, runs_to_csv
from steps.scaling import plots
from steps.scaling.correlate import as_markdown, correlate
from steps.scaling.fit import fit_scaling, law_from_fit, predict_at_k

logger = logging.getLogger(__name__)

NLL_TASK = "validation_nll"
NLL_METRIC = "nll_asr_all"


@dataclass(frozen=True)
class RunRef:
    """One trained model: its IsoFLOP budget label, train output dir, eval output dirs by name.

    `budget` 0 means "no grid label": the run's own training FLOPs (its summary.json) stand in, as
    for the final SODA models, which correlations compare but no IsoFLOP fit reads."""

    budget: float
    train: str
    evals: dict[str, str] = field(default_factory=dict)
    name: str = ""  # default: the train dir's basename


@dataclass(frozen=True)
class ScalingAnalysisConfig:
    output_path: str = this_output_path()
    runs: tuple[RunRef, ...] = ()
    runs_csv: Optional[str] = None
    final_runs: tuple[RunRef, ...] = ()  # e.g. the SODA models, shown on the prediction plot only
    params: str = "nonembedding"  # or "total": which count is N
    nll_task: str = NLL_TASK
    nll_metric: str = NLL_METRIC
    bootstrap: int = 1000
    seed: int = 0
    level: float = 0.95
    huber_delta: float = 1e-3
    predict_ks: tuple[float, ...] = (1.0, 5.0, 20.0, 100.0)
    predict_compute: tuple[float, ...] = (1e20, 1e21, 1e22, 1e23)  # C = 6ND, for fits.json
    extrapolate_to: float = 1e23


@dataclass(frozen=True)
class CorrelationConfig:
    output_path: str = this_output_path()
    runs: tuple[RunRef, ...] = ()
    metrics_csv: Optional[str] = None
    highlight: tuple[RunRef, ...] = ()  # shown as stars, not part of the correlations
    nll_task: str = NLL_TASK
    nll_metric: str = NLL_METRIC
    metrics: Optional[tuple[str, ...]] = None  # default: every metric found


# ---------------------------------------------------------------- reading

def _read_json(path: str) -> Optional[dict]:
    import fsspec

    try:
        with fsspec.open(path, "r") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise RunsError(f"{path}: not valid JSON ({e}); rerun the step that writes it") from None


def _name(ref: RunRef) -> str:
    return ref.name or ref.train.rstrip("/").rsplit("/", 1)[-1]


def _number(x) -> Optional[float]:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def read_run(ref: RunRef, nll_task: str = NLL_TASK, nll_metric: str = NLL_METRIC) -> tuple[dict, dict, Optional[str]]:
    """(row for the fits, downstream metrics, reason the run cannot be fitted or None)."""
    name = _name(ref)
    train_path = f"{ref.train.rstrip('/')}/summary.json"
    train = _read_json(train_path)
    if train is None:
        raise RunsError(f"run {name}: {train_path} does not exist; the train step has not finished")
    for key in ("params_total", "params_nonembedding", "tokens"):
        if _number(train.get(key)) is None:
            raise RunsError(f"run {name}: {train_path} lacks a numeric {key!r}; it has {sorted(train)}")
    budget = ref.budget or _number(train.get("training_flops"))
    if not budget:
        raise RunsError(f"run {name}: no budget given and {train_path} has no numeric 'training_flops'")
    row = {"name": name, "budget": budget, "tokens": train["tokens"],
           "params_total": train["params_total"], "params_nonembedding": train["params_nonembedding"],
           "training_flops": train.get("training_flops", ""), "loss": None}
    metrics: dict[str, float] = {}
    problem = None
    for key, path in sorted(ref.evals.items()):
        summary_path = f"{path.rstrip('/')}/summary.json"
        summary = _read_json(summary_path)
        if summary is None:
            logger.warning("run %s: %s missing; its metrics are left out", name, summary_path)
            if key == nll_task:
                problem = f"{summary_path} missing"
            continue
        values = summary.get("metrics") or {}
        if summary.get("task") == nll_task:
            row["loss"] = _number(values.get(nll_metric))
            if row["loss"] is None or row["loss"] <= 0:
                problem = f"{summary_path}: metrics.{nll_metric} is {values.get(nll_metric)!r}"
            continue
        metrics.update({f"{key}/{m}": v for m, v in values.items() if _number(v) is not None})
    if row["loss"] is None and problem is None:
        problem = f"no eval with task {nll_task!r} among {sorted(ref.evals)}"
    return row, metrics, problem


def _runs_from_refs(refs, params: str, nll_task: str, nll_metric: str, source: str):
    rows, skipped, tables = [], [], {}
    for ref in refs:
        row, metrics, problem = read_run(ref, nll_task, nll_metric)
        tables[row["name"]] = {nll_metric: row["loss"], **metrics} if row["loss"] else metrics
        if problem:
            skipped.append({"run": row["name"], "reason": problem})
            logger.warning("run %s skipped: %s", row["name"], problem)
            continue
        rows.append({**row, "params": row[f"params_{params}"]})
    runs = runs_from_rows(rows, source=source) if rows else None
    return runs, skipped, tables


# ---------------------------------------------------------------- steps

def run_scaling_analysis(config: ScalingAnalysisConfig) -> None:
    if config.params not in ("nonembedding", "total"):
        raise ValueError(f"ScalingAnalysisConfig.params must be 'nonembedding' or 'total', got {config.params!r}")
    if bool(config.runs) == bool(config.runs_csv):
        raise ValueError("ScalingAnalysisConfig: give exactly one of `runs` (RunRefs) or `runs_csv`")
    out = config.output_path.rstrip("/")
    skipped: list[dict] = []
    if config.runs_csv:
        runs = read_runs_csv(config.runs_csv)
    else:
        runs, skipped, _ = _runs_from_refs(config.runs, config.params, config.nll_task, config.nll_metric,
                                           "scaling-analysis runs")
        if runs is None:
            raise RunsError(f"no run has a usable NLL: {skipped}")
    final, _, _ = _runs_from_refs(config.final_runs, config.params, config.nll_task, config.nll_metric,
                                  "final runs")
    fits = fit_scaling(runs, params_kind=config.params, bootstrap=config.bootstrap, seed=config.seed,
                       level=config.level, huber_delta=config.huber_delta)
    law = law_from_fit(fits)
    fits["predictions"] = [predict_at_k(law, c, k) for k in config.predict_ks for c in config.predict_compute]
    plots.write_bytes(f"{out}/fits.json", strict_json.dumps(fits, indent=2).encode())
    extra = sorted({k for e in runs.extra for k in e if k != "name"})
    plots.write_bytes(f"{out}/runs.csv", runs_to_csv(runs, extra).encode())
    a2, a3 = fits["approach2"], fits["approach3"]
    a2_error = a2.get("error")
    written = [] if a2_error else [*plots.plot_isoflop_curves(runs, a2, out),
                                   *plots.plot_optimal_allocation(a2, out, config.extrapolate_to)]
    written += plots.plot_loss_predictions(law, runs, out, config.predict_ks, final)
    summary = {
        "runs": len(runs), "budgets": fits["budgets"], "params_kind": config.params, "skipped": skipped,
        "approach2": a2 if a2_error else {k: a2[k] for k in ("n_exponent", "n_coefficient", "d_exponent",
                                                                 "d_coefficient")},
        "approach3": {k: a3[k] for k in ("E", "A", "B", "alpha", "beta", "n_exponent", "d_exponent")},
        "intervals": {"approach2": a2.get("intervals"), "approach3": a3.get("intervals")},
        "files": ["fits.json", "runs.csv", *(p.rsplit("/", 1)[-1] for p in written)],
        **({"approach2_error": a2_error} if a2_error else {}),
    }
    plots.write_bytes(f"{out}/summary.json", strict_json.dumps(summary, indent=2).encode())
    shown = (f"approach 2 not fitted ({a2_error})" if a2_error else
             f"N* ~ C^{a2['n_exponent']:.3f}, D* ~ C^{a2['d_exponent']:.3f} (approach 2)")
    logger.info("scaling analysis of %d runs (%d skipped): %s; alpha %.3f, beta %.3f (approach 3) -> %s",
                len(runs), len(skipped), shown, a3["alpha"], a3["beta"], out)


def _table_from_csv(path: str, nll_metric: str) -> dict[str, dict[str, float]]:
    import csv
    import io

    import fsspec

    with fsspec.open(path, "r") as f:
        reader = csv.DictReader(io.StringIO(f.read()))
    header = reader.fieldnames or []
    if "name" not in header or nll_metric not in header:
        raise RunsError(f"{path}: needs columns 'name' and {nll_metric!r}; the header is {header}")
    table = {}
    for row in reader:
        values = {}
        for key, raw in row.items():
            if key == "name" or raw is None or not raw.strip():
                continue
            try:
                values[key] = float(raw)
            except ValueError:
                raise RunsError(f"{path} line {reader.line_num}: {key} is {raw!r}, not a number") from None
        table[row["name"]] = values
    return table


def run_correlation(config: CorrelationConfig) -> None:
    if bool(config.runs) == bool(config.metrics_csv):
        raise ValueError("CorrelationConfig: give exactly one of `runs` (RunRefs) or `metrics_csv`")
    out = config.output_path.rstrip("/")
    if config.metrics_csv:
        table, skipped = _table_from_csv(config.metrics_csv, config.nll_metric), []
    else:
        _, skipped, table = _runs_from_refs(config.runs, "nonembedding", config.nll_task, config.nll_metric,
                                            "correlation runs")
    _, _, highlight = _runs_from_refs(config.highlight, "nonembedding", config.nll_task, config.nll_metric,
                                      "highlighted runs")
    metrics = list(config.metrics) if config.metrics else None
    rows = correlate(table, config.nll_metric, metrics)
    result = {"nll_metric": config.nll_metric, "runs": len(table), "skipped": skipped,
              "correlations": [r.as_dict() for r in rows]}
    plots.write_bytes(f"{out}/correlations.json", strict_json.dumps(result, indent=2).encode())
    plots.write_bytes(f"{out}/correlations.md", (as_markdown(rows, config.nll_metric) + "\n").encode())
    written = plots.plot_nll_vs_metrics(table, config.nll_metric, out, metrics, highlight)
    summary = {"runs": len(table), "skipped": skipped, "nll_metric": config.nll_metric,
               "pearson": {r.metric: r.pearson for r in rows}, "spearman": {r.metric: r.spearman for r in rows},
               "files": ["correlations.json", "correlations.md", *(p.rsplit("/", 1)[-1] for p in written)]}
    plots.write_bytes(f"{out}/summary.json", strict_json.dumps(summary, indent=2).encode())
    logger.info("correlated %s with %d metrics over %d runs -> %s", config.nll_metric, len(rows), len(table), out)
