"""Who is running a step right now: one lease per output directory.

Two kinds, chosen by where the output lives:

- Local disk: an advisory `flock` on `<output>/.executor_lease`. The kernel drops it the
  moment its holder dies (even by kill -9), so a rerun after a crash takes over at once.
- gs://: a lease file with a heartbeat, every write conditional on the object's generation
  (`GcsLease`): create only if absent, beat only over our own last write, take over a stale
  lease (heartbeat older than `ttl`) only over the generation read. GCS answers 412 to every
  writer but one, so of several concurrent takers exactly one proceeds.
- Other object stores (s3://, memory://, ...): a lease file with a heartbeat, unconditional
  writes (`HeartbeatLease`). After writing, a taker waits `settle` seconds and reads back: of
  several concurrent takers only the last writer sees itself and proceeds.

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

from pipeline import fileio, storage

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


def lease_for(output_path: str, owner: str, settle: float = 2.0) -> Lease:
    """The lease of `output_path`: a flock on local disk, conditional writes on gs://, else a heartbeat file
    (`settle` is that one's read-back delay)."""
    if fileio.is_local(output_path):
        return LocalLease(output_path, owner)
    if storage.is_gcs(output_path):
        return GcsLease(output_path, owner)
    return HeartbeatLease(output_path, owner, settle=settle)


def _holder_record(owner: str, since: float, nonce: Optional[str] = None) -> dict:
    now = time.time()
    record = {"holder": owner, "host": socket.gethostname(), "pid": os.getpid(), "since": since, "heartbeat": now}
    if nonce is not None:
        record["nonce"] = nonce
    return record


def _stop_heartbeat(lease) -> bool:
    """Stop a heartbeat lease's thread and wait for it; False when none was running."""
    if lease._thread is None:
        return False
    lease._stop.set()
    lease._thread.join()
    lease._thread = None
    return True


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
        self.path = os.path.join(fileio.local_path(output_path), storage.LEASE_FILE)
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
        self.url = fileio.join(output_path, storage.LEASE_FILE)
        self.owner = owner
        self.ttl, self.interval, self.settle = ttl, interval, settle
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._since = 0.0
        self.lost = False

    def _current(self) -> Optional[Holder]:
        return _parse_holder(fileio.read_text(self.url, default=None))

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
        fileio.atomic_write_text(self.url, json.dumps(_holder_record(self.owner, self._since)))

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
        if not _stop_heartbeat(self):
            return
        current = self._current()
        if current is not None and current.holder == self.owner:
            fs, path = fileio.url_to_fs(self.url)
            fs.rm(path)

    def probe(self) -> Optional[Holder]:
        current = self._current()
        return current if self._live(current) and current.holder != self.owner else None


class GcsLease:
    """A lease file on gs:// held by generation-match preconditions, so of several writers exactly one wins.

    acquire: create with `if_generation_match=0`; heartbeat: rewrite with the generation we wrote last;
    take-over of a stale lease: rewrite with the stale generation we read; release: delete with ours. A
    write answered 412 lost a race, unless the object holds a nonce this lease wrote: then it was our own
    write whose response was lost (a retry after a transport error), and we hold the lease.
    """

    attempts = 4  # tries of one conditional write after transport errors

    def __init__(self, output_path: str, owner: str, ttl: float = 90.0, interval: float = 15.0):
        self.url = fileio.join(output_path, storage.LEASE_FILE)
        self.owner = owner
        self.ttl, self.interval = ttl, interval
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._since = 0.0
        self._generation = 0  # of the holder record we wrote last
        self._nonces: set[str] = set()  # of every record this lease wrote
        self.lost = False

    def _read(self) -> tuple[Optional[Holder], Optional[str], int]:
        """(holder, its nonce, generation) as the lease file is now; generation 0 when there is none."""
        text, generation = storage.gcs_read(self.url)
        try:
            nonce = json.loads(text).get("nonce") if text else None
        except (ValueError, AttributeError):
            nonce = None
        return _parse_holder(text), nonce, generation

    def _live(self, holder: Optional[Holder]) -> bool:
        return holder is not None and time.time() - holder.heartbeat < self.ttl

    def _write(self, expected: int) -> bool:
        """Write our holder record if the file's generation is still `expected`; True when we hold it after."""
        nonce = uuid.uuid4().hex
        self._nonces.add(nonce)
        text = json.dumps(_holder_record(self.owner, self._since, nonce))
        for attempt in range(self.attempts):
            try:
                generation = storage.gcs_write_if(self.url, text, expected)
            except Exception as e:
                if not storage.gcs_transient(e) or attempt == self.attempts - 1:
                    raise
                logger.warning("lease %s: write failed (%s: %s); retrying", self.url, type(e).__name__, e)
                time.sleep(0.2 * 2 ** attempt)
                continue
            if generation is not None:
                self._generation = generation
                return True
            _, found, current = self._read()  # 412: someone wrote first, or our lost-response write did
            if found is not None and found in self._nonces:
                self._generation = current
                return True
            return False
        return False

    def try_acquire(self) -> bool:
        if self._thread is not None:
            return True
        self._since = time.time()
        if not self._write(0):
            holder, nonce, generation = self._read()
            if generation == 0:  # released between our create and our read: try once more
                if not self._write(0):
                    return False
            elif nonce in self._nonces:
                self._generation = generation
            elif self._live(holder):
                return False
            elif not self._write(generation):  # stale (or unreadable): take over; of several takers one wins
                return False
            else:
                logger.warning("lease %s: took over from %s (no heartbeat for %.0fs)", self.url,
                               holder.describe() if holder else "an unreadable holder",
                               time.time() - holder.heartbeat if holder else float("nan"))
        self.lost = False
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease {self.url}", daemon=True)
        self._thread.start()
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self._write(self._generation):
                    continue
            except Exception as e:  # a later beat may get through; the lease goes stale only after ttl
                logger.warning("lease %s: heartbeat failed (%s: %s)", self.url, type(e).__name__, e)
                continue
            holder, _, _ = self._read()
            logger.error("lease %s was taken over by %s; this run no longer holds it", self.url,
                         holder.describe() if holder else "another process (the lease file was removed)")
            self.lost = True
            return

    def release(self) -> None:
        if not _stop_heartbeat(self):
            return
        if self.lost:
            return
        try:
            if not storage.gcs_delete_if(self.url, self._generation):
                logger.debug("lease %s changed before release; left as it is", self.url)
        except Exception as e:  # it goes stale after ttl and is then taken over
            logger.warning("lease %s: could not delete it on release (%s: %s); it is free once %.0fs stale",
                           self.url, type(e).__name__, e, self.ttl)

    def probe(self) -> Optional[Holder]:
        holder, _, _ = self._read()
        return holder if self._live(holder) and holder.holder != self.owner else None


def new_owner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
