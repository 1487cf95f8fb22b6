"""Saving an experiment record that other executors may be saving too: read, merge by run, write.

Several executors may run one experiment DAG at once (each takes over the steps the others have
not), and each keeps its own run entry in the one record. A save therefore never writes what the
executor read when it started: it re-reads the record, replaces only its own run (by `run_id`),
keeps every other run as the record now has it, and writes, guarded so that no other save lands in
between:

- local disk: an exclusive `flock` on the hidden sibling `.{record}.json.lock` around read-merge-write;
- gs://: a write conditional on the generation read (`if_generation_match`); on 412 (another save
  landed first) read, merge and write again;
- other object stores: read-merge-write unguarded (two saves in the same instant may still drop one
  update of the other run, which its next save restores).

Merging never decides that another run died: only the verdicts this executor reached when it opened
the record (`pipeline.record_check.mark_died`) are carried over, and only onto a run still shown
`running`. A run that finished since, or that another executor marked, keeps what the record says.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from typing import Any, Mapping, Optional

from pipeline import fileio, storage
from pipeline.record_check import UnreadableRecord, problem, read_record, set_aside

logger = logging.getLogger(__name__)

ATTEMPTS = 30  # conditional writes of one save on gs:// before giving up (each lost to another save)


def merge_runs(on_record: list[dict[str, Any]], ours: dict[str, Any], kept: list[dict[str, Any]],
               died_here: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs to write: those on record, ours in place of our old entry, `kept` (runs this executor knew
    of that the record lost), oldest first. A run we found died stays died unless the record moved it on."""
    merged: dict[Any, dict[str, Any]] = {}
    for i, run in enumerate(on_record):
        run_id = run.get("run_id") if isinstance(run.get("run_id"), str) else ("no run_id", i)
        if run_id in died_here and run.get("status") == "running":
            run = died_here[run_id]
        merged.setdefault(run_id, run)
    for i, run in enumerate(kept):
        merged.setdefault(run.get("run_id") if isinstance(run.get("run_id"), str) else ("kept", i), run)
    merged[ours["run_id"]] = ours
    return sorted(merged.values(), key=lambda r: r.get("started") or 0.0)


def _runs_of(existing: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in ((existing or {}).get("runs") or []) if isinstance(r, dict)]


def _merge_into(data: dict[str, Any], run: dict[str, Any], existing: Optional[dict[str, Any]],
                died_here: Mapping[str, dict[str, Any]]) -> None:
    data["runs"] = merge_runs(_runs_of(existing), run, [r for r in data.get("runs") or [] if r is not run],
                              died_here)


def _unreadable(url: str, e: UnreadableRecord) -> None:
    """Move an unreadable record aside before writing over it (never lose what could not be read)."""
    aside = set_aside(url)
    logger.warning("experiment record %s became unreadable (%s): moved aside to %s; this save starts it again",
                   url, e.reason, aside)


def save_merged(url: str, data: dict[str, Any], run: dict[str, Any],
                died_here: Optional[Mapping[str, dict[str, Any]]] = None) -> None:
    """Write `data` to `url` with its runs merged into the record's current ones (see the module docstring).

    `data["runs"]` is replaced by the merged list, which holds `run` itself."""
    died_here = died_here or {}
    if fileio.is_local(url):
        _save_local(url, data, run, died_here)
    elif storage.is_gcs(url):
        _save_gcs(url, data, run, died_here)
    else:
        _save_plain(url, data, run, died_here)


def _read(url: str) -> Optional[dict[str, Any]]:
    try:
        return read_record(url)
    except UnreadableRecord as e:
        _unreadable(url, e)
        return None


def lock_path(record_path: str) -> str:
    """The local lock file of a record: hidden beside it, `.{name}.json.lock`."""
    directory, name = os.path.split(record_path)
    return os.path.join(directory, f".{name}.lock")


def _save_local(url: str, data, run, died_here) -> None:
    import fcntl

    path = fileio.local_path(url)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held for a read and a write: milliseconds
        _merge_into(data, run, _read(url), died_here)
        storage.write_json_atomic(url, data)
    finally:
        os.close(fd)  # drops the flock


def _save_plain(url: str, data, run, died_here) -> None:
    _merge_into(data, run, _read(url), died_here)
    storage.write_json_atomic(url, data)


def _save_gcs(url: str, data, run, died_here) -> None:
    for attempt in range(ATTEMPTS):
        try:
            text, generation = storage.gcs_read(url)
            existing = json.loads(text) if text and text.strip() else None
            why = problem(existing) if existing is not None else ("empty file" if text is not None else None)
        except (ValueError, RecursionError) as e:
            existing, why = None, f"not valid JSON ({e})"
        except Exception as e:
            if not storage.gcs_transient(e) or attempt == ATTEMPTS - 1:
                raise
            time.sleep(0.2)
            continue
        if why:
            _unreadable(url, UnreadableRecord(url, why))
            existing, generation = None, 0
        _merge_into(data, run, existing, died_here)
        try:
            if storage.gcs_write_if(url, storage.json_text(data), generation) is not None:
                return
        except Exception as e:  # a lost response: the next read shows whether it landed; merging again is harmless
            if not storage.gcs_transient(e) or attempt == ATTEMPTS - 1:
                raise
        time.sleep(random.uniform(0.05, 0.3))  # another save landed first: read it and merge again
    raise OSError(f"experiment record {url}: {ATTEMPTS} conditional writes in a row lost to other executors' "
                  "saves; this run's entry will be written by its next save")
