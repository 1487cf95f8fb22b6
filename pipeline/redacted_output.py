"""Keeping credentials out of what the executor and its steps print and log.

Files under a prefix are redacted as they are written (pipeline.redaction). Printed and logged text
goes elsewhere: to the executor's console and, inside a step's Ray task, to the worker's log files
under Ray's session directory (`worker-*.out`/`.err`), which Ray also forwards to the driver's
console. The same redaction is put on those paths here:

- `RedactingStream` wraps sys.stdout / sys.stderr. Text is passed on a line at a time (a line ends at
  "\\n" or "\\r"), so a secret split across writes is still seen whole; a line without an end is held
  until it ends, `close_line()` is called, or it grows past 64 KiB.
- `RedactingFilter`, on logging handlers, redacts a record's message with its arguments, its
  traceback and its stack before any handler formats it.
- `redacted_output()` installs both for the duration of a block and puts back what was there.

Not caught: bytes written straight to file descriptors 1 and 2 (C extensions, child processes that
inherit them, faulthandler), and output of threads a step leaves running after it returns; a PEM
key's lines printed one at a time are redacted only from its BEGIN line on.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
from typing import Iterator, TextIO

from pipeline.redaction import redact

_HELD_CHARS = 64 * 1024  # a line longer than this is passed on (redacted) before it ends


class RedactingStream(io.TextIOBase):
    """A text stream that writes `redact`ed whole lines to `stream`."""

    def __init__(self, stream: TextIO):
        super().__init__()
        self.stream = stream
        self._held = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            held = self._held + text
            end = max(held.rfind("\n"), held.rfind("\r")) + 1
            if end == 0 and len(held) > _HELD_CHARS:
                end = len(held)
            self._held = held[end:]
            if end:
                self.stream.write(redact(held[:end]))
        return len(text)

    def close_line(self) -> None:
        """Pass on a held unfinished line (at the end of a task, or before the stream is put back)."""
        with self._lock:
            held, self._held = self._held, ""
            if held:
                self.stream.write(redact(held))
        self.stream.flush()

    def flush(self) -> None:  # an unfinished line stays held: its end may complete a secret
        self.stream.flush()

    def close(self) -> None:  # the wrapped stream is not ours to close (also called when garbage-collected)
        with contextlib.suppress(ValueError, OSError):  # it was closed already (interpreter shutdown)
            self.close_line()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def buffer(self) -> "_RedactingBuffer":  # sys.stdout.buffer.write(b"...") goes through the same lines
        return _RedactingBuffer(self)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    @property
    def errors(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "errors", "strict")


class _RedactingBuffer(io.RawIOBase):
    """`RedactingStream.buffer`: bytes decoded (undecodable ones replaced) and written as text."""

    def __init__(self, text: RedactingStream):
        super().__init__()
        self._text = text

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._text.write(bytes(data).decode(self._text.encoding or "utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        self._text.flush()


class RedactingFilter(logging.Filter):
    """A handler filter that redacts each record in place (so every handler after it sees it redacted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: the handler would print msg and args as they are
            message = f"{record.msg!r} (logging arguments: {record.args!r})"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _all_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger()] + [v for v in logging.Logger.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger)]
    seen: dict[int, logging.Handler] = {}
    for log in loggers:
        for handler in log.handlers:
            seen.setdefault(id(handler), handler)
    return list(seen.values())


@contextlib.contextmanager
def redacted_output() -> Iterator[None]:
    """Redact sys.stdout, sys.stderr and every logging handler that exists now, until the block ends."""
    redacting = RedactingFilter()
    handlers = _all_handlers()
    for handler in handlers:
        handler.addFilter(redacting)
    out, err = sys.stdout, sys.stderr
    sys.stdout = RedactingStream(out) if out is not None else None  # None: no console (pythonw)
    sys.stderr = RedactingStream(err) if err is not None else None
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, RedactingStream):
                stream.close()
        sys.stdout, sys.stderr = out, err
        for handler in handlers:
            handler.removeFilter(redacting)
