"""Scaling-law fits of IsoFLOP runs: both of the paper's approaches, predictions, and the CLI.

    soda fit-scaling RUNS.csv --json [--params-total] [--bootstrap N] [--seed S]
                              [--predict N,D ...] [--predict-k C,K ...]

RUNS.csv has columns budget,params,tokens,loss (see steps/scaling/runs.py); params are
non-embedding unless --params-total says they are totals (the fits are the same; the output
records which). Output (JSON with --json, else a short report):

- `approach2`: per-budget parabola minima (`per_budget`), `n_exponent`, `n_coefficient`,
  `d_exponent`, `d_coefficient` of N* = k C^b, D* = k C^b with C = the budget column, and
  bootstrap `intervals` (steps/scaling/approach2.py); or `{"error": why}` when the runs cannot
  give it (fewer than 3 sizes at a budget, or a budget whose runs do not bracket a minimum: short
  runs, off-centre sampling), in which case Approach 3 is still fitted;
- `approach3`: `E`, `A`, `B`, `alpha`, `beta`, `n_exponent` = beta/(alpha+beta),
  `d_exponent` = alpha/(alpha+beta), `objective`, bootstrap `intervals` (approach3.py);
- `predictions`: for --predict N,D the Approach 3 loss; for --predict-k C,K the over-trained
  configuration at compute C: D = K D*(C), N = N*(C) / K, where (N*, D*) is Approach 3's
  compute-optimal allocation under C = 6 N D (Chinchilla's closed form). C there is 6ND in
  the fit's own N (non-embedding by default), not the Levanter FLOP budget: with a 144,644
  vocabulary the two differ a lot for small models (see steps/training/accounting.py).
  The plots (steps/scaling/plots.py) put every point and curve at accounted training FLOPs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Optional, Sequence

import numpy as np

from steps.scaling.approach2 import PARABOLA_DELTA, fit_approach2
from steps.scaling.approach3 import (
    HUBER_DELTA,
    ParametricLaw,
    bootstrap_parametric,
    fit_parametric,
    parametric_intervals,
)
from steps.scaling.runs import Runs, RunsError, read_runs_csv
from pipeline.cli_checks import first_problem, number_problem, read_text_file

logger = logging.getLogger(__name__)

MIN_RUNS_APPROACH3 = 6


def fit_scaling(runs: Runs, *, params_kind: str = "nonembedding", bootstrap: int = 1000, seed: int = 0,
                level: float = 0.95, huber_delta: float = HUBER_DELTA,
                parabola_delta: float = PARABOLA_DELTA, bootstrap_starts: int = 3,
                starts: Optional[np.ndarray] = None) -> dict:
    """Both approaches on `runs`; a JSON-ready dict (see the module docstring)."""
    if len(runs) < MIN_RUNS_APPROACH3:
        raise RunsError(f"{runs.source}: {len(runs)} runs; Approach 3 fits 5 parameters and needs "
                        f"at least {MIN_RUNS_APPROACH3}")
    t0 = time.perf_counter()
    try:
        approach2 = fit_approach2(runs, delta=parabola_delta, bootstrap=bootstrap, seed=seed, level=level).as_dict()
    except RunsError as e:  # the parabolas are undefined for these runs; Approach 3 does not need them
        approach2 = {"error": str(e)}
        logger.warning("Approach 2 not fitted: %s", e)
    t1 = time.perf_counter()
    a3 = fit_parametric(runs.params, runs.tokens, runs.loss, delta=huber_delta, starts=starts)
    approach3 = {**a3.law.as_dict(), "objective": a3.objective, "huber_delta": huber_delta,
                 "starts": a3.n_starts, "intervals": None}
    if bootstrap:
        thetas = bootstrap_parametric(runs.params, runs.tokens, runs.loss, a3, resamples=bootstrap,
                                      seed=seed, bootstrap_starts=bootstrap_starts, delta=huber_delta)
        approach3["intervals"] = {"level": level, "resamples": bootstrap,
                                  **parametric_intervals(thetas, level)}
    t2 = time.perf_counter()
    logger.info("fitted %d runs: approach 2 in %.2fs, approach 3 (%d starts, %d resamples) in %.2fs",
                len(runs), t1 - t0, a3.n_starts, bootstrap, t2 - t1)
    return {"runs": len(runs), "budgets": runs.budgets(), "params_kind": params_kind,
            "compute": "budget column = accounted training FLOPs (Approach 2); 6ND in the fit's N "
                       "(Approach 3 closed-form allocation and --predict-k only)",
            "approach2": approach2, "approach3": approach3}


def law_from_fit(fits: dict) -> ParametricLaw:
    a3 = fits["approach3"]
    return ParametricLaw(E=a3["E"], A=a3["A"], B=a3["B"], alpha=a3["alpha"], beta=a3["beta"])


def predict_loss(law: ParametricLaw, n: float, d: float) -> dict:
    return {"params": n, "tokens": d, "loss": float(law.loss(n, d))}


def predict_at_k(law: ParametricLaw, compute: float, k: float) -> dict:
    """Loss at compute C (= 6ND in the fit's N, not accounted FLOPs) when trained on K times the
    compute-optimal data."""
    n_opt, d_opt = law.compute_optimal(compute)
    n, d, loss = law.at_overtraining(compute, k)
    return {"compute": compute, "k": k, "params": float(n), "tokens": float(d), "loss": float(loss),
            "params_opt": float(n_opt), "tokens_opt": float(d_opt)}


def _pair(text: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers joined by a comma, like 1e9,2e10; got {text!r}")
    return a, b  # both must be finite and positive: checked after parsing, with the other flags


def _report(fits: dict) -> str:
    a2, a3 = fits["approach2"], fits["approach3"]
    lines = [f"{fits['runs']} runs at {len(fits['budgets'])} budgets (N = {fits['params_kind']} params)", "",
             "Approach 2 (IsoFLOP parabolas):",
             f"  {'budget':>9}  {'runs':>4}  {'N*':>10}  {'D*':>10}  {'loss':>7}"]
    for m in a2.get("per_budget", []):
        flag = "  (extrapolated)" if m["extrapolated"] else ""
        lines.append(f"  {m['budget']:9.2e}  {m['n_runs']:4d}  {m['n_opt']:10.3e}  {m['d_opt']:10.3e}"
                     f"  {m['loss_at_n_opt']:7.4f}{flag}")
    iv2, iv3 = a2.get("intervals") or {}, a3.get("intervals") or {}

    def ci(iv, key):
        return f"  [{iv[key][0]:.3f}, {iv[key][1]:.3f}]" if iv.get(key) else ""

    lines += ([f"  not fitted: {a2['error']}"] if "error" in a2 else
              [f"  N* = {a2['n_coefficient']:.3e} C^{a2['n_exponent']:.3f}{ci(iv2, 'n_exponent')}",
               f"  D* = {a2['d_coefficient']:.3e} C^{a2['d_exponent']:.3f}{ci(iv2, 'd_exponent')}"])
    lines += ["", "Approach 3 (L = E + A/N^alpha + B/D^beta):",
              f"  E = {a3['E']:.4f}, A = {a3['A']:.4g}, B = {a3['B']:.4g}",
              f"  alpha = {a3['alpha']:.3f}{ci(iv3, 'alpha')}, beta = {a3['beta']:.3f}{ci(iv3, 'beta')}",
              f"  N* ~ C^{a3['n_exponent']:.3f}{ci(iv3, 'n_exponent')}, D* ~ C^{a3['d_exponent']:.3f}"
              f"{ci(iv3, 'd_exponent')}"]
    for p in fits.get("predictions", []):
        lines.append("  predict " + ", ".join(f"{k}={v:.4g}" for k, v in p.items()))
    return "\n".join(lines)


def cli_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="soda fit-scaling", description="Fit scaling laws to a CSV of runs.")
    parser.add_argument("runs_csv", help="CSV with columns budget,params,tokens,loss")
    parser.add_argument("--json", action="store_true", help="print the fits as one JSON object")
    parser.add_argument("--params-total", action="store_true",
                        help="the params column holds total (not non-embedding) parameter counts")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--predict", type=_pair, nargs="*", default=[], metavar="N,D",
                        help="predict the loss of N params trained on D tokens")
    parser.add_argument("--predict-k", type=_pair, nargs="*", default=[], metavar="C,K",
                        help="predict the loss at compute C (= 6ND in the fit's N, not accounted training FLOPs) "
                             "with K times the optimal data")
    args = parser.parse_args(list(argv))

    text, problem = read_text_file(args.runs_csv)
    problem = first_problem(
        number_problem("--bootstrap", args.bootstrap, minimum=0), number_problem("--seed", args.seed, minimum=0),
        *(number_problem(flag, v, above=0) for flag, pairs in (("--predict", args.predict),
                                                             ("--predict-k", args.predict_k))
          for pair in pairs for v in pair), problem)
    if problem:
        print(f"soda fit-scaling: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    try:
        runs = read_runs_csv(args.runs_csv, text=text)
        fits = fit_scaling(runs, params_kind="total" if args.params_total else "nonembedding",
                           bootstrap=args.bootstrap, seed=args.seed)
    except (RunsError, FileNotFoundError) as e:
        print(f"soda fit-scaling: {e}", file=sys.stderr)
        return 2
    if args.predict or args.predict_k:
        law = law_from_fit(fits)
        fits["predictions"] = ([predict_loss(law, n, d) for n, d in args.predict]
                               + [predict_at_k(law, c, k) for c, k in args.predict_k])
    print(json.dumps(fits) if args.json else _report(fits))
    return 0
