"""Time the Approach 3 fit (4,500-start grid + 1,000 bootstrap resamples) on 64 synthetic runs.

The runs are the paper's IsoFLOP grid (59 points + 5 hand-added wide ones; N = non-embedding
params, D = tokens) with losses from a known law (alpha 0.684, beta 0.439) times lognormal
noise. Ours (steps/scaling/approach3.py) is compared, in the same process, with the plain
implementation a user would write after Besiroglu et al.'s replication: scipy's logsumexp and
huber, `scipy.optimize.minimize(method="L-BFGS-B")` with finite-difference gradients, one
call per start and per resample, over the same grid and the same bootstrap starts.

    python benchmarks/scaling_fit_bench.py [--resamples 1000] [--baseline-resamples 1000]
        [--baseline-grid-stride 1] [--noise 0.003] [--seed 0]

Baseline counts below 1,000 (or a grid stride above 1) are timed as given and scaled
linearly to the full job; the table says which figures are measured and which scaled.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from steps.scaling.approach3 import (  # noqa: E402
    HUBER_DELTA,
    _minimize,
    ParametricLaw,
    bootstrap_parametric,
    fit_parametric,
    parametric_intervals,
    starting_grid,
)
from steps.scaling.grid import IsoFlopGridConfig, isoflop_grid  # noqa: E402

TRUE = ParametricLaw(E=1.8, A=1.2e5, B=6e3, alpha=0.684, beta=0.439)
EXTRA = ((1.8e20, 2048), (1.8e20, 2304), (3e20, 2304), (3e20, 2560), (3e20, 2816))


def synthetic_runs(noise: float, seed: int):
    pts = isoflop_grid(IsoFlopGridConfig(extra_points=EXTRA))
    n = np.array([p.params_nonembedding for p in pts], float)
    d = np.array([p.tokens for p in pts], float)
    loss = TRUE.loss(n, d) * np.exp(np.random.default_rng(seed).normal(0, noise, len(n)))
    return n, d, loss


# ---------------------------------------------------------------- the plain implementation

def plain_objective(theta, log_n, log_d, log_loss, weights):
    from scipy.special import huber, logsumexp

    a, b, e, alpha, beta = theta
    pred = logsumexp([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)], axis=0)
    return float(np.sum(weights * huber(HUBER_DELTA, pred - log_loss)))


def plain_fit(starts, log_n, log_d, log_loss, weights):
    from scipy.optimize import minimize

    best = None
    for s in starts:
        # Tight tolerances: with delta = 1e-3 the objective is ~1e-5, and scipy's defaults
        # (gtol 1e-5) stop at the start point, which makes bootstrap intervals far too narrow.
        res = minimize(plain_objective, s, args=(log_n, log_d, log_loss, weights), method="L-BFGS-B",
                       options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 2000})
        if best is None or res.fun < best.fun:
            best = res
    return best.x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--baseline-resamples", type=int, default=1000)
    ap.add_argument("--baseline-grid-stride", type=int, default=1, help="time every k-th grid start, scale up")
    ap.add_argument("--noise", type=float, default=0.003)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    n, d, loss = synthetic_runs(args.noise, args.seed)
    log_n, log_d, log_loss = np.log(n), np.log(d), np.log(loss)
    grid = starting_grid()

    t0 = time.perf_counter()
    full = fit_parametric(n, d, loss)
    t1 = time.perf_counter()
    thetas = bootstrap_parametric(n, d, loss, full, resamples=args.resamples, seed=args.seed)
    t2 = time.perf_counter()
    ours_fit, ours_boot = t1 - t0, t2 - t1
    iv = parametric_intervals(thetas)

    # Plain: the same grid for the full fit, the same bootstrap starts and resamples.
    starts = grid[:: args.baseline_grid_stride]
    t0 = time.perf_counter()
    plain_theta = plain_fit(starts, log_n, log_d, log_loss, np.ones_like(log_n))
    plain_fit_s = (time.perf_counter() - t0) * len(grid) / len(starts)
    seeds = full.bootstrap_seeds(3)
    rng = np.random.default_rng(args.seed)
    counts = rng.multinomial(len(n), np.full(len(n), 1 / len(n)), size=args.baseline_resamples)
    t0 = time.perf_counter()
    plain_thetas = np.array([plain_fit(seeds, log_n, log_d, log_loss, w.astype(float)) for w in counts])
    plain_boot_s = (time.perf_counter() - t0) * args.resamples / max(1, args.baseline_resamples)
    plain_iv = parametric_intervals(plain_thetas) if len(plain_thetas) > 1 else None

    # Middle row: scipy per start as above, but with our exact gradient (no batching).
    t0 = time.perf_counter()
    for s in starts:
        _minimize(s, (log_n, log_d, log_loss, np.ones_like(log_n), HUBER_DELTA))
    grad_fit_s = (time.perf_counter() - t0) * len(grid) / len(starts)
    t0 = time.perf_counter()
    for w in counts:
        for s in seeds:
            _minimize(s, (log_n, log_d, log_loss, w.astype(float), HUBER_DELTA))
    grad_boot_s = (time.perf_counter() - t0) * args.resamples / max(1, args.baseline_resamples)

    scaled_fit = " (scaled)" if args.baseline_grid_stride > 1 else ""
    scaled_boot = " (scaled)" if args.baseline_resamples != args.resamples else ""
    law_plain = ParametricLaw.from_theta(plain_theta)
    print(f"Approach 3 on 64 synthetic runs, noise {args.noise:.1%}, {len(grid):,}-start grid, "
          f"{args.resamples:,} bootstrap resamples x {len(seeds)} starts; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}\n")
    print("| implementation | full fit (4,500 starts) | 1,000 bootstraps | total |")
    print("|---|---|---|---|")
    print(f"| ours: batched L-BFGS + analytic gradient, scipy polish | {ours_fit:.1f} s | {ours_boot:.1f} s | "
          f"{ours_fit + ours_boot:.1f} s |")
    print(f"| scipy L-BFGS-B + our analytic gradient, one call per start | {grad_fit_s:.1f} s{scaled_fit} | "
          f"{grad_boot_s:.1f} s{scaled_boot} | {grad_fit_s + grad_boot_s:.1f} s |")
    print(f"| plain: scipy L-BFGS-B, finite differences, one call per start | {plain_fit_s:.1f} s{scaled_fit} | "
          f"{plain_boot_s:.1f} s{scaled_boot} | {plain_fit_s + plain_boot_s:.1f} s |")
    print(f"| speed-up, ours vs plain | {plain_fit_s / ours_fit:.0f}x | {plain_boot_s / ours_boot:.0f}x | "
          f"{(plain_fit_s + plain_boot_s) / (ours_fit + ours_boot):.0f}x |\n")
    print("| parameter | true | ours | ours 95% interval | plain |")
    print("|---|---|---|---|---|")
    for key in ("E", "A", "B", "alpha", "beta", "n_exponent", "d_exponent"):
        true, ours, plain = (getattr(x, key) for x in (TRUE, full.law, law_plain))
        lo, hi = iv[key]
        print(f"| {key} | {true:.4g} | {ours:.4g} | [{lo:.4g}, {hi:.4g}] | {plain:.4g} |")
    if plain_iv:
        print(f"\nplain bootstrap ({len(plain_thetas)} resamples) alpha interval "
              f"[{plain_iv['alpha'][0]:.4g}, {plain_iv['alpha'][1]:.4g}], beta "
              f"[{plain_iv['beta'][0]:.4g}, {plain_iv['beta'][1]:.4g}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
