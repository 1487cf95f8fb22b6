"""The experiment record: `{prefix}/experiments/{script}-{dag hash}.json`, a page beside it.

One record per experiment DAG. Each real run appends a run entry (who, when, git commit,
command line, and per step: action, status, start, end, duration) and rewrites the record as
steps finish, so the file also shows a run in progress. `soda log` reads it back.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import socket
import subprocess
import sys
import time
from typing import Any, Optional

from pipeline import storage
from pipeline.plan import Plan, PlannedStep
from pipeline.redaction import redact_argv

logger = logging.getLogger(__name__)

RECORD_SCHEMA = 1
DEFAULT_PREFIX = "soda-out"


def default_prefix() -> str:
    return os.environ.get("SODA_PREFIX") or DEFAULT_PREFIX


def experiments_dir(prefix: str) -> str:
    return storage.join(prefix, "experiments")


def index_path(prefix: str) -> str:
    """The page listing every experiment record under `prefix`."""
    return storage.join(experiments_dir(prefix), "index.html")


def record_path(prefix: str, experiment: str, dag_hash: str) -> str:
    return storage.join(experiments_dir(prefix), f"{experiment}-{dag_hash}.json")


def git_state(path: Optional[str] = None) -> dict[str, Any]:
    cwd = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(dirty) if commit else None}


def is_plumbing(fields: dict[str, Any]) -> bool:
    """A step configured with a random-weight codec: its outputs exercise the pipeline only."""
    return any(key.split(".")[-1] == "mimi_model" and value == "random" for key, value in fields.items())


def plumbing_steps(plan: Plan) -> list[str]:
    """Steps that use a random-weight codec, and every step built on their outputs."""
    marked: set[str] = set()
    for p in plan.steps:  # topological order: dependencies first
        if is_plumbing(p.fields) or any(d.versioned_name in marked for d in p.dependencies):
            marked.add(p.versioned_name)
    return [p.versioned_name for p in plan.steps if p.versioned_name in marked]


def step_entry(p: PlannedStep) -> dict[str, Any]:
    fn = p.step.fn
    return {
        "name": p.name,
        "hash": p.identity.hash,
        "output_path": p.output_path,
        "description": p.step.description,
        "fn": f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}",
        "depends_on": [d.versioned_name for d in p.dependencies],
        "versioned": p.identity.versioned,
        "dependencies": p.identity.dependencies,
        "config": p.fields,
    }


class ExperimentRecord:
    """The record of one experiment DAG, with this run appended to its history."""

    def __init__(self, prefix: str, experiment: str, plan: Plan, description: Optional[str], run_id: str):
        self.url = record_path(prefix, experiment, plan.dag_hash())
        existing = storage.read_json(self.url) or {}
        self.data: dict[str, Any] = {
            "schema": RECORD_SCHEMA,
            "experiment": experiment,
            "dag_hash": plan.dag_hash(),
            "description": description,
            "prefix": prefix,
            "order": [p.versioned_name for p in plan.steps],  # topological; JSON keys get sorted
            "steps": {p.versioned_name: step_entry(p) for p in plan.steps},
            "plumbing_steps": plumbing_steps(plan),
            "runs": existing.get("runs", []),
        }
        self.run: dict[str, Any] = {
            "run_id": run_id,
            "status": "running",
            "started": time.time(),
            "ended": None,
            "user": _user(),
            "host": socket.gethostname(),
            "command": redact_argv([sys.executable, *sys.argv]),
            "git": git_state(sys.argv[0] if sys.argv and os.path.exists(sys.argv[0]) else None),
            "steps": {p.versioned_name: {"status": "pending"} for p in plan.steps},
        }
        self.data["runs"].append(self.run)

    def update_step(self, versioned_name: str, **fields: Any) -> None:
        self.run["steps"][versioned_name].update(fields)

    def save(self) -> None:
        storage.write_json_atomic(self.url, self.data)

    def finish(self, status: str) -> None:
        from pipeline.log_page import write_index, write_pages

        self.run["status"] = status
        self.run["ended"] = time.time()
        self.save()  # the run's outcome is on record before anything below can go wrong
        try:
            from pipeline.report import add_report

            add_report(self.data)  # tables, fits and plots from the steps' summary.json files
            self.save()
        except Exception as e:  # a report problem must never cost the record or the page
            logger.warning("experiment log: could not build the report sections: %s: %s", type(e).__name__, e)
        write_pages(self.data, self.url)
        try:
            write_index(self.data["prefix"])
        except Exception as e:
            logger.warning("experiment log: could not rewrite the index page: %s: %s", type(e).__name__, e)


def list_records(prefix: str, experiment: Optional[str] = None) -> list[str]:
    fs, path = storage.url_to_fs(experiments_dir(prefix))
    pattern = f"{path}/{experiment or '*'}-*.json"
    try:
        found = fs.glob(pattern)
    except FileNotFoundError:
        return []
    protocol = "" if storage.is_local(prefix) else prefix.split("://")[0] + "://"
    return sorted(protocol + f for f in found)


def latest_record(prefix: str, experiment: Optional[str] = None) -> Optional[dict[str, Any]]:
    best, best_time = None, -1.0
    for url in list_records(prefix, experiment):
        data = storage.read_json(url)
        if not data or not data.get("runs"):
            continue
        started = data["runs"][-1].get("started") or 0
        if started > best_time:
            best, best_time = data, started
    return best


def previous_steps(prefix: str, experiment: str) -> Optional[dict[str, dict[str, Any]]]:
    """name -> recorded identity of each step in the experiment's last recorded run."""
    record = latest_record(prefix, experiment)
    if record is None:
        return None
    return {s["name"]: s for s in record["steps"].values()}


def step_order(data: dict[str, Any]) -> list[str]:
    return list(data.get("order") or data["steps"])


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def summarize(data: dict[str, Any], run_index: int = -1) -> str:
    run = data["runs"][run_index]
    lines = [
        f"experiment  {data['experiment']}  (DAG {data['dag_hash']}, {len(data['steps'])} steps)",
        f"description {data.get('description') or '-'}",
        f"run         {run['run_id']}  {run['status']}  started {_when(run['started'])}"
        f"  took {_duration(run.get('started'), run.get('ended'))}",
        f"git         {run['git'].get('commit') or 'unknown'}{' (dirty)' if run['git'].get('dirty') else ''}",
        f"command     {' '.join(run['command'])}",
        "",
    ]
    rows = []
    for name in step_order(data):
        step = data["steps"][name]
        state = run["steps"].get(name, {})
        rows.append((state.get("status", "?"), name, _duration(state.get("start"), state.get("end")),
                     step["output_path"]))
    width = max(len(r[1]) for r in rows) if rows else 4
    lines.append(f"{'status':<10} {'step':<{width}} {'time':>8}  output")
    lines += [f"{s:<10} {n:<{width}} {d:>8}  {p}" for s, n, d, p in rows]
    failed = [n for n, s in run["steps"].items() if s.get("status") == "failed"]
    if failed:
        lines.append("\nfailed: " + ", ".join(failed))
        for name in failed:
            lines.append(f"--- {name}\n{run['steps'][name].get('error') or ''}")
    return "\n".join(lines)


def _when(t: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _duration(start: Optional[float], end: Optional[float]) -> str:
    if not start or not end:
        return "-"
    seconds = end - start
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="soda log", description="Print or open an experiment log.")
    parser.add_argument("path", nargs="?", help="a record (.json/.html) or a prefix (default: $SODA_PREFIX or ./soda-out)")
    parser.add_argument("--experiment", help="with a prefix: the experiment's script name")
    parser.add_argument("--open", action="store_true", help="open the HTML page in a browser")
    parser.add_argument("--index", action="store_true",
                        help="list every run under the prefix (and with --open, open the index page)")
    args = parser.parse_args(argv)
    path = args.path or default_prefix()
    if args.index:
        return _index_cli(path, args.open)
    if path.endswith(".json") or path.endswith(".html"):
        url = path[:-5] + ".json" if path.endswith(".html") else path
        data = storage.read_json(url)
        if data is None:
            print(f"soda log: no experiment record at {url}", file=sys.stderr)
            return 1
    else:
        data = latest_record(path, args.experiment)
        if data is None:
            print(f"soda log: no experiment records under {experiments_dir(path)}", file=sys.stderr)
            return 1
        url = record_path(path, data["experiment"], data["dag_hash"])
    print(summarize(data))
    page = url[:-5] + ".html"
    print()
    print(f"all runs: {index_path(data.get('prefix') or path)} (soda log --index)")
    print(f"log page: {page}")
    if args.open:
        import webbrowser

        webbrowser.open(page if "://" in page else "file://" + os.path.abspath(page))
    return 0


def _index_cli(prefix: str, open_page: bool) -> int:
    from pipeline.log_page import index_rows, write_index

    rows = index_rows(prefix)
    if not rows:
        print(f"soda log: no experiment records under {experiments_dir(prefix)}", file=sys.stderr)
        return 1
    page = write_index(prefix, rows)
    for r in rows:
        print(f"{_when(r['started'])}  {r['status']:<9} {r['experiment']}-{r['dag_hash']}  {r['page']}")
    print(f"\nindex page: {page}")
    if open_page:
        import webbrowser

        webbrowser.open(page if "://" in page else "file://" + os.path.abspath(page))
    return 0
