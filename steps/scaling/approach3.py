"""Approach 3: the parametric law L(N, D) = E + A / N^alpha + B / D^beta fitted to every run.

Fitting practice of Chinchilla (Hoffmann et al. 2022) as replicated by Besiroglu et al. (2024):
- log-sum-exp parametrisation: log L = LSE(a - alpha log N, b - beta log D, e) with
  A = exp(a), B = exp(b), E = exp(e);
- objective: sum over runs of Huber_delta(log L_pred - log L_obs), delta = 1e-3 (we divide by
  delta, which scales the objective to ~|residual| and leaves the minimiser unchanged);
- L-BFGS from every point of a grid of starts: alpha, beta in {0, .5, 1, 1.5, 2},
  e in {-1, -.5, 0, .5, 1}, a, b in {0, 5, ..., 25} (4,500 starts); the best end point wins;
- bootstrap intervals: refit on resamples of the runs drawn with replacement.

How the starts are run (speed). The objective and its exact gradient are vectorised numpy
expressions over runs and over parameter rows; bootstrap resamples are count weights, so no
data is copied. Calling scipy 4,500 times costs minutes, so the grid runs as one batched
L-BFGS (steps/scaling/batched_lbfgs.py): all starts for 200 iterations, then the 64 best
distinct end points to convergence; the 4 best distinct of those are finished with scipy's
L-BFGS-B (analytic gradient), and the lowest objective wins. Bootstrap refits start from
the full-data optimum plus `bootstrap_starts` (default 3) other distinct end points of the
full fit, not the whole grid (a resample's optimum lies near the full data's; 1,000 x 4,500
minimisations would be wasted); resamples x starts run as one batched L-BFGS.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional

import numpy as np
from steps.scaling.batched_lbfgs import batched_lbfgs

HUBER_DELTA = 1e-3
PARAM_NAMES = ("a", "b", "e", "alpha", "beta")


def starting_grid() -> np.ndarray:
    """The Chinchilla grid of starts, rows (a, b, e, alpha, beta)."""
    ab = np.arange(0.0, 25.1, 5.0)
    e = np.linspace(-1.0, 1.0, 5)
    exps = np.linspace(0.0, 2.0, 5)
    return np.array(list(itertools.product(ab, ab, e, exps, exps)))


@dataclass(frozen=True)
class ParametricLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta, with compute-optimal allocation under C = 6ND."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    @property
    def n_exponent(self) -> float:
        return self.beta / (self.alpha + self.beta)

    @property
    def d_exponent(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def loss(self, n, d):
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    def compute_optimal(self, compute):
        """(N*, D*) minimising L subject to 6 N D = C (Chinchilla's closed form)."""
        c6 = np.asarray(compute, dtype=float) / 6.0
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        return g * c6**self.n_exponent, c6**self.d_exponent / g

    def at_overtraining(self, compute, k):
        """(N, D, loss) at compute C = 6 N D with D = K D*(C), so N = N*(C) / K."""
        n_opt, d_opt = self.compute_optimal(compute)
        k = np.asarray(k, dtype=float)
        n, d = n_opt / k, d_opt * k
        return n, d, self.loss(n, d)

    def as_dict(self) -> dict:
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
                "n_exponent": self.n_exponent, "d_exponent": self.d_exponent}

    @classmethod
    def from_theta(cls, theta) -> "ParametricLaw":
        a, b, e, alpha, beta = (float(v) for v in theta)
        return cls(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha, beta=beta)


def objective_and_grad(theta, log_n, log_d, log_loss, weights, delta=HUBER_DELTA):
    """Sum of weighted Huber(residual) / delta and its exact gradient in (a, b, e, alpha, beta)."""
    with np.errstate(all="ignore"):  # far-off trial points overflow; they come back as 1e30
        return _objective_and_grad(theta, log_n, log_d, log_loss, weights, delta)


def _objective_and_grad(theta, log_n, log_d, log_loss, weights, delta):
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    top = terms.max(axis=0)
    expo = np.exp(terms - top)
    total = expo.sum(axis=0)
    r = top + np.log(total) - log_loss
    absr = np.abs(r)
    huber = np.where(absr <= delta, 0.5 * r * r / delta, absr - 0.5 * delta)
    g_r = weights * np.clip(r / delta, -1.0, 1.0)
    p = expo / total  # softmax weights of the three terms
    gp = p * g_r
    grad = np.array([gp[0].sum(), gp[1].sum(), gp[2].sum(),
                     -(gp[0] * log_n).sum(), -(gp[1] * log_d).sum()])
    f = float(weights @ huber)
    if not np.isfinite(f) or not np.all(np.isfinite(grad)):
        return 1e30, np.zeros(5)
    return f, grad


def objective_grad_many(thetas, log_n, log_d, log_loss, weights, delta=HUBER_DELTA):
    """Objective (K,) and gradient (K, 5) at many parameter rows; `weights` is (n,) or (K, n)."""
    with np.errstate(all="ignore"):  # far-off trial points overflow; they come back as inf
        return _objective_grad_many(thetas, log_n, log_d, log_loss, weights, delta)


def _objective_grad_many(thetas, log_n, log_d, log_loss, weights, delta):
    t = np.asarray(thetas, dtype=float)
    a, b, e, alpha, beta = (t[:, i : i + 1] for i in range(5))
    t_a = a - alpha * log_n
    t_b = b - beta * log_d
    top = np.maximum(np.maximum(t_a, t_b), e)
    ea, eb, ee = np.exp(t_a - top), np.exp(t_b - top), np.exp(e - top)
    total = ea + eb + ee
    r = top + np.log(total) - log_loss
    absr = np.abs(r)
    huber = np.where(absr <= delta, 0.5 * r * r / delta, absr - 0.5 * delta)
    g_r = weights * np.clip(r / delta, -1.0, 1.0) / total
    ga, gb = g_r * ea, g_r * eb
    f = (huber * weights).sum(axis=1)
    grad = np.stack([ga.sum(axis=1), gb.sum(axis=1), (g_r * ee).sum(axis=1),
                     -(ga * log_n).sum(axis=1), -(gb * log_d).sum(axis=1)], axis=1)
    bad = ~(np.isfinite(f) & np.isfinite(grad).all(axis=1))
    f[bad], grad[bad] = np.inf, 0.0
    return f, grad


def minimize_many(starts, log_n, log_d, log_loss, weights, delta=HUBER_DELTA, max_iter=1000):
    """Batched L-BFGS from every row of `starts` (problem i uses weights[i] when 2-D)."""
    w = np.asarray(weights, dtype=float)

    def fg(x, rows):
        return objective_grad_many(x, log_n, log_d, log_loss, w[rows] if w.ndim == 2 else w, delta)

    return batched_lbfgs(fg, np.asarray(starts, dtype=float), max_iter=max_iter)


def _minimize(start, args):
    from scipy.optimize import minimize

    res = minimize(objective_and_grad, start, args=args, jac=True, method="L-BFGS-B",
                   options={"maxiter": 2000, "gtol": 1e-9, "ftol": 1e-13})
    return res.x, float(res.fun)


@dataclass(frozen=True)
class Approach3Result:
    law: ParametricLaw
    theta: np.ndarray  # (a, b, e, alpha, beta)
    objective: float
    n_starts: int
    local_optima: np.ndarray  # distinct polished end points, best first
    promising_starts: np.ndarray  # grid starts whose runs ended best, best first (bootstrap seeds)

    def bootstrap_seeds(self, extra: int) -> np.ndarray:
        """The optimum plus `extra` distinct other starts: other local optima, then grid starts."""
        pool = [*self.local_optima, *self.promising_starts]
        return np.array(_distinct(np.array(pool), 1 + extra))


def _logs(n, d, loss):
    return (np.log(np.asarray(n, float)), np.log(np.asarray(d, float)), np.log(np.asarray(loss, float)))


def _distinct(thetas: np.ndarray, limit: int, tol: float = 1e-2) -> list[np.ndarray]:
    kept: list[np.ndarray] = []
    for th in thetas:
        if all(np.max(np.abs(th - o)) > tol for o in kept):
            kept.append(th)
            if len(kept) >= limit:
                break
    return kept


def fit_parametric(n, d, loss, *, delta: float = HUBER_DELTA, starts: Optional[np.ndarray] = None,
                   screen_iters: int = 200, finalists: int = 64, polish: int = 4) -> Approach3Result:
    """Fit L = E + A/N^alpha + B/D^beta by L-BFGS from every start (default: the Chinchilla grid).

    All starts run together (batched L-BFGS, `screen_iters` iterations); the `finalists` best
    distinct end points run on to convergence (batched), and the `polish` best distinct of those
    are finished with scipy's L-BFGS-B (analytic gradient); the lowest objective wins.
    """
    log_n, log_d, log_loss = _logs(n, d, loss)
    w = np.ones_like(log_n)
    starts = starting_grid() if starts is None else np.atleast_2d(np.asarray(starts, float))
    x, f = minimize_many(starts, log_n, log_d, log_loss, w, delta, max_iter=screen_iters)
    finite = np.flatnonzero(np.isfinite(f))
    if finite.size == 0:
        raise ArithmeticError("Approach 3: the objective is not finite at any start; check the runs")
    order = finite[np.argsort(f[finite], kind="stable")]
    best_first = x[order]
    x2, f2 = minimize_many(np.array(_distinct(best_first, finalists)), log_n, log_d, log_loss, w, delta,
                           max_iter=5000)
    candidates = _distinct(x2[np.argsort(f2, kind="stable")], finalists)
    polished = sorted((_minimize(c, (log_n, log_d, log_loss, w, delta)) for c in candidates[:polish]),
                      key=lambda xf: xf[1])
    optima = _distinct(np.array([xf[0] for xf in polished]), polish)
    best, best_f = polished[0]
    return Approach3Result(ParametricLaw.from_theta(best), best, best_f, len(starts), np.array(optima),
                           np.array(_distinct(starts[order], 16, tol=0.5)))


def bootstrap_parametric(n, d, loss, full: Approach3Result, *, resamples: int = 1000, seed: int = 0,
                         bootstrap_starts: int = 3, delta: float = HUBER_DELTA) -> np.ndarray:
    """Refit on `resamples` bootstrap resamples; returns their (a, b, e, alpha, beta) rows.

    Each resample starts from the full-data optimum and the next `bootstrap_starts` distinct
    local optima of the full fit; all resamples x starts run as one batched L-BFGS.
    """
    log_n, log_d, log_loss = _logs(n, d, loss)
    rng = np.random.default_rng(seed)
    count = len(log_n)
    counts = rng.multinomial(count, np.full(count, 1.0 / count), size=resamples).astype(float)
    seeds = full.bootstrap_seeds(bootstrap_starts)
    s = len(seeds)
    starts = np.tile(seeds, (resamples, 1))
    weights = np.repeat(counts, s, axis=0)
    x, f = minimize_many(starts, log_n, log_d, log_loss, weights, delta)
    best = np.argmin(f.reshape(resamples, s), axis=1)
    return x.reshape(resamples, s, 5)[np.arange(resamples), best]


def parametric_intervals(thetas: np.ndarray, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile intervals of E, A, B, alpha, beta and the derived exponents."""
    a, b, e, alpha, beta = thetas.T
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    series = {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": alpha, "beta": beta,
              "n_exponent": beta / (alpha + beta), "d_exponent": alpha / (alpha + beta)}
    return {k: [float(np.percentile(v, lo)), float(np.percentile(v, hi))] for k, v in series.items()}
