"""Experiment records under a prefix: where they are (`{prefix}/experiments/{experiment}-{dag hash}.json`,
the index page beside them) and reading them back, readable or not. Writing them is
pipeline.experiment_log's job; rendering them, pipeline.log_page's."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from pipeline import fileio
from pipeline.record_check import UnreadableRecord, is_set_aside, read_record

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "soda-out"


def default_prefix() -> str:
    return os.environ.get("SODA_PREFIX") or DEFAULT_PREFIX


def experiments_dir(prefix: str) -> str:
    return fileio.join(prefix, "experiments")


def index_path(prefix: str) -> str:
    """The page listing every experiment record under `prefix`."""
    return fileio.join(experiments_dir(prefix), "index.html")


def record_path(prefix: str, experiment: str, dag_hash: str) -> str:
    return fileio.join(experiments_dir(prefix), f"{experiment}-{dag_hash}.json")


def list_records(prefix: str, experiment: Optional[str] = None) -> list[str]:
    fs, path = fileio.url_to_fs(experiments_dir(prefix))
    pattern = f"{path}/{experiment or '*'}-*.json"
    try:
        found = fs.glob(pattern)
    except FileNotFoundError:
        return []
    protocol = "" if fileio.is_local(prefix) else prefix.split("://")[0] + "://"
    found = [f for f in found if not is_set_aside(f)]  # records moved aside as unreadable
    if experiment:  # `exp-*.json` also matches the records of `exp-b`
        found = [f for f in found if f.rsplit("/", 1)[-1][: -len(".json")].rsplit("-", 1)[0] == experiment]
    return sorted(protocol + f for f in found)


def scan_records(prefix: str, experiment: Optional[str] = None
                 ) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, str]]]:
    """(url, record) of each readable record under `prefix`, and (url, why) of each unreadable one."""
    readable, unreadable = [], []
    for url in list_records(prefix, experiment):
        try:
            data = read_record(url)
        except UnreadableRecord as e:
            unreadable.append((url, e.reason))
            continue
        if data is not None:  # else removed since the listing
            readable.append((url, data))
    return readable, unreadable


def latest_of(records: list[tuple[str, dict[str, Any]]], with_runs: bool = True) -> Optional[tuple[str, dict]]:
    """The record whose last run started last; else (`with_runs` False) the first record with no run."""
    best, best_time = None, -1.0
    for url, data in records:
        if not data.get("runs"):
            continue
        started = data["runs"][-1].get("started") or 0
        if started > best_time:
            best, best_time = (url, data), started
    if best is None and not with_runs and records:
        return records[0]
    return best


def latest_record(prefix: str, experiment: Optional[str] = None) -> Optional[dict[str, Any]]:
    """The record under `prefix` whose last run started last; unreadable records are skipped with a warning."""
    readable, unreadable = scan_records(prefix, experiment)
    for url, why in unreadable:
        logger.warning("experiment log: skipped the unreadable record %s: %s", url, why)
    found = latest_of(readable)
    return found[1] if found else None


def previous_steps(prefix: str, experiment: str) -> Optional[dict[str, dict[str, Any]]]:
    """name -> recorded identity of each step in the experiment's last recorded run."""
    record = latest_record(prefix, experiment)
    if record is None:
        return None
    return {s["name"]: s for s in (record.get("steps") or {}).values() if "name" in s}


def step_order(data: dict[str, Any], run: Optional[dict[str, Any]] = None) -> list[str]:
    """The record's steps in topological order; without any, the steps `run` mentions."""
    return list(data.get("order") or data.get("steps") or (run or {}).get("steps") or [])
