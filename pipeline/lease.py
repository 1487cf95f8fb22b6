"""Who is running a step right now: one lease per output directory.

Two kinds, chosen by where the output lives:

- Local disk: an advisory `flock` on `<output>/.executor_lease`. The kernel drops it the
  moment its holder dies (even by kill -9), so a rerun after a crash takes over at once.
- Object stores (gs://, s3://, ...): a lease file with a heartbeat. A holder rewrites it every
  `interval` seconds; a lease whose heartbeat is older than `ttl` is stale and may be taken
  over. After writing, a taker waits `settle` seconds and reads back: of several concurrent
  takers only the last writer sees itself and proceeds.

The executor takes a step's lease before it reads the step's status for the last time and
keeps it until the final status is written, so two executors never run the same step at once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Optional, Protocol

from pipeline import storage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holder:
    holder: str
    host: str
    pid: int
    since: float
    heartbeat: float

    def describe(self) -> str:
        return f"{self.host} pid {self.pid}, heartbeat {time.time() - self.heartbeat:.0f}s ago"


class Lease(Protocol):
    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...

    def probe(self) -> Optional[Holder]:
        """The live holder, if another process holds the lease; never writes."""
        ...


def lease_for(output_path: str, owner: str) -> Lease:
    if storage.is_local(output_path):
        return LocalLease(output_path, owner)
    return HeartbeatLease(output_path, owner)


def _holder_record(owner: str, since: float) -> dict:
    now = time.time()
    return {"holder": owner, "host": socket.gethostname(), "pid": os.getpid(), "since": since, "heartbeat": now}


def _parse_holder(text: Optional[str]) -> Optional[Holder]:
    if not text:
        return None
    try:
        data = json.loads(text)
        return Holder(**{k: data[k] for k in Holder.__dataclass_fields__})
    except (ValueError, KeyError, TypeError):
        return None


class LocalLease:
    def __init__(self, output_path: str, owner: str):
        self.path = os.path.join(storage._local(output_path), storage.LEASE_FILE)
        self.owner = owner
        self._fd: Optional[int] = None

    def try_acquire(self) -> bool:
        import fcntl

        if self._fd is not None:
            return True
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder_record(self.owner, time.time())).encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        import fcntl

        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def probe(self) -> Optional[Holder]:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 4096, 0).decode(errors="replace")
                return _parse_holder(text) or Holder("unknown", "unknown", -1, 0.0, time.time())
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


class HeartbeatLease:
    def __init__(self, output_path: str, owner: str, ttl: float = 90.0, interval: float = 15.0,
                 settle: float = 2.0):
        self.url = storage.join(output_path, storage.LEASE_FILE)
        self.owner = owner
        self.ttl, self.interval, self.settle = ttl, interval, settle
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._since = 0.0
        self.lost = False

    def _current(self) -> Optional[Holder]:
        return _parse_holder(storage.read_text(self.url))

    def _live(self, holder: Optional[Holder]) -> bool:
        return holder is not None and time.time() - holder.heartbeat < self.ttl

    def try_acquire(self) -> bool:
        if self._thread is not None:
            return True
        current = self._current()
        if self._live(current) and current.holder != self.owner:
            return False
        self._since = time.time()
        self._write()
        time.sleep(self.settle)
        current = self._current()
        if current is None or current.holder != self.owner:
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease {self.url}", daemon=True)
        self._thread.start()
        return True

    def _write(self) -> None:
        storage.write_text_atomic(self.url, json.dumps(_holder_record(self.owner, self._since)))

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            current = self._current()
            if current is not None and current.holder != self.owner:
                logger.error("lease %s was taken over by %s; this run no longer holds it",
                             self.url, current.describe())
                self.lost = True
                return
            self._write()

    def release(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        current = self._current()
        if current is not None and current.holder == self.owner:
            fs, path = storage.url_to_fs(self.url)
            fs.rm(path)

    def probe(self) -> Optional[Holder]:
        current = self._current()
        return current if self._live(current) and current.holder != self.owner else None


def new_owner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
