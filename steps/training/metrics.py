"""A Levanter tracker that writes every logged step as one JSON line: `{output}/metrics.jsonl`.

Registered as tracker type `soda_jsonl` (a `levanter.tracker.TrackerConfig` subclass), so the
trainer calls it like W&B: whatever Levanter logs at a step (train/loss, eval/loss, throughput,
learning rate, ...) is merged into one row `{"step": s, ...scalars}`, written when the next step
starts and at finish. Only JAX process 0 writes.

Local files are appended and flushed row by row, so a run killed with -9 keeps what it logged.
Object stores cannot append, so there the whole file is rewritten every `flush_every_s` seconds
and at finish. On resume the first row of the new session drops rows at or after its step
(they were logged after the checkpoint the run restarted from), and a line is appended to
`{output}/train_sessions.jsonl`: {"session": n, "first_step": s, "time": ...}.

Every line is strict JSON: a NaN or infinite value (a diverged loss) is written as null, and the row
counts it, e.g. `"non_finite": {"train/loss": {"nan": 1}}` (see pipeline.strict_json).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Mapping, Optional

from pipeline import strict_json

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SESSIONS_FILE = "train_sessions.jsonl"


def read_jsonl(url: str) -> list[dict]:
    """Rows of a JSON-lines file (local or fsspec URL); [] when missing. A torn last line is skipped."""
    from steps.sharding import exists, fs_and_path

    if not exists(url):
        return []
    fs, p = fs_and_path(url)
    rows = []
    with fs.open(p, "rt") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    logger.warning("%s: skipping a torn line (a killed writer): %.60r", url, line)
    return rows


def _scalar(value: Any) -> Optional[float | int | bool | str]:
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value  # a NaN or infinity is written as null, counted in the row's `non_finite`
    try:
        import numpy as np

        arr = np.asarray(value)
    except Exception:
        return None
    if arr.shape != () or arr.dtype.kind not in "biuf":
        return None
    return arr.item()


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        name = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, name))
        else:
            s = _scalar(v)
            if s is not None:
                out[name] = s
    return out


class JsonlMetricsTracker:
    """Implements levanter.tracker.Tracker (its base class is mixed in by `make_tracker`)."""

    name = "soda_jsonl"

    def __init__(self, output_dir: str, flush_every_s: float = 60.0):
        from steps.sharding import join

        self.output_dir = output_dir
        self.path = join(output_dir, METRICS_FILE)
        self.local = "://" not in output_dir or output_dir.startswith("file://")
        self.flush_every_s = flush_every_s
        self._step: Optional[int] = None
        self._row: dict[str, Any] = {}
        self._rows: Optional[list[dict]] = None  # all rows (object stores only)
        self._started = False
        self._last_flush = time.monotonic()

    # -- Tracker API
    def log_hyperparameters(self, hparams: dict[str, Any]):
        pass

    def log(self, metrics: Mapping[str, Any], *, step: Optional[int], commit: Optional[bool] = None):
        if step is None:
            return
        step = int(step)
        if self._step is not None and step != self._step:
            self._emit()
        self._step = step
        self._row.update(_flatten(metrics))

    def log_summary(self, metrics: Mapping[str, Any]):
        pass

    def log_artifact(self, artifact_path, *, name: Optional[str] = None, type: Optional[str] = None):
        pass

    def finish(self):
        self._emit()
        if not self.local:
            self._rewrite()

    # -- internals
    def _start_session(self, first_step: int) -> None:
        from steps.sharding import join

        rows = read_jsonl(self.path)
        kept = [r for r in rows if r.get("step", -1) < first_step]
        if len(kept) != len(rows) or not self.local:
            self._rows = kept
            self._rewrite()
        if self.local:
            self._rows = None
        sessions_url = join(self.output_dir, SESSIONS_FILE)
        sessions = read_jsonl(sessions_url)
        sessions.append({"session": len(sessions), "first_step": first_step, "time": time.time(),
                         "dropped_rows": len(rows) - len(kept)})
        self._write_all(sessions_url, sessions)
        self._started = True

    def _emit(self) -> None:
        if self._step is None or not self._row:
            return
        row = {"step": self._step, **self._row}
        self._row = {}
        if not self._started:
            self._start_session(row["step"])
        if self.local:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path, "a") as f:
                f.write(strict_json.dumps(row) + "\n")
                f.flush()
        else:
            self._rows.append(row)
            if time.monotonic() - self._last_flush > self.flush_every_s:
                self._rewrite()

    def _rewrite(self) -> None:
        self._write_all(self.path, self._rows or [])
        self._last_flush = time.monotonic()

    @staticmethod
    def _write_all(url: str, rows: list[dict]) -> None:
        from steps.sharding import atomic_write_bytes

        atomic_write_bytes(url, "".join(strict_json.dumps(r) + "\n" for r in rows).encode())


def _register():
    """Register `soda_jsonl` with Levanter's tracker registry (idempotent); returns the config class."""
    from levanter.tracker.tracker import NoopTracker, Tracker, TrackerConfig

    existing = TrackerConfig.get_known_choices().get("soda_jsonl") if hasattr(TrackerConfig, "get_known_choices") else None
    if existing is not None:
        return existing

    class _Tracker(JsonlMetricsTracker, Tracker):
        pass

    @TrackerConfig.register_subclass("soda_jsonl")
    @dataclasses.dataclass
    class JsonlMetricsTrackerConfig(TrackerConfig):
        output_dir: str = ""
        flush_every_s: float = 60.0

        def init(self, run_id: Optional[str]):
            import jax

            if jax.process_index() != 0:
                return NoopTracker()
            return _Tracker(self.output_dir, self.flush_every_s)

    return JsonlMetricsTrackerConfig


def tracker_config(output_dir: str, flush_every_s: float = 60.0):
    """A Levanter TrackerConfig writing `{output_dir}/metrics.jsonl`."""
    return _register()(output_dir=output_dir, flush_every_s=flush_every_s)
