"""Figures of the scaling analysis, each written as PNG and SVG (matplotlib, Agg backend).

- `plot_isoflop_curves`: loss vs N and vs D per budget, fitted parabolas, their minima;
- `plot_optimal_allocation`: N* and D* vs C with the power-law fits, extrapolated;
- `plot_loss_predictions`: Approach 3's predicted loss vs training compute at over-training
  ratios K = 1, 5, 20, 100, with the sweep's runs (grey) and any final runs (coloured);
- `plot_nll_vs_metrics`: each downstream metric against validation NLL, with a regression line.

Compute on every x axis is training FLOPs as steps/training/accounting.py counts them (3 x
Levanter's forward FLOPs per token x tokens, LM head and attention included), which is what the
fits use: the runs' `budget` column. Never 6ND: with a 144,644 vocabulary the LM head dominates
small models and 6ND undercounts them severalfold.

Every function takes an output directory (local path or fsspec URL) and returns the paths it
wrote. SVGs carry no date and a fixed hash salt, so reruns produce identical files.
"""

from __future__ import annotations

import io
import math
from typing import Mapping, Optional, Sequence

import numpy as np
from steps.scaling.grid import shape_for_width
from steps.training.accounting import forward_flops_per_token, params_nonembedding, params_total

COMPUTE_LABEL = "training compute C (FLOPs, accounted: 3 x forward incl. LM head; not 6ND)"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.hashsalt"] = "soda"
    return plt


def write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` (local or fsspec URL) through a temporary name, then rename."""
    import fsspec

    fs, fs_path = fsspec.core.url_to_fs(path)
    parent = fs_path.rsplit("/", 1)[0] if "/" in fs_path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = fs_path + ".tmp"
    fs.pipe_file(tmp, data)
    fs.mv(tmp, fs_path)


def _save(fig, out_dir: str, name: str) -> list[str]:
    plt = _pyplot()
    paths = []
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight", metadata=meta)
        path = f"{out_dir.rstrip('/')}/{name}.{ext}"
        write_bytes(path, buf.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths


def _colors(count: int):
    plt = _pyplot()
    cmap = plt.get_cmap("viridis")
    return [cmap(i / max(1, count - 1)) for i in range(count)]


def plot_isoflop_curves(runs, approach2: Mapping, out_dir: str, name: str = "isoflop_curves") -> list[str]:
    """Loss vs N (left) and vs D (right) per budget, with the Approach 2 parabolas and minima."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    minima = approach2["per_budget"]
    for color, m in zip(_colors(len(minima)), minima):
        idx = runs.at_budget(m["budget"])
        for ax, values, key, opt, loss_opt in ((axes[0], runs.params, "parabola_n", m["n_opt"], m["loss_at_n_opt"]),
                                               (axes[1], runs.tokens, "parabola_d", m["d_opt"], m["loss_at_d_opt"])):
            ax.scatter(values[idx], runs.loss[idx], color=color, s=18, label=f"{m['budget']:.1e}")
            u = np.log10(values[idx])
            span = np.linspace(min(u.min(), math.log10(opt)) - 0.1, max(u.max(), math.log10(opt)) + 0.1, 100)
            c2, c1, c0 = m[key]
            ax.plot(10**span, c2 * span**2 + c1 * span + c0, color=color, lw=1)
            ax.scatter([opt], [loss_opt], color=color, marker="*", s=120, edgecolor="black", zorder=3)
    axes[0].set_xlabel("parameters N")
    axes[1].set_xlabel("training tokens D")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_ylabel("validation loss")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(title="budget (training FLOPs)", fontsize=8)
    fig.suptitle("IsoFLOP curves (stars: parabola minima)")
    return _save(fig, out_dir, name)


def plot_optimal_allocation(approach2: Mapping, out_dir: str, extrapolate_to: float = 1e23,
                            name: str = "optimal_allocation") -> list[str]:
    """N*(C) and D*(C) with the fitted power laws, extended to `extrapolate_to`."""
    plt = _pyplot()
    minima = approach2["per_budget"]
    c = np.array([m["budget"] for m in minima])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    grid = np.logspace(math.log10(c.min()) - 0.3, math.log10(max(extrapolate_to, c.max())), 200)
    for ax, key, exp_key, coef_key, label in ((axes[0], "n_opt", "n_exponent", "n_coefficient", "N*"),
                                              (axes[1], "d_opt", "d_exponent", "d_coefficient", "D*")):
        ax.scatter(c, [m[key] for m in minima], color="black", zorder=3, label=f"{label} per budget")
        k, b = approach2[coef_key], approach2[exp_key]
        fitted = grid <= c.max() * 1.0001
        ax.plot(grid[fitted], k * grid[fitted] ** b, color="C0", label=f"{label} = {k:.3g} C^{b:.3f}")
        ax.plot(grid[~fitted], k * grid[~fitted] ** b, color="C0", ls="--", label="extrapolation")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(COMPUTE_LABEL)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("Compute-optimal allocation (Approach 2)")
    return _save(fig, out_dir, name)


def accounted_compute(runs) -> np.ndarray:
    """Each run's training compute as the fits use it: the `budget` column (steps/scaling/runs.py),
    i.e. accounted training FLOPs (the IsoFLOP grid's budget, or a final run's own
    `training_flops`); never 6ND."""
    return np.asarray(runs.budget, dtype=float)


def _params_kind(runs) -> str:
    """'total' when the runs' N equals their recorded params_total, else 'nonembedding' (the
    runs table's default meaning of N)."""
    extra = runs.extra or ()
    if extra and all(_num(_float(e.get("params_total"))) for e in extra):
        if np.allclose(runs.params, [float(e["params_total"]) for e in extra], rtol=1e-9):
            return "total"
    return "nonembedding"


def family_training_flops(params, tokens, params_kind: str = "nonembedding") -> np.ndarray:
    """Accounted training FLOPs (steps/training/accounting.py) of a model of the IsoFLOP grid's
    shape family (steps/scaling/grid.py `shape_for_width`: 144,644 vocabulary, 4,096 context) with
    `params` parameters (`params_kind`: which count) trained on `tokens` tokens. The per-token cost
    is interpolated in log N between the family's widths 128, 256, ..., 16,384; NaN outside."""
    count = {"nonembedding": params_nonembedding, "total": params_total}[params_kind]
    shapes = [shape_for_width(h) for h in range(128, 16_384 + 1, 128)]
    log_n = np.log([count(sh) for sh in shapes])
    log_cost = np.log([3.0 * forward_flops_per_token(sh) for sh in shapes])
    x = np.log(np.asarray(params, dtype=float))
    per_token = np.exp(np.interp(x, log_n, log_cost, left=np.nan, right=np.nan))
    return per_token * np.asarray(tokens, dtype=float)


def loss_predictions_figure(law, runs, ks: Sequence[float] = (1, 5, 20, 100), final_runs=None,
                            params_kind: Optional[str] = None):
    """The figure of `plot_loss_predictions` (not saved; for inspection).

    x is accounted training FLOPs throughout. Runs sit at their `budget` (`accounted_compute`).
    Each predicted curve follows Approach 3's closed-form allocation, which is defined under
    C = 6ND in the fit's N (steps/scaling/approach3.py): for a grid of such C, (N, D) =
    (N*(C) / K, K D*(C)), drawn at the accounted training FLOPs of that (N, D)
    (`family_training_flops`, the IsoFLOP grid's shapes; `params_kind` defaults to what the runs
    record). So K = D / D* with D* the 6ND-optimal data, and each curve point is a real model's
    cost, not 6ND.
    """
    plt = _pyplot()
    kind = params_kind or _params_kind(runs)
    fig, ax = plt.subplots(figsize=(7, 5))
    sweep_c = accounted_compute(runs)
    points = [sweep_c]
    has_final = final_runs is not None and len(final_runs)
    if has_final:
        points.append(accounted_compute(final_runs))
    all_c = np.concatenate(points)
    lo, hi = all_c.min() * 10**-0.3, all_c.max() * 10**0.5
    c_6nd = np.logspace(math.log10(lo) - 3, math.log10(hi), 400)  # accounted FLOPs >= 6ND
    ax.scatter(sweep_c, runs.loss, color="grey", s=14, alpha=0.7, label="IsoFLOP runs")
    for color, k in zip(_colors(len(ks)), ks):
        n, d, loss = law.at_overtraining(c_6nd, k)
        c = family_training_flops(n, d, kind)
        keep = np.isfinite(c) & (c >= lo) & (c <= hi)
        ax.plot(c[keep], loss[keep], color=color, label=f"predicted, K = {k:g}")
    if has_final:
        final_c = accounted_compute(final_runs)
        for i, color in enumerate(_colors(len(final_runs))):
            label = final_runs.names[i] if final_runs.names else f"final run {i + 1}"
            ax.scatter([final_c[i]], [final_runs.loss[i]], color=color, edgecolor="black", s=60,
                       zorder=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel(COMPUTE_LABEL)
    ax.set_ylabel("validation loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("Approach 3 predictions at K = D / D* (D*: closed form under 6ND)", fontsize=10)
    return fig


def plot_loss_predictions(law, runs, out_dir: str, ks: Sequence[float] = (1, 5, 20, 100),
                          final_runs=None, name: str = "loss_predictions",
                          params_kind: Optional[str] = None) -> list[str]:
    """Predicted loss vs accounted training FLOPs at each K, the sweep's runs in grey, final runs
    coloured (see `loss_predictions_figure`)."""
    return _save(loss_predictions_figure(law, runs, ks, final_runs, params_kind), out_dir, name)


def plot_nll_vs_metrics(table: Mapping[str, Mapping[str, float]], nll_metric: str, out_dir: str,
                        metrics: Optional[Sequence[str]] = None,
                        highlight: Optional[Mapping[str, Mapping[str, float]]] = None,
                        name: str = "nll_vs_metrics") -> list[str]:
    """One panel per metric: metric vs NLL over runs, least-squares line; `highlight` as stars."""
    plt = _pyplot()
    if metrics is None:
        metrics = sorted({m for vals in table.values() for m in vals if m != nll_metric})
    cols = min(4, max(1, len(metrics)))
    rows = max(1, math.ceil(len(metrics) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        pairs = [(v.get(nll_metric), v.get(metric)) for v in table.values()]
        pairs = np.array([(x, y) for x, y in pairs if _num(x) and _num(y)], dtype=float).reshape(-1, 2)
        ax.scatter(pairs[:, 0], pairs[:, 1], s=14, color="C0")
        if len(pairs) >= 2 and np.ptp(pairs[:, 0]) > 0:
            slope, icpt = np.polyfit(pairs[:, 0], pairs[:, 1], 1)
            xs = np.linspace(pairs[:, 0].min(), pairs[:, 0].max(), 10)
            ax.plot(xs, slope * xs + icpt, color="C1", lw=1)
        for vals in (highlight or {}).values():
            if _num(vals.get(nll_metric)) and _num(vals.get(metric)):
                ax.scatter([vals[nll_metric]], [vals[metric]], marker="*", s=120, color="C3", edgecolor="black")
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel(nll_metric, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, out_dir, name)


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _float(x) -> Optional[float]:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None
