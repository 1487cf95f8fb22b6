"""Per-step logs: everything a step's process prints goes to `{output}/.executor_log`, redacted.

Inside a step's Ray task (pipeline.runner._call_step), `capture_step_output` points the process's
file descriptors 1 and 2 at pipes for the duration of the step. A reader thread takes whole lines
from them, redacts them (pipeline.redaction) and writes them twice: to the step's log, and to the
descriptors they would have reached (the Ray worker's `worker-*.out`/`.err`, which Ray forwards to
the driver's console only with `--verbose`). So the log holds Python's `print` and `logging`, bytes
C extensions write straight to the descriptors, and the output of child processes the step starts.

On local disk the log is appended to as lines arrive: `soda logs --follow` sees them at once and a
kill -9 loses nothing written. Object stores cannot append: the log is spooled to a local file and
the whole object is rewritten every `UPLOAD_INTERVAL` seconds while it grows, and at the end; a
worker killed mid-step loses at most that much of its tail. A rerun of the step appends to the log
of the earlier attempts (after a `=== ... ===` line), so a failed attempt's output stays readable.

    soda logs tokenized/local-corpus [--prefix P] [--follow]    # by step name: its newest output
    soda logs gs://bucket/soda/tokenized/local-corpus-1a2b3c    # or by output path

Ray tasks a step starts itself run in other worker processes. A function wrapped with `in_step_log`
(in the step's process, where the step is known) captures its task's output into the same log, after
a `--- task ... ---` line, on local disk (an object store's log is one object rewritten by its one
writer, so there such tasks' output stays in Ray's worker logs); `report_progress` works in it too.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import select
import socket
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Iterator, Optional

from pipeline import fileio, storage
from pipeline.redaction import redact
from pipeline.progress import current_step, step_context
from pipeline.record_store import default_prefix

LOG_FILE = ".executor_log"
UPLOAD_INTERVAL = 15.0  # seconds between rewrites of a growing log on an object store
_HELD_BYTES = 64 * 1024  # a line longer than this is passed on (redacted) before it ends
_DRAIN_SECONDS = 2.0  # after the step: how long to wait for output of children that still hold the pipes
_capturing: set[int] = set()  # pids whose descriptors are captured now (a forked child inherits this)


def log_path(output_path: str) -> str:
    return fileio.join(output_path, LOG_FILE)


class StepLogWriter:
    """Appends (already redacted) text to a step's log: directly on local disk, else through a spool
    file whose whole content is uploaded every `interval` seconds while it grows, and by `close`."""

    def __init__(self, output_path: str, interval: float = UPLOAD_INTERVAL):
        self.url = log_path(output_path)
        self.local = fileio.is_local(self.url)
        self._lock = threading.Lock()
        self._dirty = False
        self._closed = threading.Event()
        self.upload_error: Optional[str] = None
        if self.local:
            path = fileio.local_path(self.url)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._file = open(path, "a", encoding="utf-8", errors="replace")
            return
        earlier = fileio.read_text(self.url, default=None) or ""  # an earlier attempt's log: kept, appended to
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace", prefix="soda-step-log-")
        self._file.write(earlier)
        self._uploader = threading.Thread(target=self._upload_every, args=(interval,), daemon=True,
                                          name="pipeline-step-log-upload")
        self._uploader.start()

    def write(self, text: str) -> None:
        with self._lock:
            if self._file.closed:
                return
            self._file.write(text)
            self._file.flush()
            self._dirty = True

    def _upload_every(self, interval: float) -> None:
        while not self._closed.wait(interval):
            self._upload()

    def _upload(self) -> None:
        with self._lock:
            if not self._dirty or self._file.closed:
                return
            self._file.seek(0)
            text = self._file.read()  # the file position is at the end again, for the next write
            self._dirty = False
        try:
            fileio.atomic_write_text(self.url, text)
        except Exception as e:  # noqa: BLE001 - a log that cannot be uploaded must not fail the step
            self.upload_error = f"{type(e).__name__}: {e}"
            with self._lock:
                self._dirty = True  # try again next time

    def close(self) -> None:
        if self.local:
            with self._lock:
                self._file.close()
            return
        self._closed.set()
        self._uploader.join()
        self._upload()
        with self._lock:
            self._file.close()


class _Tee:
    """Reads the pipes that replaced fds 1 and 2; writes each whole line, redacted, to the log and to the
    descriptor the pipe replaced."""

    def __init__(self, writer: StepLogWriter, pipes: dict[int, int]):
        self.writer = writer
        self.pipes = pipes  # read end -> saved copy of the descriptor it replaced
        self.held = {fd: b"" for fd in pipes}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="pipeline-step-log")
        self.thread.start()

    def _pass_on(self, fd: int, data: bytes, final: bool = False) -> None:
        held = self.held[fd] + data
        end = max(held.rfind(b"\n"), held.rfind(b"\r")) + 1
        if final or (end == 0 and len(held) > _HELD_BYTES):
            end = len(held)
        self.held[fd] = held[end:]
        if not end:
            return
        text = redact(held[:end].decode("utf-8", "replace"))
        self.writer.write(text)
        with contextlib.suppress(OSError):  # the worker's log file is gone: the step's log still has it
            os.write(self.pipes[fd], text.encode("utf-8"))

    def _run(self) -> None:
        open_fds = set(self.pipes)
        while open_fds:
            ready, _, _ = select.select(list(open_fds), [], [], 0 if self.stop.is_set() else 0.5)
            if not ready and self.stop.is_set():
                break  # drained: whatever still holds a pipe (a child left running) is not waited for
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    self._pass_on(fd, data)
                else:
                    open_fds.discard(fd)
        for fd in self.pipes:
            self._pass_on(fd, b"", final=True)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(_DRAIN_SECONDS)


@contextlib.contextmanager
def capture_step_output(output_path: str, name: str, task: Optional[str] = None) -> Iterator[Optional[StepLogWriter]]:
    """Tee fds 1 and 2 of this process, redacted, into `{output_path}/.executor_log` until the block ends
    (`task`: for a task the step started, named so in the line that opens its part of the log)."""
    try:
        writer = StepLogWriter(output_path)
    except Exception as e:  # noqa: BLE001 - no log is no reason to fail the step
        print(f"pipeline: could not open the step log {log_path(output_path)} ({type(e).__name__}: {e}); "
              "this step's output goes to the Ray worker's log only", file=sys.stderr)
        yield None
        return
    when = f"{time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()} (pid {os.getpid()})"
    writer.write(f"--- step {name}: task {task} started {when} ---\n" if task
                 else f"=== step {name} started {when} ===\n")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    pipes, saved = {}, {}
    try:
        for fd in (1, 2):
            saved[fd] = os.dup(fd)
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            pipes[read_end] = saved[fd]
    except OSError:  # no descriptors to replace (closed 1 or 2): the log gets Python's output only
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        for read_end in pipes:
            os.close(read_end)
        pipes, saved = {}, {}
    tee = _Tee(writer, pipes) if pipes else None
    _capturing.add(os.getpid())
    try:
        yield writer
    finally:
        _capturing.discard(os.getpid())
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)  # closes this process's write end of the pipe: the reader sees its end
        if tee is not None:
            tee.finish()
            if not tee.thread.is_alive():  # else a child still holds a pipe: its descriptors stay open
                for read_end, copy in pipes.items():
                    os.close(read_end)
                    os.close(copy)
        writer.close()


def in_step_log(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, wrapped so that where it runs (a Ray task or process the current step starts) its output
    goes to the step's log too and `pipeline.progress.report_progress` reports for the step. Call it in
    the step's process; outside a step it returns `fn` itself.

        remote = ray.remote(in_step_log(encode_one))      # what each task prints lands in the step's log
    """
    step = current_step()
    if step is None:
        return fn
    output_path, name = step

    @functools.wraps(fn)
    def in_step(*args: Any, **kwargs: Any) -> Any:  # pickled by value: it refers only to importable names
        return _run_in_step(fn, output_path, name, args, kwargs)

    return in_step


def _run_in_step(fn: Callable[..., Any], output_path: str, name: str, args: tuple, kwargs: dict) -> Any:
    if os.getpid() in _capturing or not fileio.is_local(output_path):
        captured = contextlib.nullcontext()  # already captured here, or a log only its step may write
    else:
        captured = capture_step_output(output_path, name, task=getattr(fn, "__name__", "task"))
    with step_context(output_path, name), captured:
        return fn(*args, **kwargs)


def redact_log(output_path: str, max_bytes: int = 256 * 1024**2) -> bool:
    """Redact a finished step's log again, with this process's secrets (the executor's environment may
    hold secrets its workers' do not, yet a step can print them, e.g. from its config). Rewrites it only
    when something changed; True if it did. A log over `max_bytes` is left as the worker redacted it."""
    url = log_path(output_path)
    if fileio.is_local(url):
        try:
            if os.path.getsize(fileio.local_path(url)) > max_bytes:
                return False
        except FileNotFoundError:
            return False
    text = fileio.read_text(url, default=None)
    if text is None or len(text) > max_bytes:
        return False
    redacted = redact(text)
    if redacted == text:
        return False
    fileio.atomic_write_text(url, redacted)
    return True


# ---- soda logs -------------------------------------------------------------------------------------


def resolve(name_or_path: str, prefix: str) -> tuple[str, str]:
    """(output path, a note on how it was found) of a step name (`tokenized/local-corpus`, its newest
    output under `prefix`) or an output path."""
    if "://" in name_or_path or os.path.isabs(name_or_path) or os.path.isdir(name_or_path):
        return fileio.absolute(name_or_path).rstrip("/"), ""
    name = name_or_path.strip("/")
    parent, _, base = name.rpartition("/")
    directory = fileio.join(prefix, parent)
    try:
        fs, path = fileio.url_to_fs(directory)
        entries = [e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(path, detail=False)]
    except FileNotFoundError:
        entries = []
    outputs = [fileio.join(directory, e) for e in entries
               if e.startswith(base + "-") and _is_hash(e[len(base) + 1:])]
    if not outputs:
        raise SystemExit(f"soda logs: no output of step {name!r} under {prefix} (looked for {directory}/{base}-HASH). "
                         "Give the step's versioned name as the executor prints it, --prefix, or the output path.")
    if len(outputs) == 1:
        return outputs[0], ""
    when = {p: _last_run(p) for p in outputs}
    newest = max(outputs, key=lambda p: when[p])
    others = ", ".join(p.rsplit("/", 1)[-1] for p in outputs if p != newest)
    return newest, f"{len(outputs)} outputs of {name}; showing the most recently run, {newest} (others: {others})"


def _is_hash(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text)


def _last_run(output_path: str) -> float:
    status = storage.read_status(output_path)
    return status.time if status is not None and status.time else 0.0


def _read_from(url: str, offset: int, whole_lines: bool = False) -> tuple[str, int]:
    """The log's text from byte `offset` on, and the offset after it (only whole UTF-8 characters; only
    whole lines with `whole_lines`, so a secret is never redacted in two halves)."""
    if fileio.is_local(url):
        try:
            with open(fileio.local_path(url), "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return "", offset
    else:
        text = fileio.read_text(url, default=None)
        data = (text or "").encode("utf-8")[offset:]
    cut = data.rfind(b"\n") + 1 if whole_lines else _complete(data)
    return data[:cut].decode("utf-8", "replace"), offset + cut


def _complete(data: bytes) -> int:
    """The length of `data` without an unfinished UTF-8 character at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # an ASCII or leading byte
            need = 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)


def _running(output_path: str) -> bool:
    status = storage.read_status(output_path)
    return status is not None and status.status == storage.RUNNING


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="soda logs", description="Print a step's log (its .executor_log).")
    parser.add_argument("step", metavar="STEP_NAME_OR_PATH",
                        help="a step's name (e.g. tokenized/local-corpus: its newest output under --prefix) "
                             "or its output path (local or gs://...)")
    parser.add_argument("--prefix", default=None, help="where outputs are (default: $SODA_PREFIX, else ./soda-out)")
    parser.add_argument("--follow", "-f", action="store_true",
                        help="keep printing new lines until the step is no longer RUNNING")
    parser.add_argument("--interval", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    prefix = fileio.absolute(args.prefix or default_prefix())
    output_path, note = resolve(args.step, prefix)
    if note:
        print(f"soda logs: {note}", file=sys.stderr)
    url = log_path(output_path)
    text, offset = _read_from(url, 0, whole_lines=args.follow)
    if not text and not fileio.exists(url):
        if not (args.follow and _running(output_path)):
            status = storage.read_status(output_path)
            why = (f"its status is {status.status}: it ran before per-step logs were kept, or its log could not "
                   "be written" if status is not None else "the step has not run there")
            print(f"soda logs: no log at {url} ({why})", file=sys.stderr)
            return 1
    sys.stdout.write(redact(text))  # again, with this process's secrets
    sys.stdout.flush()
    if not args.follow:
        return 0
    interval = args.interval or (1.0 if fileio.is_local(url) else 5.0)
    try:
        while True:
            running = _running(output_path)
            text, offset = _read_from(url, offset, whole_lines=running)
            sys.stdout.write(redact(text))
            sys.stdout.flush()
            if not running:
                return 0
            time.sleep(interval)
    except KeyboardInterrupt:
        return 130
