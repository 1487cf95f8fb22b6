"""What a real run shows on its console while the DAG runs.

On a terminal (stderr is a tty) one compact view is redrawn in place (rich's Live) about twice a
second: how many steps are done, running, waiting and failed out of the total; each running step
with its elapsed time and the progress it reports (`pipeline.progress`); each failure as one line
with the step's log. Lines other code prints or logs meanwhile (warnings, errors) appear above it.
When the run ends the view's last frame stays as the run's summary.

Elsewhere (a pipe, a file, CI, nohup) the executor writes plain log lines, one per state change
(running, succeeded, failed, waiting for another executor), as it always has.

`PIPELINE_CONSOLE=plain` (or `live`) overrides the choice; `TERM=dumb` means plain.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional, TextIO

from pipeline import fileio
from pipeline.redaction import redact
from pipeline.run_state import RunState
from pipeline.progress import describe, read_progress
from pipeline.redacted_output import RedactingStream

ENV_MODE = "PIPELINE_CONSOLE"
REFRESH_PER_SECOND = 2
MAX_RUNNING = 8  # running steps listed at most; the rest are counted
MAX_FAILED = (5, 10)  # failures listed at most while the run goes on, and in its summary

logger = logging.getLogger("pipeline.executor")


def live_wanted(mode: Optional[str] = None, stream: Optional[TextIO] = None) -> bool:
    """Whether to draw the live view: `mode` ("live", "plain", None: $PIPELINE_CONSOLE, else whether
    `stream`, default stderr, is a terminal)."""
    mode = (mode or os.environ.get(ENV_MODE) or "auto").lower()
    if mode in ("plain", "live"):
        return mode == "live"
    stream = sys.stderr if stream is None else stream
    try:
        tty = bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        tty = False
    return tty and os.environ.get("TERM", "") != "dumb"


def elapsed(seconds: float) -> str:
    """`42s`, `3:07`, `1:02:03`."""
    seconds = int(max(0.0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}:{secs:02d}"
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


@dataclass
class _Running:
    output_path: str
    started: float
    progress: str = ""
    polled: float = 0.0
    queued: bool = True  # submitted, but its process has not reported yet (waiting for a Ray worker)


class RunView:
    """The executor's console for one run. Every method is cheap and safe to call in either mode;
    `say` logs a state-change line in plain mode and does nothing in live mode (the view shows it)."""

    def __init__(self, experiment: str, total: int, live: bool = False, poll_interval: Optional[float] = None):
        self.experiment, self.total = experiment, total
        self.live = live
        self.poll_interval = poll_interval
        self.started = time.time()
        self.counts = {state: 0 for state in RunState if state.ended}
        self.running: dict[str, _Running] = {}
        self.elsewhere: dict[str, str] = {}  # waiting for another executor: name -> holder
        self.failures: list[tuple[str, str, str]] = []  # (name, where to read more, last error line)
        self.final = False
        self._lock = threading.Lock()
        self._live: Any = None
        self._restore: list[tuple[Any, ...]] = []

    # ---- what the executor reports
    def say(self, level: int, message: str, *args: Any) -> None:
        if not self.live:
            logger.log(level, message, *args)

    def step_running(self, name: str, output_path: str, started: float) -> None:
        with self._lock:
            self.elsewhere.pop(name, None)
            self.running[name] = _Running(output_path, started)

    def step_waiting_elsewhere(self, name: str, holder: str) -> None:
        with self._lock:
            self.elsewhere[name] = holder

    def step_ended(self, name: str, state: str, error: str = "", log: str = "") -> None:
        with self._lock:
            self.running.pop(name, None)
            self.elsewhere.pop(name, None)
            if state in self.counts:
                self.counts[state] += 1
            if state == RunState.FAILED:
                self.failures.append((name, log, error))

    def step_requeued(self, name: str) -> None:
        with self._lock:
            self.running.pop(name, None)

    # ---- the live view
    def start(self) -> None:
        """Draw the view (live mode); output printed or logged meanwhile goes above it. One view per
        process at a time: another executor running in this process meanwhile writes plain lines."""
        global _active
        if not self.live or self._live is not None:
            return
        with _ACTIVE_LOCK:
            if _active is not None:
                self.live = False
                return
            _active = self
        try:
            self._start_live()
        except Exception as e:  # noqa: BLE001 - no view is no reason to stop a run
            self._stop_redirects()
            self._live, self.live = None, False
            _release(self)
            logger.warning("no live console (%s: %s); writing plain lines", type(e).__name__, e)

    def close(self) -> None:
        """Stop redrawing; the last frame (the run's summary) stays on the screen."""
        if self._live is None:
            return
        self.final = True
        live, self._live = self._live, None
        try:
            live.stop()
        finally:
            self._stop_redirects()
            _release(self)

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.file_proxy import FileProxy
        from rich.live import Live

        terminal = _unwrap(sys.stderr)
        console = Console(file=terminal, highlight=False, soft_wrap=False)
        live = Live(get_renderable=self._render, console=console, refresh_per_second=REFRESH_PER_SECOND,
                    transient=False, redirect_stdout=False, redirect_stderr=False)
        # Everything else written to this terminal is printed above the view, redacted line by line.
        above = RedactingStream(FileProxy(console, terminal))
        for handler in _terminal_handlers(terminal):
            self._restore.append(("handler", handler, handler.stream))
            handler.setStream(above)
        self._restore.append(("sys", "stderr", sys.stderr))
        sys.stderr = above
        if _unwrap(sys.stdout) is not None and _is_tty(sys.stdout):
            self._restore.append(("sys", "stdout", sys.stdout))
            sys.stdout = above
        self._live = live
        live.start()

    def _stop_redirects(self) -> None:
        for kind, *what in reversed(self._restore):
            if kind == "handler":
                handler, stream = what
                handler.setStream(stream)
            else:
                name, stream = what
                current = getattr(sys, name)
                if hasattr(current, "close_line"):
                    current.close_line()
                setattr(sys, name, stream)
        self._restore = []

    def lines(self, now: Optional[float] = None) -> list[tuple[str, str]]:
        """The view as (style, text) lines: a totals line, then running steps, waits and failures."""
        now = time.time() if now is None else now
        self._poll(now)
        with self._lock:
            c = self.counts
            done = sum(n for state, n in c.items() if state.done)
            ended = sum(c.values())
            waiting = max(0, self.total - ended - len(self.running))
            queued = sum(r.queued for r in self.running.values())
            if self.final:
                head = (f"{self.experiment}: {self.total} steps: {c['succeeded']} succeeded, {c['cached']} cached, "
                        f"{c['failed']} failed, {c['blocked']} blocked"
                        + (f", {c['interrupted']} interrupted" if c["interrupted"] else "")
                        + f", in {elapsed(now - self.started)}")
            else:
                head = (f"{self.experiment}: {done}/{self.total} done, {len(self.running) - queued} running, "
                        + (f"{queued} queued, " if queued else "") + f"{waiting} waiting, {c['failed']} failed"
                        + (f", {c['blocked']} blocked" if c["blocked"] else "")
                        + f"  [{elapsed(now - self.started)}]")
            out = [("bold red" if c["failed"] else "bold", head)]
            if not self.final:
                width = max([len(n) for n in self.running] + [0])
                listed = sorted(self.running.items(), key=lambda item: item[1].queued)  # working ones first
                for name, r in listed[:MAX_RUNNING]:
                    out.append(("", f"  running  {name:<{width}}  {elapsed(now - r.started):>7}"
                                    + (f"  {r.progress}" if r.progress else "")))
                if len(self.running) > MAX_RUNNING:
                    out.append(("", f"  ... and {len(self.running) - MAX_RUNNING} more running or queued"))
                for name, holder in list(self.elsewhere.items())[:3]:
                    out.append(("dim", f"  waiting  {name}  (running elsewhere: {holder})"))
            shown = MAX_FAILED[self.final]
            for name, log, error in self.failures[:shown]:
                out.append(("red", f"  failed   {_short_path(log)}" + (f"  {error}" if error else "")))
            if len(self.failures) > shown:
                out.append(("red", f"  ... and {len(self.failures) - shown} more failed"))
        return [(style, redact(text)) for style, text in out]

    def _poll(self, now: float) -> None:
        """Read the progress reports of running steps not read for `poll_interval` (not under the lock:
        on an object store each read is a round trip, and the executor's loop must not wait for it)."""
        with self._lock:
            running = list(self.running.values())
        for r in running:
            interval = self.poll_interval or (2.0 if fileio.is_local(r.output_path) else 5.0)
            if now - r.polled < interval:
                continue
            r.polled = now
            report = read_progress(r.output_path, since=r.started - 5.0)
            r.queued = report is None
            r.progress = describe(report) if report is not None else "waiting for a worker"

    def _render(self) -> Any:
        from rich.text import Text

        text = Text(no_wrap=True, overflow="ellipsis")
        for i, (style, line) in enumerate(self.lines()):
            text.append(("\n" if i else "") + line, style=style or None)
        return text


_ACTIVE_LOCK = threading.Lock()
_active: Optional[RunView] = None  # the view drawn on this process's terminal now


def _release(view: RunView) -> None:
    global _active
    with _ACTIVE_LOCK:
        if _active is view:
            _active = None


def _short_path(path: str) -> str:
    """A local path under the current directory relative to it (`out/raw/x-1a2b/.executor_log`)."""
    if fileio.is_local(path) and not path.startswith("file://"):
        try:
            relative = os.path.relpath(path)
        except ValueError:
            return path
        return relative if not relative.startswith("..") else path
    return path


def _unwrap(stream: Any) -> Any:
    """The terminal stream under redacting and rich wrappers."""
    for _ in range(8):
        inner = getattr(stream, "rich_proxied_file", None) or (
            stream.stream if type(stream).__name__ == "RedactingStream" else None)
        if inner is None:
            return stream
        stream = inner
    return stream


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _terminal_handlers(terminal: Any) -> list[logging.StreamHandler]:
    """Logging handlers that write to this terminal (stderr, or stdout when it is the same tty)."""
    streams = {id(terminal), id(sys.__stderr__)}
    if _is_tty(sys.__stdout__):
        streams.add(id(sys.__stdout__))
    loggers = [logging.getLogger()] + [v for v in logging.Logger.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger)]
    found: dict[int, logging.StreamHandler] = {}
    for log in loggers:
        for handler in log.handlers:
            if type(handler) is logging.StreamHandler and id(_unwrap(handler.stream)) in streams:
                found.setdefault(id(handler), handler)
    return list(found.values())
