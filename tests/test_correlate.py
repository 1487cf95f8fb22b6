"""NLL-vs-downstream correlations: values, signs, missing metrics, degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from steps.scaling.correlate import as_markdown, correlate


def _table():
    rng = np.random.default_rng(0)
    nll = np.linspace(2.0, 3.0, 12)
    table = {}
    for i, x in enumerate(nll):
        table[f"run{i}"] = {
            "nll": float(x),
            "asr/wer": float(5 * x + rng.normal(0, 0.05)),  # rises with NLL
            "sblimp/acc": float(0.9 - 0.1 * x + rng.normal(0, 0.03)),  # falls, noisily
            "tts/sim": float(np.exp(-3 * x)),  # monotone, not linear
        }
    del table["run3"]["asr/wer"]
    table["run5"]["asr/wer"] = float("nan")
    table["run7"]["tts/sim"] = "n/a"  # not a number: treated as missing
    table["nonll"] = {"asr/wer": 1.0}
    return table


def test_values_match_scipy_and_missing_runs_are_left_out():
    table = _table()
    rows = {r.metric: r for r in correlate(table, "nll")}
    assert set(rows) == {"asr/wer", "sblimp/acc", "tts/sim"}
    wer = rows["asr/wer"]
    keep = [k for k, v in table.items() if "nll" in v and isinstance(v.get("asr/wer"), float)
            and np.isfinite(v["asr/wer"])]
    xs, ys = [table[k]["nll"] for k in keep], [table[k]["asr/wer"] for k in keep]
    assert wer.runs == 10 == len(keep) and wer.missing == 3
    assert wer.pearson == pytest.approx(stats.pearsonr(xs, ys)[0])
    assert wer.spearman == pytest.approx(stats.spearmanr(xs, ys)[0])
    assert wer.pearson > 0.99 and wer.pearson_p < 1e-6
    assert rows["sblimp/acc"].pearson < 0 and rows["sblimp/acc"].abs_pearson == -rows["sblimp/acc"].pearson
    sim = rows["tts/sim"]
    assert sim.runs == 11 and sim.spearman == pytest.approx(-1.0) and -1 < sim.pearson < -0.9


def test_degenerate_cases_are_reported_not_raised():
    table = {f"r{i}": {"nll": 2.0 + i, "const": 1.0, "rare": 3.0 if i < 2 else None} for i in range(5)}
    rows = {r.metric: r for r in correlate(table, "nll", metrics=["const", "rare", "absent"])}
    assert rows["const"].pearson is None and "constant" in rows["const"].note
    assert rows["rare"].runs == 2 and rows["rare"].pearson is None and "fewer than 3" in rows["rare"].note
    assert rows["absent"].runs == 0 and rows["absent"].missing == 5


def test_markdown_table():
    md = as_markdown(correlate(_table(), "nll"), "nll")
    lines = md.splitlines()
    assert lines[0].startswith("| metric (vs nll) | runs | Pearson r")
    assert len(lines) == 2 + 3 and "| asr/wer | 10 |" in md
