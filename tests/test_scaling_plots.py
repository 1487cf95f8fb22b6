"""The scaling plots put compute at accounted training FLOPs (steps/training/accounting.py), not 6ND."""

from __future__ import annotations

import numpy as np
import pytest

from steps.scaling import plots
from steps.scaling.approach3 import ParametricLaw
from steps.scaling.grid import IsoFlopGridConfig, isoflop_grid
from steps.scaling.runs import runs_from_rows

LAW = ParametricLaw(E=1.8, A=1.2e5, B=6e3, alpha=0.684, beta=0.439)


def _runs(budgets=(3e18, 9e18), params="nonembedding", source="runs"):
    rows = [{"budget": p.budget, "params": getattr(p, f"params_{params}"), "tokens": p.tokens,
             "loss": float(LAW.loss(p.params_nonembedding, p.tokens)), "name": f"w{p.shape.hidden}",
             "params_total": p.params_total, "params_nonembedding": p.params_nonembedding,
             "training_flops": p.achieved_training_flops}
            for p in isoflop_grid(IsoFlopGridConfig(budgets=budgets))]
    return runs_from_rows(rows, source=source)


def test_family_flops_are_the_grid_models_accounted_flops_not_6nd():
    points = isoflop_grid(IsoFlopGridConfig(budgets=(3e18,)))
    for p in points:
        got = plots.family_training_flops(p.params_nonembedding, p.tokens)
        assert got == pytest.approx(p.achieved_training_flops, rel=1e-9)
        got_total = plots.family_training_flops(p.params_total, p.tokens, "total")
        assert got_total == pytest.approx(p.achieved_training_flops, rel=1e-9)
    small = points[0]  # width 256: the LM head dominates, 6ND is an order of magnitude short
    assert 6 * small.params_nonembedding * small.tokens < small.achieved_training_flops / 10
    assert np.isnan(plots.family_training_flops(10.0, 1e9))  # outside the family: no guess


def test_loss_prediction_plot_uses_accounted_flops():
    runs, final = _runs(), _runs(budgets=(1.8e19,), source="final")
    fig = plots.loss_predictions_figure(LAW, runs, ks=(1, 20), final_runs=final.subset([0]))
    ax = fig.axes[0]
    assert "accounted" in ax.get_xlabel() and "C = 6ND" not in ax.get_xlabel()
    sweep = next(c for c in ax.collections if c.get_label() == "IsoFLOP runs")
    xs = sweep.get_offsets()[:, 0]
    np.testing.assert_allclose(xs, runs.budget)  # the budgets the fits use
    np.testing.assert_allclose(xs, [float(e["training_flops"]) for e in runs.extra], rtol=0.011)
    assert np.all(xs > 1.5 * 6 * runs.params * runs.tokens)  # well above 6ND at this vocabulary
    final_point = next(c for c in ax.collections if c.get_label() == final.names[0])
    assert final_point.get_offsets()[0, 0] == pytest.approx(final.budget[0])

    # Each K = 1 curve point (x, loss): find the 6ND compute C whose Approach 3 allocation has that
    # loss; x must be that model's accounted FLOPs, not C.
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "predicted, K = 1")
    x, y = line.get_xdata(), line.get_ydata()
    assert len(x) > 50 and np.all(np.diff(x) > 0)
    dense = np.logspace(14, 24, 20001)
    dense_loss = LAW.at_overtraining(dense, 1)[2]  # decreasing in C
    c_6nd = np.exp(np.interp(-y, -dense_loss, np.log(dense)))
    n, d, _ = LAW.at_overtraining(c_6nd, 1)
    np.testing.assert_allclose(x, plots.family_training_flops(n, d), rtol=2e-3)
    assert np.all(x > 1.5 * c_6nd)
    assert 6 * n * d == pytest.approx(c_6nd, rel=1e-9)
    plots._pyplot().close(fig)


def test_params_kind_is_read_from_the_runs():
    assert plots._params_kind(_runs()) == "nonembedding"
    assert plots._params_kind(_runs(params="total")) == "total"
    bare = runs_from_rows([{"budget": 3e18, "params": 1e8, "tokens": 2e9, "loss": 3.0}])
    assert plots._params_kind(bare) == "nonembedding"


def test_optimal_allocation_axis_is_the_budget_in_accounted_flops(monkeypatch, tmp_path):
    captured = []
    monkeypatch.setattr(plots, "_save", lambda fig, out_dir, name: captured.append(fig) or [])
    minima = [{"budget": b, "n_opt": 1e7 * b / 3e18, "d_opt": 2e9 * b / 3e18} for b in (3e18, 9e18, 1.8e19)]
    a2 = {"per_budget": minima, "n_coefficient": 1e7 / 3e18, "n_exponent": 1.0,
          "d_coefficient": 2e9 / 3e18, "d_exponent": 1.0}
    plots.plot_optimal_allocation(a2, str(tmp_path), extrapolate_to=1e20)
    for ax in captured[0].axes:
        assert ax.get_xlabel() == plots.COMPUTE_LABEL and "accounted" in ax.get_xlabel()
        points = next(c for c in ax.collections if c.get_label().endswith("per budget"))
        np.testing.assert_allclose(points.get_offsets()[:, 0], [3e18, 9e18, 1.8e19])
    plots._pyplot().close(captured[0])
