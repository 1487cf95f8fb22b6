"""What the executor keeps beside each output: status and info files, written atomically.

Everything goes through fsspec, so a prefix may be a local directory or an object store
(gs:// through gcsfs). The status file is the commit point: a step is done exactly when its
status reads SUCCESS, which is written only after the step's function returned.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

STATUS_FILE = ".executor_status"
INFO_FILE = ".executor_info"
LEASE_FILE = ".executor_lease"

RUNNING, SUCCESS, FAILED = "RUNNING", "SUCCESS", "FAILED"

_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL)", re.I)


def url_to_fs(url: str):
    import fsspec.core

    return fsspec.core.url_to_fs(url)


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def join(base: str, *parts: str) -> str:
    out = base.rstrip("/")
    for part in parts:
        if part:
            out = f"{out}/{part.strip('/')}"
    return out


def read_text(url: str) -> Optional[str]:
    if is_local(url):
        try:
            with open(_local(url), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return None
    fs, path = url_to_fs(url)
    try:
        with fs.open(path, "r", encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def read_json(url: str) -> Optional[dict]:
    text = read_text(url)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{url} is not valid JSON ({e}); delete it or restore it from a backup") from e


def write_text_atomic(url: str, text: str) -> None:
    """Write `text` so that a reader sees either the old file or the whole new one."""
    if is_local(url):
        path = _local(url)
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    fs, path = url_to_fs(url)
    fs.pipe_file(path, text.encode("utf-8"))  # one object PUT: atomic on object stores


def write_json_atomic(url: str, data: Any) -> None:
    """Write `data` as JSON, with secret-looking environment values redacted (see `redact`)."""
    write_text_atomic(url, redact(json.dumps(data, indent=2, sort_keys=True, default=str)) + "\n")


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


def ensure_writable(prefix: str) -> None:
    """Fail early with a clear message when the prefix cannot be written."""
    probe = join(prefix, f".write-probe-{uuid.uuid4().hex[:8]}")
    try:
        write_text_atomic(probe, "ok")
        fs, path = url_to_fs(probe)
        fs.rm(path)
    except OSError as e:
        raise PermissionError(
            f"cannot write to the executor prefix {prefix!r}: {e.strerror or e}. "
            "Choose another with --prefix or SODA_PREFIX, or free space/permissions there."
        ) from e


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
    data = read_json(join(output_path, STATUS_FILE))
    if data is None:
        return None
    return StatusRecord(**{k: data.get(k) for k in StatusRecord.__dataclass_fields__})


def write_status(output_path: str, status: str, run_id: str, error: Optional[str] = None,
                 traceback: Optional[str] = None) -> StatusRecord:
    record = StatusRecord(status, time.time(), run_id, socket.gethostname(), os.getpid(),
                          redact(error) if error else None, redact(traceback) if traceback else None)
    write_json_atomic(join(output_path, STATUS_FILE), record.__dict__)
    return record


def redact(text: str) -> str:
    """Replace the values of secret-looking environment variables (tokens, keys) in `text`."""
    for name, value in os.environ.items():
        if value and len(value) >= 6 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, f"<{name} redacted>")
    return text


def _local(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url
