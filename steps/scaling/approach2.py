"""Approach 2: IsoFLOP parabolas per budget, then power laws N* = k_N C^b_N and D* = k_D C^b_D.

Per budget, loss is fitted by a parabola in x = log10 N (and, separately, in x = log10 D);
the vertex gives N*(C) (D*(C)). The parabola fit is Huber-robust on relative residuals
(pred - loss) / loss, delta 1e-3 by default, i.e. the same scale as Approach 3's log-loss
residuals, solved by iteratively reweighted least squares (IRLS), vectorised over bootstrap
resamples. Then log10 N* = log10 k_N + b_N log10 C by ordinary least squares over budgets.
C is the runs' `budget` value as given (training FLOPs for this project's grid), so the
coefficients are in those units.

Bootstrap: resample runs with replacement within each budget, refit everything; a resample
in which some budget has fewer than 3 distinct sizes or a non-convex parabola is dropped
(and counted). Parabola minima are biased when a budget's sizes are not centred on its
optimum (the paper notes this); `extrapolated` marks vertices outside the sampled range.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from steps.scaling.runs import Runs, RunsError

PARABOLA_DELTA = 1e-3
MIN_RUNS_PER_BUDGET = 3


def huber_parabolas(x: np.ndarray, y: np.ndarray, weights: np.ndarray, delta: float = PARABOLA_DELTA,
                    iters: int = 100) -> np.ndarray:
    """Huber fits of y ~ c2 x^2 + c1 x + c0 on relative residuals, one per row of `weights`.

    x, y: (n,); weights: (R, n) non-negative counts. Returns (R, 3) rows (c2, c1, c0);
    rows with fewer than 3 distinct weighted x values come back as NaN.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    w = np.atleast_2d(np.asarray(weights, float))
    design = np.stack([x * x, x, np.ones_like(x)], axis=1)  # (n, 3)
    distinct = np.array([np.unique(x[row > 0]).size for row in w])
    ok = distinct >= 3
    w_safe = np.where(ok[:, None], w, 1.0)
    robust = np.ones_like(w_safe)
    coef = np.zeros((len(w), 3))
    for _ in range(iters):
        omega = w_safe * robust / (y * y)  # relative residuals: divide by y^2
        lhs = np.einsum("rn,ni,nj->rij", omega, design, design)
        rhs = np.einsum("rn,ni,n->ri", omega, design, y)
        new = np.linalg.solve(lhs, rhs[..., None])[..., 0]
        rel = np.abs(new @ design.T - y) / y
        robust = np.where(rel <= delta, 1.0, delta / np.maximum(rel, 1e-300))
        if np.allclose(new, coef, rtol=1e-12, atol=1e-14):
            coef = new
            break
        coef = new
    coef[~ok] = np.nan
    return coef


def _vertex(coef: np.ndarray, offset: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x*, y*, convex) of parabolas in centred x (x_true = x + offset)."""
    c2, c1, c0 = coef[..., 0], coef[..., 1], coef[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        xv = -c1 / (2 * c2)
    return xv + offset, c0 - c1 * c1 / (4 * c2), c2 > 0


@dataclass(frozen=True)
class BudgetMinimum:
    budget: float
    n_runs: int
    n_opt: float
    loss_at_n_opt: float
    d_opt: float
    loss_at_d_opt: float
    parabola_n: tuple[float, float, float]  # loss = c2 u^2 + c1 u + c0, u = log10 N
    parabola_d: tuple[float, float, float]  # same in u = log10 D
    extrapolated: bool  # a vertex lies outside the budget's sampled range


@dataclass(frozen=True)
class Approach2Result:
    minima: list[BudgetMinimum]
    n_exponent: float
    n_coefficient: float
    d_exponent: float
    d_coefficient: float
    intervals: Optional[dict] = None

    def as_dict(self) -> dict:
        out = asdict(self)
        out["per_budget"] = out.pop("minima")
        return out

    def n_opt(self, compute):
        return self.n_coefficient * np.asarray(compute, float) ** self.n_exponent

    def d_opt(self, compute):
        return self.d_coefficient * np.asarray(compute, float) ** self.d_exponent


def _power_law(c: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OLS of log10 v on log10 c along the last axis: (exponent, coefficient)."""
    lc, lv = np.log10(c), np.log10(v)
    lc_mean, lv_mean = lc.mean(), lv.mean(axis=-1, keepdims=True)
    slope = ((lc - lc_mean) * (lv - lv_mean)).sum(axis=-1) / ((lc - lc_mean) ** 2).sum()
    intercept = lv_mean[..., 0] - slope * lc_mean
    return slope, 10.0**intercept


def _fit_budget(runs: Runs, index: np.ndarray, weights: np.ndarray, delta: float):
    """Vertices for N and D at one budget for each weights row: arrays of shape (R,)."""
    out = []
    for values in (runs.params[index], runs.tokens[index]):
        u = np.log10(values)
        centre = u.mean()
        coef = huber_parabolas(u - centre, runs.loss[index], weights, delta)
        xv, yv, convex = _vertex(coef, centre)
        out.append((xv, yv, convex & np.isfinite(xv), coef, centre))
    return out


def fit_approach2(runs: Runs, *, delta: float = PARABOLA_DELTA, bootstrap: int = 0, seed: int = 0,
                  level: float = 0.95) -> Approach2Result:
    budgets = runs.budgets()
    if len(budgets) < 2:
        raise RunsError(f"{runs.source}: Approach 2 needs runs at 2 or more budgets, got {budgets}")
    minima, n_star, d_star = [], [], []
    for budget in budgets:
        index = runs.at_budget(budget)
        sizes = np.unique(runs.params[index]).size
        if index.size < MIN_RUNS_PER_BUDGET or sizes < MIN_RUNS_PER_BUDGET:
            rows = ", ".join(str(i + 1) for i in index)
            raise RunsError(
                f"{runs.source}: budget {budget:g} has {index.size} run(s) ({sizes} distinct sizes; rows {rows}); "
                f"a parabola needs at least {MIN_RUNS_PER_BUDGET} distinct sizes per budget: add runs or drop the budget")
        (nx, ny, n_ok, n_coef, n_c), (dx, dy, d_ok, d_coef, d_c) = _fit_budget(
            runs, index, np.ones((1, index.size)), delta)
        if not (n_ok[0] and d_ok[0]):
            raise RunsError(
                f"{runs.source}: budget {budget:g}: loss is not convex in log {'N' if not n_ok[0] else 'D'} "
                "(the parabola opens downward), so it has no minimum: the runs do not bracket the optimum")
        ln, ld = np.log10(runs.params[index]), np.log10(runs.tokens[index])
        extrapolated = not (ln.min() <= nx[0] <= ln.max() and ld.min() <= dx[0] <= ld.max())
        minima.append(BudgetMinimum(
            budget=budget, n_runs=int(index.size), n_opt=float(10 ** nx[0]), loss_at_n_opt=float(ny[0]),
            d_opt=float(10 ** dx[0]), loss_at_d_opt=float(dy[0]),
            parabola_n=tuple(_uncentre(n_coef[0], n_c)), parabola_d=tuple(_uncentre(d_coef[0], d_c)),
            extrapolated=bool(extrapolated)))
        n_star.append(10 ** nx[0])
        d_star.append(10 ** dx[0])
    c = np.array(budgets)
    n_exp, n_coef = _power_law(c, np.array(n_star))
    d_exp, d_coef = _power_law(c, np.array(d_star))
    intervals = _bootstrap(runs, budgets, delta, bootstrap, seed, level) if bootstrap else None
    return Approach2Result(minima, float(n_exp), float(n_coef), float(d_exp), float(d_coef), intervals)


def _uncentre(coef: np.ndarray, centre: float) -> list[float]:
    """Coefficients in u = x + centre from those in centred x."""
    c2, c1, c0 = coef
    return [float(c2), float(c1 - 2 * c2 * centre), float(c0 - c1 * centre + c2 * centre * centre)]


def _bootstrap(runs: Runs, budgets: list[float], delta: float, resamples: int, seed: int,
               level: float) -> dict:
    rng = np.random.default_rng(seed)
    n_log = np.empty((resamples, len(budgets)))
    d_log = np.empty((resamples, len(budgets)))
    valid = np.ones(resamples, bool)
    for j, budget in enumerate(budgets):
        index = runs.at_budget(budget)
        counts = rng.multinomial(index.size, np.full(index.size, 1.0 / index.size), size=resamples)
        (nx, _, n_ok, _, _), (dx, _, d_ok, _, _) = _fit_budget(runs, index, counts.astype(float), delta)
        n_log[:, j], d_log[:, j] = nx, dx
        valid &= n_ok & d_ok
    c = np.array(budgets)
    n_exp, n_coef = _power_law(c, 10 ** n_log[valid])
    d_exp, d_coef = _power_law(c, 10 ** d_log[valid])
    lo, hi = 50 * (1 - level), 50 * (1 + level)

    def interval(v):
        return [float(np.percentile(v, lo)), float(np.percentile(v, hi))] if v.size else None

    return {"level": level, "resamples": resamples, "dropped_resamples": int((~valid).sum()),
            "n_exponent": interval(n_exp), "n_coefficient": interval(n_coef),
            "d_exponent": interval(d_exp), "d_coefficient": interval(d_coef)}
