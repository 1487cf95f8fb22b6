"""What the executor would do with each step, and why: the dry run's table.

Reads status and lease files, never writes. The same classification names the action of each
step in a real run's record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, TextIO

from pipeline import fileio, storage
from pipeline.lease import lease_for
from pipeline.plan import Plan, PlannedStep, changed_fields
from pipeline.identity import digest

RUN, SKIP, WAIT, TAKE_OVER, FAIL = "run", "skip", "wait", "take over", "fail"


@dataclass(frozen=True)
class Action:
    kind: str
    reason: str

    def label(self) -> str:
        return f"{self.kind}: {self.reason.split(' (')[0]}" if self.kind == SKIP else self.kind


def classify(planned: PlannedStep, force_run_failed: bool) -> Action:
    if not planned.selected:
        return Action(SKIP, planned.skip_reason)
    status = storage.read_status(planned.output_path)
    if status is not None and status.status == storage.SUCCESS:
        differing = unversioned_differences(planned)
        if differing:
            return Action(SKIP, "cached (unversioned config differs: " + ", ".join(differing[:4]) + ")")
        return Action(SKIP, "cached")
    holder = lease_for(planned.output_path, owner="probe").probe()
    if holder is not None:
        return Action(WAIT, f"running elsewhere ({holder.describe()})")
    if status is not None and status.status == storage.RUNNING:
        age = time.time() - (status.time or 0)
        return Action(TAKE_OVER, f"stale lease: a run on {status.host} pid {status.pid} started "
                                 f"{age:.0f}s ago and stopped without finishing")
    if status is not None and status.status == storage.INTERRUPTED:
        return Action(RUN, "interrupted (Ctrl-C) in an earlier run")
    if status is not None and status.status == storage.FAILED:
        first_line = (status.error or "unknown error").splitlines()[0][:160]
        if force_run_failed:
            return Action(RUN, f"failed before: {first_line}")
        return Action(FAIL, f"failed before ({first_line}); pass --force-run-failed true to rerun it")
    return Action(RUN, "no output yet")


def unversioned_differences(planned: PlannedStep) -> list[str]:
    """Config fields that differ from those recorded when the cached output was produced."""
    info = fileio.read_json(fileio.join(planned.output_path, storage.INFO_FILE), default=None)
    if not info or info.get("fingerprint") == digest(planned.fields):
        return []
    current = storage.redact_data(planned.fields)  # the info file holds the redacted view
    return [key for key, _, _ in changed_fields(info.get("fields", {}), current)]


def explain_changes(planned: PlannedStep, previous: Optional[dict[str, Any]]) -> list[str]:
    """Why this step's hash differs from the same-named step in the previous recorded run."""
    if previous is None:
        return []
    old = previous.get(planned.name)
    if old is None:
        return ["new step since the last run"]
    if old.get("hash") == planned.identity.hash:
        return []
    lines = [f"versioned {key}: {_short(a)} -> {_short(b)}"
             for key, a, b in changed_fields(old.get("versioned", {}), planned.identity.versioned)]
    lines += [f"dependency {key}: {_short(a)} -> {_short(b)}"
              for key, a, b in changed_fields(old.get("dependencies", {}), planned.identity.dependencies)]
    return lines or [f"hash {old.get('hash')} -> {planned.identity.hash} (name or encoding changed)"]


def print_plan(plan: Plan, actions: list[Action], changes: list[list[str]], out: TextIO) -> None:
    rows = [(a.label(), p.versioned_name, a.reason, p.output_path) for p, a in zip(plan.steps, actions)]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(("action", "step", "reason"))]
    widths = [min(w, 60) for w in widths]
    header = f"{'action':<{widths[0]}}  {'step':<{widths[1]}}  {'reason':<{widths[2]}}  output"
    out.write(header + "\n" + "-" * len(header) + "\n")
    for (label, name, reason, path), lines, p in zip(rows, changes, plan.steps):
        out.write(f"{label:<{widths[0]}}  {name:<{widths[1]}}  {reason[:60]:<{widths[2]}}  {path}\n")
        for line in lines:
            out.write(f"{'':<{widths[0]}}    changed: {line}\n")
        for field_path, ref in p.identity.nonblocking_inputs().items():
            out.write(f"{'':<{widths[0]}}    nonblocking input {field_path}: {ref} (not waited for)\n")
    counts: dict[str, int] = {}
    for a in actions:
        counts[a.label()] = counts.get(a.label(), 0) + 1
    summary = ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))
    out.write(f"\n{len(actions)} steps: {summary}\n")


def print_unplaceable(problems: dict[str, str], pending: int, cluster_file: str, out: TextIO) -> None:
    """After the plan: the pending steps that no node type of `cluster_file` could ever run, and why."""
    if not problems:
        out.write(f"placement: each of the {pending} steps to run fits a node type of {cluster_file}\n")
        return
    out.write(f"\n{len(problems)} of the {pending} steps to run can never run on the node types of {cluster_file}:\n")
    for name, reason in problems.items():
        out.write(f"  {name}: {reason}\n")
    out.write("Add node types that fit to the cluster file, or change these steps' ResourceConfig or config.\n")


def _short(value: Any, limit: int = 60) -> str:
    text = "(none)" if value is None else storage_safe_repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def storage_safe_repr(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
