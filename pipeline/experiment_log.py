"""The experiment record: `{prefix}/experiments/{script}-{dag hash}.json`, a page beside it.

One record per experiment DAG. Each real run appends a run entry (who, when, git commit,
command line, and per step: action, status, start, end, duration) and rewrites the record as
steps finish, so the file also shows a run in progress. Executors running the DAG at once each
save by read-merge-write under a lock (`pipeline.record_merge`), so every run's entry is kept.
`soda log` reads it back. An unreadable record never stops a run or `soda log`, and a run whose
executor died shows as `died` (`pipeline.record_check` says how each is told).
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
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

from pipeline.lease import Lease
from pipeline.plan import Plan, PlannedStep
from pipeline.record_check import (DIED, RECORD_SCHEMA, UnreadableRecord, drop_run_lease, mark_died, read_record,
                                   set_aside, take_run_lease)
from pipeline.record_merge import save_merged
from pipeline.record_store import (default_prefix, experiments_dir, index_path, latest_of, record_path, scan_records,
                                   step_order)
from pipeline.redaction import redact_argv
from pipeline.log_page import index_rows, write_index, write_pages

logger = logging.getLogger(__name__)

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


def plumbing_steps(plan: Plan) -> list[str]:
    """Steps marked `plumbing` (their outputs are not meaningful), and every step built on their outputs."""
    marked: set[str] = set()
    for p in plan.steps:  # topological order: dependencies first
        if p.step.plumbing or any(d.versioned_name in marked for d in p.dependencies):
            marked.add(p.versioned_name)
    return [p.versioned_name for p in plan.steps if p.versioned_name in marked]


def plumbing_reasons(plan: Plan) -> list[str]:
    """The distinct reasons the marked steps give, in plan order."""
    return list(dict.fromkeys(p.step.plumbing for p in plan.steps if p.step.plumbing))


ReportBuilder = Callable[[dict[str, Any]], list[dict[str, Any]]]


def add_report(data: dict[str, Any], build: ReportBuilder) -> int:
    """Replace the record's report sections with `build(data)`'s ({title, html, markdown} each); keep the
    sections other code added. Returns how many it built."""
    kept = [s for s in data.get("sections", []) if s.get("source") != "report"]
    new = [{**section, "source": "report"} for section in build(data)]
    data["sections"] = kept + new
    return len(new)


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
    """The record of one experiment DAG, with this run appended to its history.

    Opening it never stops a run: an unreadable record is moved aside and a new one starts
    (`pipeline.record_check`); earlier runs whose executor died are marked `died`. From its first
    save until `finish` the run holds its run lease, which tells readers it is alive.
    """

    writable = True  # False when an unreadable record could not be moved aside: it is left as it is
    _lease_wanted = False  # the run lease is taken at the first save
    _run_lease: Optional[Lease] = None
    _died: Mapping[str, dict[str, Any]] = MappingProxyType({})  # per instance: runs found died at opening
    report: Optional[ReportBuilder] = None

    def __init__(self, prefix: str, experiment: str, plan: Plan, description: Optional[str], run_id: str,
                 report: Optional[ReportBuilder] = None):
        self.report = report  # builds the page's report sections from the record at the end of the run
        self.url = record_path(prefix, experiment, plan.dag_hash())
        self._lease_wanted = True
        self._died: dict[str, dict[str, Any]] = {}  # run_id -> entry: runs found died when the record was opened
        self.data: dict[str, Any] = {
            "schema": RECORD_SCHEMA,
            "experiment": experiment,
            "dag_hash": plan.dag_hash(),
            "description": description,
            "prefix": prefix,
            "order": [p.versioned_name for p in plan.steps],  # topological; JSON keys get sorted
            "steps": {p.versioned_name: step_entry(p) for p in plan.steps},
            "plumbing_steps": plumbing_steps(plan),
            "plumbing_reasons": plumbing_reasons(plan),
            "runs": self._earlier_runs(),
        }
        self.run: dict[str, Any] = {
            "run_id": run_id,
            "status": "running",
            "started": time.time(),
            "ended": None,
            "user": _user(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": redact_argv([sys.executable, *sys.argv]),
            "git": git_state(sys.argv[0] if sys.argv and os.path.exists(sys.argv[0]) else None),
            "steps": {p.versioned_name: {"status": "pending"} for p in plan.steps},
        }
        self.data["runs"].append(self.run)

    def _earlier_runs(self) -> list[dict[str, Any]]:
        """The runs already on record, those whose executor died marked so; none from an unreadable record."""
        try:
            existing = read_record(self.url)
        except UnreadableRecord as e:
            try:
                aside = set_aside(self.url)
            except FileNotFoundError:  # another executor moved it a moment ago
                logger.warning("experiment record %s was unreadable (%s) and has been moved aside; this run starts "
                               "a new record", self.url, e.reason)
            except Exception as err:  # never overwrite what could not be read
                self.writable = False
                logger.error("experiment record %s is unreadable (%s) and could not be moved aside (%s): this run "
                             "writes no record or page; move the file away to record the next run",
                             self.url, e.reason, err)
            else:
                logger.warning("experiment record %s is unreadable (%s): moved aside to %s (nothing deleted); "
                               "this run starts a new record", self.url, e.reason, aside)
            return []
        if existing is None:
            return []
        for run in mark_died(existing, self.url):
            self._died[run.get("run_id")] = run
            logger.warning("experiment record %s: run %s stopped without recording its outcome (its executor "
                           "died); marked %s", self.url, run.get("run_id"), DIED)
            if run.get("run_lease"):
                drop_run_lease(self.url, run.get("run_id"))
        return existing.get("runs") or []

    def update_step(self, versioned_name: str, **fields: Any) -> None:
        self.run["steps"][versioned_name].update(fields)

    def save(self) -> None:
        if not self.writable:
            return
        if self._lease_wanted:  # before this run first shows in the record: readers then see it alive
            self._lease_wanted = False
            try:
                self._run_lease = take_run_lease(self.url, self.run["run_id"])
            except Exception as e:
                logger.warning("experiment log: could not take the run lease beside %s (%s): readers tell whether "
                               "this run lives from its steps' leases and its pid", self.url, e)
            if self._run_lease is not None:
                self.run["run_lease"] = True
        save_merged(self.url, self.data, self.run, self._died)  # other executors' runs kept as the record has them

    def finish(self, status: str) -> None:
        self.run["status"] = status
        self.run["ended"] = time.time()
        try:
            if self.writable:
                self._write_outcome()
        finally:
            if self._run_lease is not None:  # only now: the record no longer says running
                try:
                    drop_run_lease(self.url, self.run["run_id"], self._run_lease)
                except Exception as e:
                    logger.debug("could not release the run lease: %s", e)
                self._run_lease = None

    def _write_outcome(self) -> None:
        self.save()  # the run's outcome is on record before anything below can go wrong
        if self.report is not None:
            try:
                add_report(self.data, self.report)  # e.g. tables, fits and plots from the steps' summaries
                self.save()
            except Exception as e:  # a report problem must never cost the record or the page
                logger.warning("experiment log: could not build the report sections: %s: %s", type(e).__name__, e)
        write_pages(self.data, self.url)
        try:
            write_index(self.data["prefix"])
        except Exception as e:
            logger.warning("experiment log: could not rewrite the index page: %s: %s", type(e).__name__, e)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def summarize(data: dict[str, Any], run_index: int = -1) -> str:
    """The record as text: its latest run (or `run_index`) and each step's state; missing fields show as ?."""
    runs = data.get("runs") or []
    run = runs[run_index] if runs else {}
    steps, states, git = data.get("steps") or {}, run.get("steps") or {}, run.get("git") or {}
    lines = [
        f"experiment  {data.get('experiment', '?')}  (DAG {data.get('dag_hash', '?')}, {len(steps)} steps)",
        f"description {data.get('description') or '-'}",
        f"run         {run.get('run_id', '?')}  {run.get('status', '?')}  started {_when(run.get('started'))}"
        f"  took {_duration(run.get('started'), run.get('ended'))}" if runs else "run         none recorded",
        f"git         {git.get('commit') or 'unknown'}{' (dirty)' if git.get('dirty') else ''}",
        f"command     {' '.join(run.get('command') or []) or '-'}",
        "",
    ]
    if run.get("status") == DIED:
        lines.insert(3, "            its executor died before recording an outcome (its lease is gone); rerun the "
                        "same command: finished steps are cached, the died ones are taken over")
    rows = []
    for name in step_order(data, run):
        state = states.get(name) or {}
        rows.append((state.get("status", "?"), name, _duration(state.get("start"), state.get("end")),
                     (steps.get(name) or {}).get("output_path", "?")))
    width = max(len(r[1]) for r in rows) if rows else 4
    lines.append(f"{'status':<10} {'step':<{width}} {'time':>8}  output")
    lines += [f"{s:<10} {n:<{width}} {d:>8}  {p}" for s, n, d, p in rows]
    failed = [n for n, s in states.items() if s.get("status") == "failed"]
    if failed:
        lines.append("\nfailed: " + ", ".join(failed))
        for name in failed:
            lines.append(f"--- {name}\n{states[name].get('error') or ''}")
    return "\n".join(lines)


def _when(t: Optional[float]) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"
    except (ValueError, OverflowError, OSError):  # a time no clock shows
        return "-"


def _duration(start: Optional[float], end: Optional[float]) -> str:
    if not start or not end:
        return "-"
    seconds = end - start
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def cli_main(argv: list[str]) -> int:
    """`soda log`. Under a prefix, an unreadable record is skipped with one line on stderr naming it and why;
    the exit code is 0 when a record was shown, 1 when none could be (none there, or every one unreadable)."""
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
        try:
            data = read_record(url)
        except UnreadableRecord as e:
            print(f"soda log: cannot show {url}: {e.reason}", file=sys.stderr)
            return 1
        if data is None:
            print(f"soda log: no experiment record at {url}", file=sys.stderr)
            return 1
    else:
        readable, unreadable = scan_records(path, args.experiment)
        for bad, why in unreadable:
            print(f"soda log: skipped {bad}: {why}", file=sys.stderr)
        found = latest_of(readable, with_runs=False)
        if found is None:
            what = f"no readable experiment records ({len(unreadable)} unreadable)" if unreadable else \
                "no experiment records"
            print(f"soda log: {what} under {experiments_dir(path)}", file=sys.stderr)
            return 1
        url, data = found
    if mark_died(data, url):  # its page was last written before its executor died
        _rewrite_pages(data, url)
    print(summarize(data))
    page = url[:-5] + ".html"
    print()
    print(f"all runs: {index_path(data.get('prefix') or path)} (soda log --index)")
    print(f"log page: {page}")
    if args.open:
        import webbrowser

        webbrowser.open(page if "://" in page else "file://" + os.path.abspath(page))
    return 0


def _rewrite_pages(data: dict[str, Any], url: str) -> None:
    try:
        write_pages(data, url)
    except Exception as e:  # a read-only prefix: the printed log still says it
        logger.debug("could not rewrite the page of %s: %s", url, e)


def _index_cli(prefix: str, open_page: bool) -> int:
    unreadable: list[tuple[str, str]] = []
    rows = index_rows(prefix, unreadable)
    for bad, why in unreadable:
        print(f"soda log: skipped {bad}: {why}", file=sys.stderr)
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
