"""`soda status [PREFIX] [EXPERIMENT]`: where an experiment stands while it runs elsewhere.

Read from files alone, never from Ray: the experiment record (`{prefix}/experiments/{name}-{hash}.json`,
written when a run starts) names the steps and their outputs; each output's `.executor_status` says
what became of the step, and its `.executor_lease` who runs it now (`pipeline.lease`: a held flock
on local disk, a live heartbeat on object stores). So it works from a laptop against a `gs://` prefix
while the cluster runs, and after the cluster is gone.

    experiment exp8_soda_prelim  (DAG 1a2b3c4d, 21 steps)  record gs://b/soda/experiments/...json
    run        r-5f2e  running  started 2026-12-03 10:02:11 (1 h 12 min ago)  by alice@laptop

    kind         steps  done  running  failed  interrupted  waiting
    raw              9     9        0       0            0        0
    checkpoints      1     0        1       0            0        0
    evaluation      10     0        0       0            0       10

    running
      checkpoints/soda-prelim-600m-8a9f  1 h 02 min  held by head-1 pid 4242, heartbeat 8s ago

A step shown running whose lease nobody holds any more (its executor died) says so: rerunning the
same command takes it over.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from pipeline import fileio, storage
from pipeline.record_store import default_prefix, experiments_dir, scan_records
from pipeline.lease import Holder, lease_for
from pipeline.record_check import mark_died

WAITING = "waiting"
STATES = ("done", "running", "failed", "interrupted", WAITING)
_STATE_OF = {storage.SUCCESS: "done", storage.RUNNING: "running", storage.FAILED: "failed",
             storage.INTERRUPTED: "interrupted"}


@dataclass
class StepState:
    name: str
    output_path: str
    state: str  # one of STATES
    since: Optional[float] = None  # when its status was written
    holder: Optional[Holder] = None  # running: who holds its lease (None: nobody: its executor died)
    error: Optional[str] = None


@dataclass
class ExperimentStatus:
    record_url: str
    experiment: str
    dag_hash: str
    run: dict[str, Any]
    steps: list[StepState] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """kind (the step name's first part) -> state -> number of steps, in the record's order."""
        table: dict[str, dict[str, int]] = {}
        for step in self.steps:
            row = table.setdefault(step.name.split("/", 1)[0], {s: 0 for s in STATES})
            row[step.state] += 1
        return table


def experiment_status(prefix: str, experiment: Optional[str] = None) -> ExperimentStatus:
    """The latest record under `prefix` (of `experiment`, a script name, when given), with each step's
    state read from its output. Raises LookupError when there is no readable record."""
    readable, _ = scan_records(prefix, experiment)
    if not readable:
        raise LookupError(f"no readable experiment record{f' of {experiment!r}' if experiment else ''} under "
                          f"{experiments_dir(prefix)}")
    url, data = max(readable, key=lambda item: _last_start(item[1]))
    mark_died(data, url)  # a run still marked running whose executor's run lease is gone: "died"
    runs = data.get("runs") or []
    status = ExperimentStatus(url, str(data.get("experiment", "?")), str(data.get("dag_hash", "?")),
                              runs[-1] if runs else {})
    steps = data.get("steps") or {}
    order = [n for n in data.get("order") or steps if n in steps]
    paths = [str(steps[n].get("output_path", "")) for n in order]
    for name, path, record in zip(order, paths, storage.read_statuses(paths)):
        state = _STATE_OF.get(record.status, WAITING) if record else WAITING
        step = StepState(name, path, state, since=record.time if record else None,
                         error=record.error if record else None)
        if state == "running":
            step.holder = lease_for(path, owner="soda-status").probe()
        status.steps.append(step)
    return status


def _last_start(data: dict) -> float:
    runs = data.get("runs") or []
    started = runs[-1].get("started") if runs else None
    return float(started) if isinstance(started, (int, float)) else 0.0


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    return f"{int(minutes // 60)} h {int(minutes % 60):02d} min"


def render(status: ExperimentStatus, now: Optional[float] = None) -> str:
    now = time.time() if now is None else now
    run = status.run
    started = run.get("started")
    when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) + f" ({_ago(now - started)} ago)"
            if isinstance(started, (int, float)) else "?")
    who = "@".join(str(run[k]) for k in ("user", "host") if run.get(k)) or "?"
    lines = [f"experiment {status.experiment}  (DAG {status.dag_hash}, {len(status.steps)} steps)  "
             f"record {status.record_url}",
             f"run        {run.get('run_id', '?')}  {run.get('status', '?')}  started {when}  by {who}", ""]
    counts = status.counts()
    width = max([len("kind"), *map(len, counts)])
    lines.append(f"{'kind':<{width}}  {'steps':>5}  " + "  ".join(f"{s:>{max(len(s), 4)}}" for s in STATES))
    for kind, row in counts.items():
        lines.append(f"{kind:<{width}}  {sum(row.values()):>5}  "
                     + "  ".join(f"{row[s]:>{max(len(s), 4)}}" for s in STATES))
    running = [s for s in status.steps if s.state == "running"]
    if running:
        lines += ["", "running"]
        name_width = max(len(s.name) for s in running)
        for s in running:
            took = _ago(now - s.since) if s.since else "?"
            if s.holder is None:
                who = "no live holder: its executor died; rerun the same command to take it over"
            elif s.holder.holder == "unknown":
                who = "held (its lease file could not be read)"
            else:
                beat = (f", heartbeat {_ago(now - s.holder.heartbeat)} ago"
                        if not fileio.is_local(s.output_path) else " (a flock on this machine)")
                who = f"held by {s.holder.host} pid {s.holder.pid}{beat}"
            lines.append(f"  {s.name:<{name_width}}  {took:>10}  {who}")
    failed = [s for s in status.steps if s.state == "failed"]
    if failed:
        lines += ["", "failed"]
        for s in failed:
            error = (s.error or "").strip().splitlines()
            lines.append(f"  {s.name}: {error[-1] if error else 'no error recorded'}  ({s.output_path})")
    return "\n".join(lines)


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="soda status", description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix", nargs="?", help="the executor prefix (default: $SODA_PREFIX or ./soda-out)")
    parser.add_argument("experiment", nargs="?", help="the experiment's script name (default: the latest run)")
    args = parser.parse_args(argv)
    try:
        status = experiment_status(args.prefix or default_prefix(), args.experiment)
    except LookupError as e:
        print(f"soda status: {e}", file=sys.stderr)
        return 1
    print(render(status))
    return 0
