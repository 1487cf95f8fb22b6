"""Scaling-law fits recover known laws from synthetic runs; predictions; the CLI and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from steps.scaling.approach2 import fit_approach2, huber_parabolas
from steps.scaling.approach3 import (
    ParametricLaw,
    bootstrap_parametric,
    fit_parametric,
    objective_and_grad,
    objective_grad_many,
    parametric_intervals,
    starting_grid,
)
from steps.scaling.batched_lbfgs import batched_lbfgs
from steps.scaling.fit import cli_main, fit_scaling, predict_at_k
from steps.scaling.grid import IsoFlopGridConfig, isoflop_grid
from steps.scaling.runs import RunsError, read_runs_csv, runs_from_rows, runs_to_csv

PAPER = ParametricLaw(E=1.8, A=1.2e5, B=6e3, alpha=0.684, beta=0.439)
EXTRA = ((1.8e20, 2048), (1.8e20, 2304), (3e20, 2304), (3e20, 2560), (3e20, 2816))


def grid_runs(noise: float, seed: int = 0, law: ParametricLaw = PAPER):
    """64 runs on the paper's grid shapes (N = non-embedding), losses from `law` x lognormal noise."""
    pts = isoflop_grid(IsoFlopGridConfig(extra_points=EXTRA))
    n = np.array([p.params_nonembedding for p in pts], float)
    d = np.array([p.tokens for p in pts], float)
    rng = np.random.default_rng(seed)
    loss = law.loss(n, d) * np.exp(rng.normal(0.0, noise, len(n)))
    return runs_from_rows([{"budget": p.budget, "params": a, "tokens": b, "loss": c, "name": p.name}
                           for p, a, b, c in zip(pts, n, d, loss)], source="synthetic")


def chinchilla_runs(law: ParametricLaw, noise: float, seed: int = 0, per_budget: int = 9):
    """Runs with C = 6ND exactly, sizes spread +-0.6 decades around each budget's N*."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in (3e18, 9e18, 1.8e19, 3e19, 9e19, 1.8e20, 3e20):
        n_opt, _ = law.compute_optimal(c)
        for n in n_opt * np.logspace(-0.6, 0.6, per_budget):
            d = c / (6 * n)
            rows.append({"budget": c, "params": n, "tokens": d,
                         "loss": float(law.loss(n, d)) * float(np.exp(rng.normal(0, noise)))})
    return runs_from_rows(rows)


@pytest.fixture(scope="module")
def noisy_fit():
    runs = grid_runs(noise=0.003, seed=3)
    return runs, fit_parametric(runs.params, runs.tokens, runs.loss)


def test_paper_exponents():
    assert round(PAPER.n_exponent, 3) == 0.391 and round(PAPER.d_exponent, 3) == 0.609
    assert PAPER.d_exponent / PAPER.n_exponent == pytest.approx(1.56, abs=0.01)  # paper: ~1.57


def test_compute_optimal_is_the_constrained_minimum():
    c = 1e21
    n_opt, d_opt = PAPER.compute_optimal(c)
    assert 6 * n_opt * d_opt == pytest.approx(c)
    ns = n_opt * np.logspace(-0.5, 0.5, 2001)
    assert ns[np.argmin(PAPER.loss(ns, c / (6 * ns)))] == pytest.approx(n_opt, rel=1e-3)
    n, d, loss = PAPER.at_overtraining(c, 20)
    assert (n, d) == pytest.approx((n_opt / 20, d_opt * 20)) and loss > PAPER.loss(n_opt, d_opt)


def test_gradient_matches_finite_differences():
    runs = grid_runs(0.003)
    args = (np.log(runs.params), np.log(runs.tokens), np.log(runs.loss), np.arange(64) % 3 + 0.5, 1e-3)
    theta = np.array([11.0, 9.0, 0.5, 0.6, 0.5])
    f, g = objective_and_grad(theta, *args)
    eps = 1e-7
    fd = [(objective_and_grad(theta + eps * e, *args)[0] - objective_and_grad(theta - eps * e, *args)[0]) / (2 * eps)
          for e in np.eye(5)]
    assert g == pytest.approx(fd, rel=1e-5, abs=1e-6)
    fm, gm = objective_grad_many(np.stack([theta, theta + 0.1]), *args)
    assert fm[0] == pytest.approx(f) and gm[0] == pytest.approx(g)


def test_batched_lbfgs_solves_many_problems():
    centres = np.random.default_rng(0).normal(size=(50, 2))

    def rosenbrock(x, rows):  # shifted Rosenbrock, minimum at centres[rows] + 1
        u, v = (x - centres[rows]).T
        f = (1 - u) ** 2 + 100 * (v - u * u) ** 2
        g = np.stack([-2 * (1 - u) - 400 * u * (v - u * u), 200 * (v - u * u)], axis=1)
        return f, g

    x, f = batched_lbfgs(rosenbrock, centres - 1.5)
    assert np.abs(x - (centres + 1)).max() < 1e-4 and f.max() < 1e-8


def test_approach3_recovers_noise_free_law():
    runs = grid_runs(noise=0.0)
    fit = fit_parametric(runs.params, runs.tokens, runs.loss, starts=starting_grid()[::7])
    law = fit.law
    assert law.alpha == pytest.approx(0.684, abs=1e-3) and law.beta == pytest.approx(0.439, abs=1e-3)
    assert law.E == pytest.approx(1.8, rel=1e-3)


def test_approach3_recovers_noisy_law(noisy_fit):
    runs, fit = noisy_fit
    assert fit.n_starts == 4500
    assert fit.law.alpha == pytest.approx(0.684, abs=0.02)
    assert fit.law.beta == pytest.approx(0.439, abs=0.05)
    assert fit.law.E == pytest.approx(1.8, rel=0.03)
    assert fit.law.n_exponent == pytest.approx(0.391, abs=0.03)
    # No start found a better point than the reported optimum.
    f0, _ = objective_and_grad(fit.theta, np.log(runs.params), np.log(runs.tokens), np.log(runs.loss),
                               np.ones(64))
    assert f0 == pytest.approx(fit.objective)


def test_approach3_bootstrap_intervals_cover_truth(noisy_fit):
    runs, fit = noisy_fit
    thetas = bootstrap_parametric(runs.params, runs.tokens, runs.loss, fit, resamples=200, seed=1)
    iv = parametric_intervals(thetas)
    for key, true in (("alpha", 0.684), ("beta", 0.439), ("E", 1.8), ("n_exponent", PAPER.n_exponent)):
        lo, hi = iv[key]
        assert lo < true < hi, (key, iv[key])
        assert hi - lo < {"alpha": 0.1, "beta": 0.2, "E": 0.2, "n_exponent": 0.1}[key]
    again = bootstrap_parametric(runs.params, runs.tokens, runs.loss, fit, resamples=200, seed=1)
    assert np.array_equal(thetas, again)  # seeded


def test_approach3_is_robust_to_an_outlier():
    runs = grid_runs(noise=0.002, seed=5)
    loss = runs.loss.copy()
    loss[10] *= 1.3
    fit = fit_parametric(runs.params, runs.tokens, loss, starts=starting_grid()[::7])
    assert fit.law.alpha == pytest.approx(0.684, abs=0.02)


def test_approach2_exponents_match_the_analytic_ones():
    law = PAPER
    exact = fit_approach2(chinchilla_runs(law, noise=0.0))
    assert exact.n_exponent == pytest.approx(law.n_exponent, abs=0.01)
    assert exact.d_exponent == pytest.approx(law.d_exponent, abs=0.01)
    for m in exact.minima:
        assert m.n_opt == pytest.approx(law.compute_optimal(m.budget)[0], rel=0.15)
        assert not m.extrapolated
    noisy = fit_approach2(chinchilla_runs(law, noise=0.002, seed=2), bootstrap=200, seed=0)
    assert noisy.n_exponent == pytest.approx(law.n_exponent, abs=0.04)
    assert noisy.d_exponent == pytest.approx(law.d_exponent, abs=0.04)
    lo, hi = noisy.intervals["n_exponent"]
    assert lo < law.n_exponent < hi and hi - lo < 0.15
    assert noisy.intervals["resamples"] == 200


def test_huber_parabola_is_weighted_least_squares_without_outliers_and_robust_with_one():
    x = np.linspace(-1, 1, 9)
    y = 2.0 + 0.3 * x * x - 0.1 * x
    got = huber_parabolas(x, y, np.ones((1, 9)), delta=1.0)[0]
    assert got == pytest.approx([0.3, -0.1, 2.0], rel=1e-9)
    y_bad = y.copy()
    y_bad[4] += 0.2
    robust = huber_parabolas(x, y_bad, np.ones((1, 9)))[0]
    ols = np.polyfit(x, y_bad, 2)
    assert abs(robust[0] - 0.3) < abs(ols[0] - 0.3) / 5
    few = huber_parabolas(x, y, np.array([[3.0, 6.0] + [0.0] * 7]))
    assert np.isnan(few).all()  # under 3 distinct x: no parabola


def test_predict_at_k():
    got = predict_at_k(PAPER, 1e22, 5)
    assert got["params"] == pytest.approx(got["params_opt"] / 5)
    assert got["tokens"] == pytest.approx(got["tokens_opt"] * 5)
    assert 6 * got["params"] * got["tokens"] == pytest.approx(1e22)
    assert predict_at_k(PAPER, 1e22, 1)["loss"] < got["loss"]


def _write(tmp_path, runs, name="runs.csv"):
    path = tmp_path / name
    path.write_text(runs_to_csv(runs))
    return str(path)


def test_cli_json(tmp_path, capsys):
    path = _write(tmp_path, chinchilla_runs(PAPER, noise=0.002))
    assert cli_main([path, "--json", "--bootstrap", "20", "--predict", "1e9,2e10",
                     "--predict-k", "1e21,1", "1e21,20"]) == 0
    out = json.loads(capsys.readouterr().out)
    a2, a3 = out["approach2"], out["approach3"]
    assert {"per_budget", "n_exponent", "n_coefficient", "d_exponent", "d_coefficient", "intervals"} <= set(a2)
    assert {"E", "A", "B", "alpha", "beta", "n_exponent", "d_exponent", "intervals"} <= set(a3)
    assert len(a2["per_budget"]) == 7 and a3["intervals"]["resamples"] == 20
    assert out["params_kind"] == "nonembedding"
    assert a3["n_exponent"] == pytest.approx(a3["beta"] / (a3["alpha"] + a3["beta"]))
    p = out["predictions"]
    assert p[0]["loss"] == pytest.approx(PAPER.loss(1e9, 2e10), rel=0.02)
    assert p[2]["k"] == 20 and p[2]["loss"] > p[1]["loss"]
    assert cli_main([path, "--bootstrap", "0", "--params-total"]) == 0
    text = capsys.readouterr().out
    assert "Approach 2" in text and "N = total params" in text


@pytest.mark.parametrize("body, message", [
    ("budget,params,tokens\n1,2,3\n", "missing column(s) 'loss'"),
    ("budget,params,tokens,loss\n3e18,1e8,2e9,2.5\n3e18,-1,2e9,2.5\n", "row 2 (line 3): 'params' must be a finite positive"),
    ("budget,params,tokens,loss\n3e18,1e8,2e9,abc\n", "row 1 (line 2): 'loss' is 'abc', not a number"),
    ("budget,params,tokens,loss\n3e18,1e8,2e9,\n", "row 1 (line 2): 'loss' is empty"),
    ("budget,params,tokens,loss\n", "no runs"),
])
def test_bad_csv_errors(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(RunsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_runs_csv(str(path))


def test_too_few_runs_per_budget_leaves_approach2_unfitted_with_the_reason(tmp_path, capsys):
    runs = chinchilla_runs(PAPER, noise=0.0, per_budget=5)
    keep = [i for i in range(len(runs)) if not (runs.budget[i] == 9e18 and i % 5 > 1)]
    path = _write(tmp_path, runs.subset(keep))
    assert cli_main([path, "--json", "--bootstrap", "0"]) == 0  # Approach 3 is still fitted
    fits = json.loads(capsys.readouterr().out)
    err = fits["approach2"]["error"]
    assert "budget 9e+18 has 2 run(s)" in err and "rows 6, 7" in err and "at least 3" in err
    assert fits["approach3"]["alpha"] == pytest.approx(PAPER.alpha, rel=0.05)
    assert cli_main([path, "--bootstrap", "0"]) == 0
    assert "Approach 2 (IsoFLOP parabolas):\n" in capsys.readouterr().out


def test_fit_scaling_needs_enough_runs():
    runs = chinchilla_runs(PAPER, noise=0.0, per_budget=3).subset(range(5))
    with pytest.raises(RunsError, match="needs at least 6"):
        fit_scaling(runs, bootstrap=0)
