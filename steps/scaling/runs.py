"""The runs a scaling-law fit reads: (budget, params, tokens, loss) rows, from CSV or code.

CSV format (header required, extra columns kept as strings and ignored by the fits):

    budget,params,tokens,loss
    3e18,75512576,2107834368,2.91

`budget` is the run's compute label (the IsoFLOP grid's training-FLOP budget in this project),
`params` the model size N (non-embedding unless the caller says total), `tokens` D, `loss`
the validation NLL. All four must be finite and positive.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np

REQUIRED_COLUMNS = ("budget", "params", "tokens", "loss")


class RunsError(ValueError):
    """A runs table that cannot be fitted; the message says where and what to do."""


@dataclass(frozen=True)
class Runs:
    """Columns of a runs table as float arrays; `names` and `extra` are optional labels."""

    budget: np.ndarray
    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    names: tuple[str, ...] = ()
    extra: tuple[dict, ...] = field(default=(), compare=False)
    source: str = "runs"

    def __post_init__(self) -> None:
        n = len(self.loss)
        for col in REQUIRED_COLUMNS:
            arr = getattr(self, col)
            if arr.shape != (n,):
                raise RunsError(f"{self.source}: column {col!r} has {arr.shape} values, expected ({n},)")

    def __len__(self) -> int:
        return len(self.loss)

    def budgets(self) -> list[float]:
        """Distinct budgets, ascending (budgets equal to 9 significant digits are one)."""
        return sorted({float(f"{b:.9e}") for b in self.budget})

    def at_budget(self, budget: float) -> np.ndarray:
        return np.flatnonzero(np.isclose(self.budget, budget, rtol=1e-8, atol=0))

    def subset(self, index: Sequence[int]) -> "Runs":
        index = np.asarray(index, dtype=int)
        return Runs(self.budget[index], self.params[index], self.tokens[index], self.loss[index],
                    tuple(self.names[i] for i in index) if self.names else (),
                    tuple(self.extra[i] for i in index) if self.extra else (), self.source)

    def label(self, i: int) -> str:
        return f"{self.source} row {i + 1}" + (f" ({self.names[i]})" if self.names and self.names[i] else "")


def runs_from_rows(rows: Iterable[dict], source: str = "runs",
                   lines: Optional[Sequence[int]] = None) -> Runs:
    """Build and validate `Runs` from dicts with the four required keys (extra keys kept).

    Errors name the row (1-based) and, when `lines` gives each row's file line, that line.
    """
    cols: dict[str, list[float]] = {c: [] for c in REQUIRED_COLUMNS}
    names, extra = [], []
    for i, row in enumerate(rows):
        where = f"{source} row {i + 1}" + (f" (line {lines[i]})" if lines else "")
        for col in REQUIRED_COLUMNS:
            raw = row.get(col)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                raise RunsError(f"{where}: {col!r} is empty; every run needs budget, params, tokens and loss")
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise RunsError(f"{where}: {col!r} is {raw!r}, not a number") from None
            if not math.isfinite(value) or value <= 0:
                raise RunsError(f"{where}: {col!r} must be a finite positive number, got {raw!r}")
            cols[col].append(value)
        names.append(str(row.get("name", "") or ""))
        extra.append({k: v for k, v in row.items() if k not in REQUIRED_COLUMNS})
    if not cols["loss"]:
        raise RunsError(f"{source}: no runs")
    return Runs(*(np.asarray(cols[c], dtype=float) for c in REQUIRED_COLUMNS),
                names=tuple(names) if any(names) else (), extra=tuple(extra), source=source)


def read_runs_csv(path: str, text: Optional[str] = None) -> Runs:
    """Read and validate a runs CSV (local path or fsspec URL)."""
    if text is None:
        import fsspec

        with fsspec.open(path, "r") as f:
            text = f.read()
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise RunsError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; the header is {header} and "
            f"must name {', '.join(REQUIRED_COLUMNS)} (extra columns are allowed)")
    reader.fieldnames = header
    rows, lines = [], []
    for row in reader:
        lines.append(reader.line_num)
        if None in row:
            raise RunsError(f"{path} line {reader.line_num}: more fields than the header has")
        rows.append({k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()})
    return runs_from_rows(rows, source=path, lines=lines)


def runs_to_csv(runs: Runs, extra_columns: Sequence[str] = ()) -> str:
    """The runs as CSV text (the four required columns, then `name` and `extra_columns`)."""
    out = io.StringIO()
    cols = list(REQUIRED_COLUMNS) + ["name", *extra_columns]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(cols)
    for i in range(len(runs)):
        extra = runs.extra[i] if runs.extra else {}
        writer.writerow([repr(float(runs.budget[i])), repr(float(runs.params[i])),
                         repr(float(runs.tokens[i])), repr(float(runs.loss[i])),
                         runs.names[i] if runs.names else "", *(extra.get(c, "") for c in extra_columns)])
    return out.getvalue()
