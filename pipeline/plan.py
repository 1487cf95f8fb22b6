"""From declared steps to a plan: the DAG, each step's identity, path and concrete config.

Pure apart from reading nothing: no storage, no Ray. `build_plan` is what a dry run and a
real run share.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from pipeline.identity import (
    EncodingError,
    StepIdentity,
    as_input,
    compute_identity,
    dependencies_of,
    describe_config,
    digest,
    map_config,
)
from pipeline.step import ExecutorStep, InputName, OutputName, VersionedValue
from pipeline import fileio
from pipeline.storage import join


class PlanError(ValueError):
    """The declared steps do not form a valid DAG."""


class UnhashableConfigError(PlanError, EncodingError):
    """A versioned value has no deterministic encoding, so the step has no identity."""


@dataclass
class PlannedStep:
    step: ExecutorStep
    identity: StepIdentity
    output_path: str
    dependencies: list["PlannedStep"]  # the steps it waits for (not those it reads nonblocking)
    selected: bool = True
    fields: dict[str, Any] = field(default_factory=dict)  # flat view of the whole config
    # False for a step that only `.nonblocking()` references reach: its path is known, but it runs
    # only when --run-only names it.
    needed: bool = True

    @property
    def skip_reason(self) -> str:
        """Why an unselected step does not run."""
        return "not selected by --run-only" if self.needed else "only a nonblocking input of other steps"

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def versioned_name(self) -> str:
        return self.identity.versioned_name

    def concrete_config(self, paths: dict[int, str]) -> Any:
        return map_config(self.step.config, lambda m: _resolve(m, self.output_path, paths))


@dataclass
class Plan:
    steps: list[PlannedStep]  # topological order: every step after its dependencies
    by_id: dict[int, PlannedStep]

    def of(self, step: ExecutorStep) -> PlannedStep:
        return self.by_id[id(step)]

    @property
    def paths(self) -> dict[int, str]:
        return {key: planned.output_path for key, planned in self.by_id.items()}

    def dag_hash(self) -> str:
        return digest(sorted(p.versioned_name for p in self.steps))


def topological_order(roots: Sequence[ExecutorStep]) -> list[ExecutorStep]:
    """Every step reachable from `roots`, dependencies first; a cycle raises PlanError."""
    order: list[ExecutorStep] = []
    state: dict[int, str] = {}
    stack: list[ExecutorStep] = []

    def visit(step: ExecutorStep) -> None:
        mark = state.get(id(step))
        if mark == "done":
            return
        if mark == "visiting":
            cycle = stack[[id(s) for s in stack].index(id(step)):] + [step]
            raise PlanError("dependency cycle: " + " -> ".join(s.name for s in cycle))
        state[id(step)] = "visiting"
        stack.append(step)
        for dep in dependencies_of(step):
            visit(dep)
        stack.pop()
        state[id(step)] = "done"
        order.append(step)

    for root in roots:
        if not isinstance(root, ExecutorStep):
            raise PlanError(f"expected ExecutorStep objects, got {type(root).__name__}: {root!r}")
        visit(root)
    return order


def build_plan(roots: Sequence[ExecutorStep], prefix: str, run_only: Optional[Sequence[str]] = None) -> Plan:
    order = topological_order(roots)
    identities: dict[int, StepIdentity] = {}
    by_id: dict[int, PlannedStep] = {}
    by_versioned_name: dict[str, PlannedStep] = {}
    planned: list[PlannedStep] = []
    for step in order:
        try:
            identity = compute_identity(step, identities)
        except EncodingError as e:
            raise UnhashableConfigError(
                f"{e}. Nothing was run: fix the value or leave it unversioned if it does not change the output."
            ) from e
        identities[id(step)] = identity
        deps = [by_id[id(d)] for d in dependencies_of(step, nonblocking=False)]
        path = _output_path(step.override_output_path, prefix, identity.versioned_name)
        candidate = PlannedStep(step, identity, path, _unique(deps))
        candidate.fields = describe_config(step.config, lambda m: _describe_marker(m, identities))
        twin = by_versioned_name.get(identity.versioned_name)
        if twin is not None:
            if _same_computation(twin, candidate):
                by_id[id(step)] = twin  # the same step declared twice: one node
                continue
            raise PlanError(
                f"two different steps are both named {identity.versioned_name!r}: they differ in "
                f"{_difference(twin, candidate)} but not in any versioned value, so they would "
                "write the same output. Give one another name, or mark the differing value versioned()."
            )
        by_versioned_name[identity.versioned_name] = candidate
        by_id[id(step)] = candidate
        planned.append(candidate)
    _check_overrides(planned)
    plan = Plan(planned, by_id)
    _mark_needed(plan, roots)
    if run_only:
        _select(plan, run_only)
    return plan


def _mark_needed(plan: Plan, roots: Sequence[ExecutorStep]) -> None:
    """Needed: the roots and what they wait for, transitively. As in Marin, a step reached only through
    nonblocking references is not, nor are steps that only it waits for: --run-only may still name them."""
    for p in plan.steps:
        p.needed = False
    stack = [plan.of(root) for root in roots]
    while stack:
        p = stack.pop()
        if not p.needed:
            p.needed = True
            stack.extend(p.dependencies)
    for p in plan.steps:
        p.selected = p.needed


def _select(plan: Plan, patterns: Sequence[str]) -> None:
    try:
        regexes = [re.compile(p) for p in patterns]
    except re.error as e:
        raise PlanError(f"--run-only pattern is not a valid regular expression: {e}") from e
    wanted = [p for p in plan.steps if any(r.search(p.name) for r in regexes)]
    if not wanted:
        raise PlanError(f"--run-only {list(patterns)} matches no step; names are like {plan.steps[-1].name!r}")
    for p in plan.steps:
        p.selected = False
    stack = list(wanted)
    while stack:
        p = stack.pop()
        if not p.selected:
            p.selected = True
            stack.extend(p.dependencies)


def _resolve(marker: Any, own_path: str, paths: dict[int, str]) -> Any:
    if isinstance(marker, VersionedValue):
        return marker.value
    if isinstance(marker, OutputName):
        return join(own_path, marker.name or "")
    ref = as_input(marker)
    return join(paths[id(ref.step)], ref.name or "")


def _describe_marker(marker: Any, identities: dict[int, StepIdentity]) -> Any:
    if isinstance(marker, VersionedValue):
        return marker.value
    if isinstance(marker, OutputName):
        return {"__output__": marker.name or ""}
    if isinstance(marker, (InputName, ExecutorStep)):
        ref = as_input(marker)
        return {"__input__": identities[id(ref.step)].versioned_name + (f"/{ref.name}" if ref.name else "")}
    return marker


def _fn_name(step: ExecutorStep) -> str:
    fn = step.fn
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _same_fn(f: Any, g: Any) -> bool:
    """Whether two step functions are the same code: one object, or one importable module-level name.

    Lambdas, local functions and partials share names across different code, so they match only
    when they are the same object (or partials of the same function with equal arguments).
    """
    if f is g:
        return True
    if isinstance(f, functools.partial) and isinstance(g, functools.partial):
        return _same_fn(f.func, g.func) and f.args == g.args and f.keywords == g.keywords
    qualname = getattr(f, "__qualname__", None)
    if not qualname or "<" in qualname or qualname != getattr(g, "__qualname__", None):
        return False
    return getattr(f, "__module__", None) == getattr(g, "__module__", None)


def _same_computation(a: PlannedStep, b: PlannedStep) -> bool:
    return _same_fn(a.step.fn, b.step.fn) and a.fields == b.fields and \
        a.step.override_output_path == b.step.override_output_path


def _difference(a: PlannedStep, b: PlannedStep) -> str:
    if not _same_fn(a.step.fn, b.step.fn):
        if _fn_name(a.step) == _fn_name(b.step):
            return f"their function (two different objects both named {_fn_name(a.step)})"
        return f"their function ({_fn_name(a.step)} vs {_fn_name(b.step)})"
    keys = sorted(k for k in set(a.fields) | set(b.fields) if a.fields.get(k) != b.fields.get(k))
    return "unversioned config fields " + ", ".join(keys[:8]) if keys else "their output path override"


def _output_path(override: Optional[str], prefix: str, versioned_name: str) -> str:
    """`{prefix}/{name}-{hash}`, or the step's override: a relative override is relative to the prefix (as in
    Marin), never to the current directory, which Ray workers do not share."""
    if override is None:
        return join(prefix, versioned_name)
    return join(prefix, override) if fileio.is_relative(override) else override


def _check_overrides(planned: list[PlannedStep]) -> None:
    seen: dict[str, str] = {}
    for p in planned:
        other = seen.setdefault(p.output_path.rstrip("/"), p.versioned_name)
        if other != p.versioned_name:
            raise PlanError(f"steps {other!r} and {p.versioned_name!r} would both write {p.output_path!r}")


def _unique(steps: list[PlannedStep]) -> list[PlannedStep]:
    out: list[PlannedStep] = []
    for s in steps:
        if all(s is not o for o in out):
            out.append(s)
    return out


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) for each field that differs between two flat configs."""
    missing = object()
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            out.append((key, None if a is missing else a, None if b is missing else b))
    return out


def replace_config(step: ExecutorStep, **changes: Any) -> ExecutorStep:
    """A copy of `step` with config fields replaced (handy in experiment scripts and tests)."""
    return dataclasses.replace(step, config=dataclasses.replace(step.config, **changes))
