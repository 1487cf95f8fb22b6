"""Summary files are strict JSON: a NaN is written as null, with a count of what was missing.

Python's `json.dumps` writes a NaN as `NaN` and infinities as `Infinity` / `-Infinity`, which are
not JSON: jq, JavaScript's `JSON.parse`, BigQuery and Go reject the whole file. Every summary,
stats, status and info file, and every line of a metrics stream, is written by `dumps` here (or
passes through `with_counts` before its writer's own `json.dumps(..., allow_nan=False)`), which
writes such a number as `null` and records it in the top-level object:

    {"metrics": {"wer": null, "acc": 0.5}, "losses": [1.2, null, null],
     "non_finite": {"metrics.wer": {"nan": 1}, "losses[]": {"nan": 1, "inf": 1}}}

`non_finite` maps the path of each null written (keys joined by ".", list items as "[]") to how
many NaN, inf and -inf were there. A file read back and rewritten keeps the counts it had. Readers
treat a null as missing. Data whose top level is not an object has no place for the counts: they are
logged instead. `allow_nan=False` is the final guard: nothing non-finite reaches the file.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from typing import Any

logger = logging.getLogger(__name__)

NON_FINITE = "non_finite"


def _kind(value: Any) -> str | None:
    """"nan", "inf" or "-inf" for a non-finite real number (float, numpy scalar), else None."""
    if isinstance(value, (str, int, type(None))):  # most values, and no number check needed
        return None
    real = isinstance(value, float) or (isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral))
    if real and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    return None


def strict(value: Any, counts: dict[str, dict[str, int]], path: str = "") -> Any:
    """A copy of JSON-like `value` with each non-finite number replaced by None, counted in `counts`."""
    if isinstance(value, dict):
        return {(repr(k) if _kind(k) else k): strict(v, counts, f"{path}.{k}" if path else str(k))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v, counts, f"{path}[]") for v in value]
    kind = _kind(value)
    if kind is None:
        return value
    where = counts.setdefault(path, {})
    where[kind] = where.get(kind, 0) + 1
    return None


def with_counts(data: Any) -> Any:
    """A copy of `data` with non-finite numbers as None, counted in its top-level `non_finite`."""
    counts: dict[str, dict[str, int]] = {}
    clean = strict(data, counts)
    if counts and isinstance(clean, dict):
        kept = clean.get(NON_FINITE)
        clean[NON_FINITE] = {**(kept if isinstance(kept, dict) else {}), **counts}
    elif counts:
        logger.warning("wrote non-finite numbers as null (no top-level object to count them in): %s", counts)
    return clean


def dumps(data: Any, **kwargs: Any) -> str:
    """`json.dumps(data, **kwargs)` as strict JSON: non-finite numbers as null, counted in `non_finite`."""
    return json.dumps(with_counts(data), allow_nan=False, **kwargs)
