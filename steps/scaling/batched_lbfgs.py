"""L-BFGS run on many independent small problems at once (numpy, one array op per step).

Scaling-law fits minimise the same 5-parameter objective from thousands of starting points and
on a thousand bootstrap resamples. Calling scipy once per problem spends most of its time in
Python overhead; here every problem advances together: each iteration evaluates the objective
and gradient of all still-active problems in one vectorised call, runs the two-loop recursion
on a (memory, problems, params) history, and backtracks each problem's step separately
(Armijo condition). A problem stops when its gradient or its progress becomes negligible.
A step's curvature pair (s, y) is skipped when it is degenerate (s.y not clearly positive, y.y zero
or not finite): no division by zero, no NaN scale; the problem keeps its earlier history.
Callers polish the few results that matter with scipy's L-BFGS-B.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# fg(X, rows) -> (f, G): objective (k,) and gradient (k, p) of problems `rows` at points X (k, p)
BatchedObjective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def batched_lbfgs(fg: BatchedObjective, x0: np.ndarray, *, memory: int = 10, max_iter: int = 1000,
                  gtol: float = 1e-8, ftol: float = 1e-13, c1: float = 1e-4,
                  max_backtracks: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Minimise problems i = 0..K-1 from x0[i]; returns (X, f) at their end points."""
    x = np.array(x0, dtype=float, copy=True)
    k, p = x.shape
    rows = np.arange(k)
    f, g = fg(x, rows)
    s_hist = np.zeros((memory, k, p))
    y_hist = np.zeros((memory, k, p))
    rho = np.zeros((memory, k))  # 0 marks an empty or rejected pair: it then has no effect
    gamma = 1.0 / np.maximum(np.linalg.norm(g, axis=1), 1e-12)  # first step: unit length
    active = np.isfinite(f) & (np.abs(g).max(axis=1) > gtol)
    slot = 0
    for _ in range(max_iter):
        act = np.flatnonzero(active)
        if act.size == 0:
            break
        ga = g[act]
        # Two-loop recursion, newest pair first.
        q = ga.copy()
        coef = np.zeros((memory, act.size))
        order = [(slot - 1 - j) % memory for j in range(memory)]
        for j in order:
            coef[j] = rho[j, act] * np.einsum("kp,kp->k", s_hist[j, act], q)
            q -= coef[j][:, None] * y_hist[j, act]
        r = gamma[act][:, None] * q
        for j in reversed(order):
            b = rho[j, act] * np.einsum("kp,kp->k", y_hist[j, act], r)
            r += s_hist[j, act] * (coef[j] - b)[:, None]
        d = -r
        slope = np.einsum("kp,kp->k", ga, d)
        bad = ~(slope < 0)  # not a descent direction: restart that problem on steepest descent
        if bad.any():
            d[bad] = -ga[bad] / np.maximum(np.linalg.norm(ga[bad], axis=1, keepdims=True), 1e-12)
            slope[bad] = np.einsum("kp,kp->k", ga[bad], d[bad])
            rho[:, act[bad]] = 0.0
        # Per-problem backtracking line search.
        step = np.ones(act.size)
        x_new = np.empty_like(d)
        f_new = np.full(act.size, np.inf)
        g_new = np.zeros_like(d)
        todo = np.arange(act.size)
        for _ in range(max_backtracks):
            xt = x[act[todo]] + step[todo, None] * d[todo]
            ft, gt = fg(xt, act[todo])
            ok = np.isfinite(ft) & (ft <= f[act[todo]] + c1 * step[todo] * slope[todo])
            done = todo[ok]
            x_new[done], f_new[done], g_new[done] = xt[ok], ft[ok], gt[ok]
            todo = todo[~ok]
            if todo.size == 0:
                break
            step[todo] *= 0.5
        moved = np.isfinite(f_new)
        idx = act[moved]
        s = x_new[moved] - x[idx]
        y = g_new[moved] - g[idx]
        sy = np.einsum("kp,kp->k", s, y)
        yy = np.einsum("kp,kp->k", y, y)
        # A curvature pair is kept only when s.y > 0 is well above rounding (relative to y.y) and y.y
        # is a positive finite number: a degenerate pair (y.y underflowed to 0, or overflowed) would
        # make gamma = s.y / y.y infinite or NaN, so it is skipped: that problem's history and scale
        # stay as they were, as for a pair that fails the curvature test.
        good = (yy > 0) & np.isfinite(yy) & np.isfinite(sy) & (sy > 1e-12 * yy)
        s_hist[slot] = 0.0
        y_hist[slot] = 0.0
        rho[slot] = 0.0
        s_hist[slot, idx[good]] = s[good]
        y_hist[slot, idx[good]] = y[good]
        rho[slot, idx[good]] = 1.0 / sy[good]
        gamma[idx[good]] = sy[good] / yy[good]
        slot = (slot + 1) % memory
        f_old = f[idx]
        x[idx], f[idx], g[idx] = x_new[moved], f_new[moved], g_new[moved]
        progress = (f_old - f[idx]) <= ftol * np.maximum(np.maximum(np.abs(f_old), np.abs(f[idx])), 1.0)
        converged = progress | (np.abs(g[idx]).max(axis=1) <= gtol)
        active[idx[converged]] = False
        active[act[~moved]] = False  # no acceptable step: at a (numerical) minimum
    return x, f
