"""Can an experiment record be read, and is a run it shows `running` still alive?

Readable. A record is used only when it is a JSON object of RECORD_SCHEMA (no `schema` at all is
taken as the current one) whose fields, where present, have the types the executor writes. Missing
fields are fine: readers show what is there. Anything else (JSON cut short, a list, binary junk,
another schema, a field of the wrong type, nesting too deep to parse, a file that cannot be read) is
unreadable. `soda log` names it and skips it; the executor of that experiment moves it aside to
`{name}.corrupt-{time}.json` (never deleted) and starts a new record. Schema 1 is the first, so there
is nothing to migrate: a record of another schema is moved aside too, whole, so the version that wrote it
(a newer one) can still read it.

Alive. From the run's first write of the record until it records its outcome, its executor holds a
run lease (`pipeline.lease` at `experiments/.runs/{run_id}/`): a flock on local disk, which the kernel
drops when the process dies, even by kill -9; a heartbeat on object stores (on gs:// written with
generation-match preconditions), stale `ttl` (90 s) after its last beat. A run shown `running` has died when
- it took a run lease (`run_lease: true`): nobody holds that lease any more;
- else (written before run leases, or its lease could not be taken): some of its steps are running and
  no lease of theirs is held by it; with none running (between steps, waiting on another executor), it
  ran on this host and its pid (recorded, or read from the run id) is gone or belongs to a process
  started after the run. Any other run cannot be told from here and stays `running`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import time
from typing import Any, Optional

from pipeline import fileio, storage
from pipeline.lease import Lease, lease_for

logger = logging.getLogger(__name__)

RECORD_SCHEMA = 1
DIED = "died"
RUNS_DIR = ".runs"  # beside the records: one run lease per live run
_SET_ASIDE = re.compile(r"\.corrupt-\d{8}T\d{6}(-\d+)?\.json$")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_OWNER_ID = re.compile(r".+-(\d+)-[0-9a-f]{8}")  # pipeline.lease.new_owner_id: host-pid-random

_NONE = type(None)
_NUM = (int, float)
# the fields the executor writes and their types; a list field named in _STR_LISTS holds strings
_TOP = {"schema": (int,), "experiment": (str,), "dag_hash": (str,), "description": (str, _NONE),
        "prefix": (str, _NONE), "order": (list,), "steps": (dict,), "plumbing_steps": (list,),
        "plumbing_reasons": (list, _NONE), "runs": (list,),
        "sections": (list,)}
_STEP = {"name": (str,), "hash": (str,), "output_path": (str,), "description": (str, _NONE), "fn": (str,),
         "depends_on": (list,), "versioned": (dict,), "dependencies": (dict,), "config": (dict,)}
_RUN = {"run_id": (str,), "status": (str,), "started": (*_NUM, _NONE), "ended": (*_NUM, _NONE),
        "user": (str, _NONE), "host": (str, _NONE), "pid": (int, _NONE), "run_lease": (bool,),
        "command": (list,), "git": (dict,), "steps": (dict,)}
_STATE = {"status": (str,), "action": (str,), "start": (*_NUM, _NONE), "end": (*_NUM, _NONE),
          "error": (str, _NONE), "changes": (list,)}
_SECTION = {"title": (str,), "html": (str,), "markdown": (str,)}
_STR_LISTS = {"order", "plumbing_steps", "plumbing_reasons", "depends_on", "command", "changes"}


class UnreadableRecord(ValueError):
    def __init__(self, url: str, reason: str):
        self.url, self.reason = url, reason
        super().__init__(f"experiment record {url}: {reason}")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", _NONE: "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _wrong_field(where: str, fields: dict, spec: dict[str, tuple]) -> Optional[str]:
    for key, kinds in spec.items():
        if key not in fields:
            continue
        value = fields[key]
        ok = isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))
        if ok and isinstance(value, float):
            ok = math.isfinite(value)
        if ok and key in _STR_LISTS:
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            want = " or ".join(sorted({_kind(k()) if k is not _NONE else "null" for k in kinds}))
            what = "a list holding non-strings" if isinstance(value, list) else _kind(value)
            return f"{where}{key} is {what}, not {want}"
    return None


def _wrong_entries(where: str, entries: Any, spec: dict[str, tuple]) -> Optional[str]:
    """The first problem of a dict's values or a list's items, each an object described by `spec`."""
    items = entries.items() if isinstance(entries, dict) else enumerate(entries)
    for key, entry in items:
        label = f"{where}[{key!r}]" if isinstance(entries, dict) else f"{where}[{key}]"
        if not isinstance(entry, dict):
            return f"{label} is {_kind(entry)}, not an object"
        problem = _wrong_field(label + ".", entry, spec)
        if problem:
            return problem
    return None


def problem(data: Any) -> Optional[str]:
    """Why a parsed record cannot be used, or None when it can (missing fields are fine)."""
    if not isinstance(data, dict):
        return f"not a JSON object but {_kind(data)}"
    wrong = _wrong_field("", data, _TOP)
    if wrong:
        return wrong
    schema = data.get("schema", RECORD_SCHEMA)
    if schema != RECORD_SCHEMA:
        age = "a newer version wrote it" if schema > RECORD_SCHEMA else "no version writes it"
        return f"schema {schema}, but this version reads schema {RECORD_SCHEMA} ({age})"
    wrong = _wrong_entries("steps", data.get("steps", {}), _STEP) or \
        _wrong_entries("sections", data.get("sections", []), _SECTION) or \
        _wrong_entries("runs", data.get("runs", []), _RUN)
    if wrong:
        return wrong
    for i, run in enumerate(data.get("runs", [])):
        wrong = _wrong_entries(f"runs[{i}].steps", run.get("steps", {}), _STATE)
        if wrong:
            return wrong
    return None


def read_record(url: str) -> Optional[dict[str, Any]]:
    """The record at `url`, None when there is none; UnreadableRecord saying why it cannot be used."""
    try:
        text = fileio.read_text(url, default=None)
    except UnicodeDecodeError:
        raise UnreadableRecord(url, "not UTF-8 text (binary junk?)") from None
    except Exception as e:  # OSError, and whatever an object store's client raises
        raise UnreadableRecord(url, f"cannot be read: {type(e).__name__}: {e}") from None
    if text is None:
        return None
    if not text.strip():
        raise UnreadableRecord(url, "empty file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UnreadableRecord(url, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno}; "
                                    "cut short?)") from None
    except RecursionError:
        raise UnreadableRecord(url, "JSON nested too deeply to read") from None
    why = problem(data)
    if why:
        raise UnreadableRecord(url, why)
    return data


def is_set_aside(url: str) -> bool:
    return bool(_SET_ASIDE.search(url))


def set_aside(url: str) -> str:
    """Rename an unreadable record to `{name}.corrupt-{time}.json` beside it; returns the new name."""
    base = url[: -len(".json")] if url.endswith(".json") else url
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target, n = f"{base}.corrupt-{stamp}.json", 1
    while fileio.exists(target):
        n += 1
        target = f"{base}.corrupt-{stamp}-{n}.json"
    fileio.move(url, target)
    return target


# ---- is the run alive --------------------------------------------------------------------------


def _dirname(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def _run_lease_dir(record_url: str, run_id: Any) -> Optional[str]:
    if not isinstance(run_id, str) or not _SAFE_ID.fullmatch(run_id) or ".." in run_id:
        return None  # never a path from a hand-edited record
    return fileio.join(_dirname(record_url), RUNS_DIR, run_id)


def take_run_lease(record_url: str, run_id: str) -> Optional[Lease]:
    """Hold the run lease of `run_id` (see the module docstring); None when it cannot be had."""
    where = _run_lease_dir(record_url, run_id)
    if where is None:
        return None
    lease = lease_for(where, run_id, settle=0.0)
    return lease if lease.try_acquire() else None


def drop_run_lease(record_url: str, run_id: Any, lease: Optional[Lease] = None) -> None:
    """Release `lease` (if given) and remove what the run lease of `run_id` left on disk."""
    if lease is not None:
        lease.release()
    where = _run_lease_dir(record_url, run_id)
    if where is None:
        return
    try:
        fs, path = fileio.url_to_fs(fileio.join(where, storage.LEASE_FILE))
        if fs.exists(path):
            fs.rm(path)
        if fileio.is_local(where):
            os.rmdir(fileio.url_to_fs(where)[1])
    except Exception as e:  # leftovers are harmless: a later reader finds the lease unheld
        logger.debug("could not remove the run lease of %s: %s", run_id, e)


def pid_alive(pid: Any, since: Optional[float] = None) -> bool:
    """Whether process `pid` of this host lives (a zombie does not) and, where /proc says, began by `since`."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass  # another user's process: alive
    except (OSError, OverflowError):
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return True  # no /proc here: that it exists is all we know
    if fields[0] in ("Z", "X"):
        return False
    return since is None or started <= since + 2  # started later: the pid was reused


def _under(path: str, root: str) -> bool:
    if fileio.is_local(path) != fileio.is_local(root):
        return False
    if fileio.is_local(path):
        path, root = os.path.abspath(fileio.local_path(path)), os.path.abspath(fileio.local_path(root))
    return path.startswith(root.rstrip("/") + "/")


def executor_gone(run: dict[str, Any], steps: dict[str, Any], record_url: str) -> bool:
    """Whether the executor of a run shown `running` is gone: the rule in the module docstring."""
    run_id = run.get("run_id")
    if fileio.is_local(record_url):  # `soda log x.json` run inside experiments/: its prefix is ..
        record_url = os.path.abspath(fileio.local_path(record_url))
    if run.get("run_lease"):
        where = _run_lease_dir(record_url, run_id)
        return where is None or lease_for(where, "reader").probe() is None
    prefix = _dirname(_dirname(record_url))  # {prefix}/experiments/{record}
    running = [(steps.get(name) or {}).get("output_path") for name, state in (run.get("steps") or {}).items()
               if state.get("status") == "running"]
    running = [p for p in running if isinstance(p, str) and _under(p, prefix)]  # only the prefix's leases
    if running:
        holders = [lease_for(p, "reader").probe() for p in running]
        return not any(h is not None and h.holder in (run_id, "unknown") for h in holders)
    match = _OWNER_ID.fullmatch(run_id) if isinstance(run_id, str) else None
    pid = run.get("pid") or (int(match.group(1)) if match else None)
    if pid and run.get("host") == socket.gethostname():
        return not pid_alive(pid, run.get("started"))
    return False


def mark_died(data: dict[str, Any], record_url: str) -> list[dict[str, Any]]:
    """Show each run whose executor is gone (and its running steps) as `died`, in `data` only; returns them."""
    died = []
    for run in data.get("runs") or []:
        if run.get("status") != "running" or not executor_gone(run, data.get("steps") or {}, record_url):
            continue
        run["status"] = DIED
        run["died_noticed"] = time.time()
        for state in (run.get("steps") or {}).values():
            if state.get("status") == "running":
                state["status"] = DIED
        died.append(run)
    return died
