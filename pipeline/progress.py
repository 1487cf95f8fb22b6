"""Progress a running step reports about itself, for the executor's console.

A step function (or a process or task it starts) calls

    from pipeline.progress import report_progress
    report_progress(k, n, "shards")                              # 3/8 shards
    report_progress(step, num_steps, "steps", loss=2.31, tokens_per_s=41_200)

from wherever it runs: the step's own Ray task, a child process, or a Ray task it started through
`pipeline.step_log.in_step_log`. The report is written, at most every `MIN_INTERVAL` seconds (the
latest one always lands, a little later), to `{output}/.executor_progress`, a small JSON file beside
the step's status; the executor reads it for its running steps. It goes through `pipeline.storage`,
so it works on local disk and on object stores alike, and needs nothing from Ray.

Outside a step (a test, a notebook) `report_progress` does nothing. It never fails the step: a
report that cannot be written is dropped with one warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from typing import Any, Iterator, Optional

from pipeline import fileio
from pipeline.redaction import redact

PROGRESS_FILE = ".executor_progress"
ENV_OUTPUT = "PIPELINE_STEP_OUTPUT"  # the running step's output path (inherited by its child processes)
ENV_NAME = "PIPELINE_STEP_NAME"
MIN_INTERVAL = 2.0  # seconds between writes of the progress file
_MAX_DETAIL = 6  # detail fields kept per report

logger = logging.getLogger(__name__)


def progress_path(output_path: str) -> str:
    return fileio.join(output_path, PROGRESS_FILE)


def current_step() -> Optional[tuple[str, str]]:
    """(output path, versioned name) of the step this process works for, or None outside a step."""
    output = os.environ.get(ENV_OUTPUT)
    return (output, os.environ.get(ENV_NAME, "")) if output else None


@contextlib.contextmanager
def step_context(output_path: str, name: str, announce: bool = False) -> Iterator[None]:
    """Within the block, this process (and the processes it starts) works for step `name`.
    `announce`: first write an empty report, which says the step's process has started."""
    saved = {k: os.environ.get(k) for k in (ENV_OUTPUT, ENV_NAME)}
    os.environ[ENV_OUTPUT], os.environ[ENV_NAME] = output_path, name
    if announce:
        now = time.time()
        _REPORTER.report(output_path, {"done": None, "total": None, "unit": "", "detail": {}, "time": now,
                                       "started": now, "pid": os.getpid()}, at_once=True)
    try:
        yield
    finally:
        _REPORTER.flush()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def report_progress(done: float, total: Optional[float] = None, unit: str = "", **detail: Any) -> None:
    """Say how far the current step is: `done` of `total` `unit`s, with a few named numbers or short
    strings (`loss=2.3`, `tokens_per_s=4.1e4`). Cheap to call often: writes are throttled."""
    step = current_step()
    if step is None:
        return
    report = {"done": _number(done), "total": _number(total), "unit": str(unit)[:20],
              "detail": {str(k)[:24]: _value(v) for k, v in list(detail.items())[:_MAX_DETAIL]},
              "time": time.time(), "pid": os.getpid()}
    _REPORTER.report(step[0], report)


def read_progress(output_path: str, since: float = 0.0) -> Optional[dict]:
    """The latest report of the step at `output_path` written at or after `since` (a time.time()),
    or None (none yet, an earlier attempt's, or unreadable)."""
    try:
        text = fileio.read_text(progress_path(output_path), default=None)
        data = json.loads(text) if text else None
    except Exception:  # noqa: BLE001 - a missing or half-made report is simply no report
        return None
    if not isinstance(data, dict) or not isinstance(data.get("time"), (int, float)) or data["time"] < since:
        return None
    return data


def describe(report: dict) -> str:
    """One short line: `3/8 shards · loss 2.31 · tokens_per_s 4.12e+04`."""
    done, total, unit = report.get("done"), report.get("total"), report.get("unit") or ""
    if done is None and not report.get("detail"):
        return ""  # only that the step's process started (step_context's announce)
    parts = []
    if done is not None:
        count = f"{_short(done)}/{_short(total)}" if total else _short(done)
        parts.append(f"{count} {unit}".strip())
    for key, value in (report.get("detail") or {}).items():
        parts.append(f"{key} {_short(value) if isinstance(value, (int, float)) else value}")
    return redact(" · ".join(parts))


def _number(x: Any) -> Optional[float]:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _value(x: Any) -> Any:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)[:40]
    return x if math.isfinite(x) else str(x)


def _short(x: Any) -> str:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return str(x)
    if float(x).is_integer() and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.3g}"


class _Reporter:
    """Writes the latest report at most every MIN_INTERVAL seconds; a report held back by the
    interval is written by a timer when the interval is over."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: Optional[tuple[str, dict]] = None
        self._last_write = 0.0
        self._timer: Optional[threading.Timer] = None
        self._warned = False

    def report(self, output_path: str, report: dict, at_once: bool = False) -> None:
        with self._lock:
            self._pending = (output_path, report)
            wait = self._last_write + MIN_INTERVAL - time.monotonic()
            if wait > 0 and not at_once:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self.flush)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
            if self._timer is not None and self._timer is not threading.current_thread():
                self._timer.cancel()
            self._timer = None
            if pending is None:
                return
            self._last_write = time.monotonic()
            output_path, report = pending
            try:
                fileio.atomic_write_text(progress_path(output_path), redact(json.dumps(report)) + "\n")
            except Exception as e:  # noqa: BLE001 - progress is a courtesy: never fail the step for it
                if not self._warned:
                    self._warned = True
                    logger.warning("could not write progress to %s: %s", progress_path(output_path), e)


_REPORTER = _Reporter()
