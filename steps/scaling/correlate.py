"""How well validation NLL tracks each downstream metric across runs (the paper's table).

Input is a table run -> {metric: value} in which one metric is the validation NLL (the
paper's headline NLL_1; in this project the `validation_nll` eval's `nll_asr_all`). For every
other metric, the runs that have both values give Pearson's r and Spearman's rho (scipy) with
their p-values. Runs lacking a metric (eval not run, failed, or NaN) are left out of that
metric only, and the count used is reported. The paper prints magnitudes (sBLIMP accuracy
falls as NLL falls, WER rises with it); we keep the sign and add `abs_pearson`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Optional

MIN_RUNS = 3


@dataclass(frozen=True)
class Correlation:
    metric: str
    runs: int  # runs with both the NLL and this metric
    missing: int  # runs without this metric
    pearson: Optional[float]
    pearson_p: Optional[float]
    spearman: Optional[float]
    spearman_p: Optional[float]
    note: str = ""

    @property
    def abs_pearson(self) -> Optional[float]:
        return None if self.pearson is None else abs(self.pearson)

    def as_dict(self) -> dict:
        return {**asdict(self), "abs_pearson": self.abs_pearson}


def _value(x) -> Optional[float]:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _finite(x) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else float(x)


def correlate(table: Mapping[str, Mapping[str, object]], nll_metric: str,
              metrics: Optional[list[str]] = None, min_runs: int = MIN_RUNS) -> list[Correlation]:
    """Correlations of `nll_metric` with every other metric (or `metrics`) across the runs."""
    from scipy import stats

    with_nll = {run: _value(vals.get(nll_metric)) for run, vals in table.items()}
    with_nll = {run: v for run, v in with_nll.items() if v is not None}
    if metrics is None:
        metrics = sorted({m for vals in table.values() for m in vals if m != nll_metric})
    out = []
    for metric in metrics:
        pairs = [(nll, _value(table[run].get(metric))) for run, nll in with_nll.items()]
        pairs = [(x, y) for x, y in pairs if y is not None]
        missing = len(table) - len(pairs)
        if len(pairs) < min_runs:
            out.append(Correlation(metric, len(pairs), missing, None, None, None, None,
                                   f"fewer than {min_runs} runs with both values"))
            continue
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        if len(set(xs)) < 2 or len(set(ys)) < 2:
            out.append(Correlation(metric, len(pairs), missing, None, None, None, None,
                                   "constant values: correlation undefined"))
            continue
        pr, pp = stats.pearsonr(xs, ys)
        sr, sp = stats.spearmanr(xs, ys)
        out.append(Correlation(metric, len(pairs), missing, _finite(pr), _finite(pp), _finite(sr),
                               _finite(sp)))
    return out


def as_markdown(rows: list[Correlation], nll_metric: str) -> str:
    """A Markdown table: metric, runs, Pearson r, |r|, Spearman rho."""

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    lines = [f"| metric (vs {nll_metric}) | runs | Pearson r | abs r | Spearman rho | note |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.metric} | {r.runs} | {fmt(r.pearson)} | {fmt(r.abs_pearson)} | "
                     f"{fmt(r.spearman)} | {r.note} |")
    return "\n".join(lines)
