"""What the executor keeps beside each output: status and info files, written atomically.

Everything goes through fsspec, so a prefix may be a local directory or an object store
(gs:// through gcsfs). The status file is the commit point: a step is done exactly when its
status reads SUCCESS, which is written only after the step's function returned.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from pipeline import strict_json
from pipeline.fileio import atomic_write_text, is_local, join, local_path, read_json, url_to_fs
from pipeline.redaction import redact, redact_data  # noqa: F401  (re-exported)

STATUS_FILE = ".executor_status"
INFO_FILE = ".executor_info"
LEASE_FILE = ".executor_lease"

RUNNING, SUCCESS, FAILED = "RUNNING", "SUCCESS", "FAILED"
INTERRUPTED = "INTERRUPTED"  # the run was stopped (Ctrl-C) while the step ran: a rerun runs it again



def json_text(data: Any) -> str:
    """`data` as the text `write_json_atomic` writes: strict JSON (`pipeline.strict_json`), credentials redacted."""
    data = redact_data(strict_json.with_counts(data))  # counted first: redaction writes a numpy NaN as "nan"
    return json.dumps(data, allow_nan=False, indent=2, sort_keys=True, default=str) + "\n"


def write_json_atomic(url: str, data: Any) -> None:
    """Write `data` as strict JSON (see `pipeline.strict_json`) with credentials redacted (`pipeline.redaction`)."""
    atomic_write_text(url, json_text(data))


def remove_stale_temp_files(output_path: str) -> None:
    """Delete the temp files of status/info writes that a killed executor left (call under the lease)."""
    if not is_local(output_path):
        return  # object stores write in one PUT: nothing is left behind
    directory = local_path(output_path)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        # `.{name}.tmp-*` (pipeline.fileio.temp_path_for) and the older `.tmp-*{name}`
        ours = any(name.startswith(f".{f}.tmp-") or (name.startswith(".tmp-") and name.endswith(f))
                   for f in (STATUS_FILE, INFO_FILE))
        if ours:
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def filesystem_hint(error_text: str, output_path: str) -> str:
    """A clause naming the output's filesystem when a step died of a full or read-only disk."""
    if "[Errno 28]" in error_text or "No space left on device" in error_text:
        return (f" (the filesystem holding {output_path} is full: free space there and rerun; "
                "finished steps stay cached)")
    if "[Errno 30]" in error_text or "Read-only file system" in error_text:
        return f" (the filesystem holding {output_path} is read-only: remount it read-write or change --prefix)"
    return ""


class PrefixUnreachable(OSError):
    """The prefix's filesystem could not be reached or listed."""


def ensure_reachable(prefix: str) -> None:
    """Fail early, naming the prefix, when its filesystem cannot be reached (network, auth)."""
    if is_local(prefix):
        return
    try:
        fs, path = url_to_fs(prefix)
        fs.exists(path)
    except Exception as e:  # gcsfs/s3fs raise many kinds: DNS, auth, HTTP
        raise PrefixUnreachable(
            f"cannot reach the executor prefix {prefix!r}: {type(e).__name__}: {e}. Check the network "
            "and credentials (e.g. `gcloud auth application-default login`), or use a local --prefix."
        ) from e


class PrefixNotWritable(PermissionError):
    """The prefix is read-only, full, or not a directory; `errno` says which."""


_WRITE_HINTS = {
    errno.ENOSPC: "the filesystem is full: free space there",
    errno.EDQUOT: "the disk quota is exhausted: free space there",
    errno.EROFS: "the filesystem is mounted read-only",
    errno.EACCES: "permission denied: fix its permissions or credentials",
    errno.EPERM: "permission denied: fix its permissions or credentials",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
}


def ensure_writable(prefix: str) -> None:
    """Fail early with a clear message naming the prefix when it cannot be written."""
    probe = join(prefix, f".write-probe-{uuid.uuid4().hex[:8]}")
    try:
        atomic_write_text(probe, "ok" * 2048)  # a few pages: a full disk refuses them
        fs, path = url_to_fs(probe)
        fs.rm(path)
    except OSError as e:
        raise not_writable(prefix, e) from e


def not_writable(where: str, e: OSError, what: str = "the executor prefix") -> PrefixNotWritable:
    hint = _WRITE_HINTS.get(e.errno or 0, "")
    reason = e.strerror or str(e) or type(e).__name__
    return PrefixNotWritable(
        e.errno, f"cannot write to {what} {where!r}: {reason}" + (f" ({hint})" if hint else "") +
        ". Choose another with --prefix or SODA_PREFIX, or fix it and rerun (finished steps stay cached).")


@dataclass(frozen=True)
class StatusRecord:
    status: str
    time: float
    run_id: Optional[str] = None
    host: Optional[str] = None
    pid: Optional[int] = None
    error: Optional[str] = None
    traceback: Optional[str] = None


def read_status(output_path: str) -> Optional[StatusRecord]:
    data = read_json(join(output_path, STATUS_FILE), default=None)
    if data is None:
        return None
    return StatusRecord(**{k: data.get(k) for k in StatusRecord.__dataclass_fields__})


def read_statuses(output_paths: list[str]) -> list[Optional[StatusRecord]]:
    """`read_status` of many outputs; in parallel on object stores, where each read is a round trip."""
    if all(is_local(p) for p in output_paths) or len(output_paths) < 2:
        return [read_status(p) for p in output_paths]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(read_status, output_paths))


def write_status(output_path: str, status: str, run_id: str, error: Optional[str] = None,
                 traceback: Optional[str] = None) -> StatusRecord:
    record = StatusRecord(status, time.time(), run_id, socket.gethostname(), os.getpid(),
                          redact(error) if error else None, redact(traceback) if traceback else None)
    write_json_atomic(join(output_path, STATUS_FILE), record.__dict__)
    return record


# ---- conditional writes on gs:// (google-cloud-storage generation preconditions) ---------------------

_gcs_clients: dict[tuple, Any] = {}  # (pid, emulator) -> client: a forked child, or a new emulator, gets its own


def is_gcs(url: str) -> bool:
    return url.startswith("gs://")


def gcs_client():
    """One google-cloud-storage client per process; it honours STORAGE_EMULATOR_HOST (the emulator)."""
    key = (os.getpid(), os.environ.get("STORAGE_EMULATOR_HOST"))
    client = _gcs_clients.get(key)
    if client is None:
        from google.cloud import storage as gcs

        # the project only names who pays for bucket listings: object reads and writes need none
        client = _gcs_clients.setdefault(key, gcs.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT")))
    return client


def gcs_blob(url: str):
    bucket, _, name = url[len("gs://"):].partition("/")
    if not bucket or not name:
        raise ValueError(f"{url!r} names no object: want gs://bucket/path")
    return gcs_client().bucket(bucket).blob(name)


def gcs_read(url: str) -> tuple[Optional[str], int]:
    """(text, generation) of the object at `url`; (None, 0) when there is none (0 is what `if_generation_match`
    takes to mean "does not exist")."""
    from google.api_core.exceptions import NotFound

    blob = gcs_blob(url)
    try:
        data = blob.download_as_bytes()
    except NotFound:
        return None, 0
    return data.decode("utf-8"), int(blob.generation)


def gcs_write_if(url: str, text: str, generation: int) -> Optional[int]:
    """Write `text` only if the object's generation is still `generation` (0: only if it does not exist).

    Returns the new generation, or None when the precondition failed (HTTP 412: someone else wrote first).
    Other errors propagate; after a transport error the write may or may not have happened."""
    from google.api_core.exceptions import PreconditionFailed

    blob = gcs_blob(url)
    try:
        blob.upload_from_string(text.encode("utf-8"), content_type="application/json",
                                if_generation_match=generation)
    except PreconditionFailed:
        return None
    return int(blob.generation)


def gcs_delete_if(url: str, generation: int) -> bool:
    """Delete the object only if its generation is still `generation`; False if it changed or is gone."""
    from google.api_core.exceptions import NotFound, PreconditionFailed

    try:
        gcs_blob(url).delete(if_generation_match=generation)
    except (PreconditionFailed, NotFound):
        return False
    return True


def gcs_transient(e: BaseException) -> bool:
    """Whether `e` is an error after which a GCS request may be retried (the request may have landed)."""
    import requests
    from google.api_core import exceptions as api

    return isinstance(e, (ConnectionError, TimeoutError, requests.ConnectionError, requests.Timeout,
                          api.ServerError, api.TooManyRequests))
