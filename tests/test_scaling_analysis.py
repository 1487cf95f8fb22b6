"""The analysis steps on hand-made train/eval summary.json files: outputs, plots, skips, errors."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from steps.scaling.analysis import (
    CorrelationConfig,
    RunRef,
    ScalingAnalysisConfig,
    run_correlation,
    run_scaling_analysis,
)
from steps.scaling.approach3 import ParametricLaw
from steps.scaling.grid import IsoFlopGridConfig, isoflop_grid
from steps.scaling.runs import RunsError, read_runs_csv

LAW = ParametricLaw(E=1.8, A=1.2e5, B=6e3, alpha=0.684, beta=0.439)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _dump(path: Path, obj: dict) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps(obj))
    return str(path)


def _make_run(root: Path, name: str, budget: float, shape_point, loss: float, evals: dict) -> RunRef:
    p = shape_point
    train = _dump(root / "checkpoints" / name, {
        "params_total": p.params_total, "params_nonembedding": p.params_nonembedding, "tokens": p.tokens,
        "training_flops": p.achieved_training_flops, "model": p.shape.__dict__})
    paths = {}
    for key, summary in evals.items():
        target = root / "evaluation" / f"{name}-{key}"
        if summary is None:  # eval dir exists, summary never written
            target.mkdir(parents=True)
            paths[key] = str(target)
        else:
            paths[key] = _dump(target, summary)
    return RunRef(budget=budget, train=train, evals=paths)


@pytest.fixture(scope="module")
def run_refs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    refs = []
    points = isoflop_grid(IsoFlopGridConfig(budgets=(3e18, 9e18, 1.8e19)))
    for i, p in enumerate(points):
        loss = float(LAW.loss(p.params_nonembedding, p.tokens) * np.exp(rng.normal(0, 0.002)))
        evals = {
            "validation_nll": {"task": "validation_nll", "metrics": {"nll_asr_all": loss, "nll_tts_all": loss + 0.1}},
            "asr": {"task": "asr", "metrics": {"wer": 10 * loss + rng.normal(0, 0.1), "note": "text"}},
            "sblimp": {"task": "sblimp", "metrics": {"accuracy": 0.9 - 0.1 * loss}},
        }
        if i == 3:
            evals["asr"] = None  # this run's ASR eval has no summary: only that metric is missing
        refs.append(_make_run(root, p.name, p.budget, p, loss, evals))
    broken = _make_run(root, "no-nll", 3e18, points[0], 0.0,
                       {"validation_nll": None, "asr": {"task": "asr", "metrics": {"wer": 30.0}}})
    final = []
    for k, p in (("a", points[5]), ("b", points[-1])):
        nll = float(LAW.loss(p.params_nonembedding, p.tokens * 30)) - 0.05
        final.append(_make_run(root, f"soda-{k}", 1e21, p, nll, {
            "validation_nll": {"task": "validation_nll", "metrics": {"nll_asr_all": nll}},
            "asr": {"task": "asr", "metrics": {"wer": 10 * nll}}}))
    return refs, broken, final


def _check_png_svg(out: Path, name: str):
    assert (out / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    root = ET.parse(out / f"{name}.svg").getroot()
    assert root.tag.endswith("svg")


def test_scaling_analysis_outputs(run_refs, tmp_path):
    refs, broken, final = run_refs
    out = tmp_path / "analysis"
    cfg = ScalingAnalysisConfig(output_path=str(out), runs=(*refs, broken), final_runs=tuple(final),
                                bootstrap=30)
    run_scaling_analysis(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == len(refs) == 33
    assert summary["skipped"] == [{"run": "no-nll", "reason": f"{broken.evals['validation_nll']}/summary.json missing"}]
    assert summary["approach3"]["alpha"] == pytest.approx(0.684, abs=0.05)
    assert set(summary["approach2"]) == {"n_exponent", "n_coefficient", "d_exponent", "d_coefficient"}
    fits = json.loads((out / "fits.json").read_text())
    assert fits["approach3"]["intervals"]["resamples"] == 30 and len(fits["approach2"]["per_budget"]) == 3
    assert len(fits["predictions"]) == 16 and {p["k"] for p in fits["predictions"]} == {1, 5, 20, 100}
    runs = read_runs_csv(str(out / "runs.csv"))
    assert len(runs) == 33 and runs.params.min() == pytest.approx(3_148_288)  # non-embedding
    for name in ("isoflop_curves", "optimal_allocation", "loss_predictions"):
        _check_png_svg(out, name)
    assert set(summary["files"]) == {"fits.json", "runs.csv", "isoflop_curves.png", "isoflop_curves.svg",
                                     "optimal_allocation.png", "optimal_allocation.svg",
                                     "loss_predictions.png", "loss_predictions.svg"}
    assert not list(out.glob("*.tmp"))
    # Rerun over the finished output (resume): same fits, same files.
    first = (out / "fits.json").read_text()
    run_scaling_analysis(cfg)
    assert (out / "fits.json").read_text() == first


def test_scaling_analysis_from_csv_with_total_params(run_refs, tmp_path):
    refs, _, _ = run_refs
    first = tmp_path / "first"
    run_scaling_analysis(ScalingAnalysisConfig(output_path=str(first), runs=tuple(refs), bootstrap=0,
                                               params="total"))
    again = tmp_path / "again"
    run_scaling_analysis(ScalingAnalysisConfig(output_path=str(again), runs_csv=str(first / "runs.csv"),
                                               bootstrap=0, params="total"))
    a, b = (json.loads((d / "fits.json").read_text()) for d in (first, again))
    assert a["params_kind"] == "total" and b["approach3"]["alpha"] == pytest.approx(a["approach3"]["alpha"])
    assert read_runs_csv(str(first / "runs.csv")).params.min() == pytest.approx(77_206_016)


def test_correlation_step(run_refs, tmp_path):
    refs, broken, final = run_refs
    out = tmp_path / "corr"
    run_correlation(CorrelationConfig(output_path=str(out), runs=(*refs, broken), highlight=tuple(final)))
    result = json.loads((out / "correlations.json").read_text())
    rows = {r["metric"]: r for r in result["correlations"]}
    assert set(rows) == {"asr/wer", "sblimp/accuracy"}  # NLL variants and non-numbers are not metrics
    assert rows["asr/wer"]["runs"] == 32 and rows["asr/wer"]["missing"] == 2  # run 3 lacks ASR; no-nll lacks NLL
    assert rows["asr/wer"]["pearson"] > 0.9 and rows["sblimp/accuracy"]["pearson"] == pytest.approx(-1.0)
    assert result["skipped"][0]["run"] == "no-nll"
    assert "| asr/wer | 32 |" in (out / "correlations.md").read_text()
    _check_png_svg(out, "nll_vs_metrics")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pearson"]["asr/wer"] == rows["asr/wer"]["pearson"]


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the fit divides by no zero (a degenerate L-BFGS pair is skipped)
def test_analysis_fits_approach3_and_says_why_when_approach2_is_undefined(run_refs, tmp_path):
    """Two sizes per budget give no parabola (a rehearsal's sweep, short runs): Approach 2 is recorded as not
    fitted with the reason, Approach 3 is fitted, and its plots are drawn."""
    refs, _, _ = run_refs
    by_budget = {}
    for ref in refs:
        by_budget.setdefault(ref.budget, []).append(ref)
    two_each = tuple(r for runs in by_budget.values() for r in runs[:2])
    out = tmp_path / "a3only"
    run_scaling_analysis(ScalingAnalysisConfig(output_path=str(out), runs=two_each, bootstrap=20))
    summary = json.loads((out / "summary.json").read_text())
    assert "at least 3 distinct sizes per budget" in summary["approach2_error"]
    assert summary["approach2"] == {"error": summary["approach2_error"]}
    assert summary["approach3"]["alpha"] > 0 and summary["runs"] == 6
    assert not (out / "isoflop_curves.png").exists()
    assert any(f.startswith("loss_predictions") for f in summary["files"])


def test_correlation_of_unlabelled_runs_uses_their_training_flops(run_refs, tmp_path):
    """The final SODA models have no IsoFLOP budget (RunRef budget 0): their own FLOPs stand in."""
    import dataclasses

    from steps.scaling.analysis import read_run

    refs, _, final = run_refs
    unlabelled = tuple(dataclasses.replace(r, budget=0.0) for r in refs[:4])
    row, _, problem = read_run(unlabelled[0])
    assert problem is None
    assert row["budget"] == json.loads(Path(unlabelled[0].train, "summary.json").read_text())["training_flops"] > 0
    out = tmp_path / "corr0"
    run_correlation(CorrelationConfig(output_path=str(out), runs=unlabelled))
    assert json.loads((out / "summary.json").read_text())["runs"] == 4
    no_flops = tmp_path / "no-flops"
    _dump(no_flops, {"params_total": 1, "params_nonembedding": 1, "tokens": 1})
    with pytest.raises(RunsError, match="no budget given .* 'training_flops'"):
        read_run(RunRef(budget=0.0, train=str(no_flops)))


def test_correlation_from_csv(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("name,nll_asr_all,asr/wer,tts/sim\na,2.0,10,0.5\nb,2.5,12,\nc,3.0,15,0.4\nd,3.5,19,0.3\n")
    run_correlation(CorrelationConfig(output_path=str(tmp_path / "o"), metrics_csv=str(path)))
    rows = {r["metric"]: r for r in json.loads((tmp_path / "o" / "correlations.json").read_text())["correlations"]}
    assert rows["asr/wer"]["runs"] == 4 and rows["tts/sim"]["runs"] == 3
    bad = tmp_path / "bad.csv"
    bad.write_text("run,nll\n")
    with pytest.raises(RunsError, match="needs columns 'name' and 'nll_asr_all'"):
        run_correlation(CorrelationConfig(output_path=str(tmp_path / "p"), metrics_csv=str(bad)))


def test_config_errors(tmp_path, run_refs):
    refs, _, _ = run_refs
    with pytest.raises(ValueError, match="exactly one of"):
        run_scaling_analysis(ScalingAnalysisConfig(output_path=str(tmp_path), runs=tuple(refs), runs_csv="x.csv"))
    with pytest.raises(ValueError, match="'nonembedding' or 'total'"):
        run_scaling_analysis(ScalingAnalysisConfig(output_path=str(tmp_path), runs=tuple(refs), params="all"))
    missing = RunRef(budget=3e18, train=str(tmp_path / "nowhere"), evals={})
    with pytest.raises(RunsError, match="nowhere/summary.json does not exist; the train step has not finished"):
        run_scaling_analysis(ScalingAnalysisConfig(output_path=str(tmp_path), runs=(missing,)))
