"""Whether each pending step could ever be placed on some node of a Ray cluster, said before anything runs.

A step's Ray task needs everything its ResourceConfig asks (CPU, GPU, memory, custom resources) on
ONE node; a step with `tpu="v5p-64"` runs on the head node and needs a slice to launch on, i.e. a
node type with the slice head resource `TPU-v5p-64-head`. A task that no node
has, nor any node the autoscaler can add, waits forever. This module knows which node types a
cluster has or may add (`pipeline.node_types`: from a cluster launcher YAML, or from the connected
Ray) and says, per step, why none of them could take it:

    problems = placement_problems([(name, fn, config, resources), ...], node_types)
    # {"models/big-1a2b3c": "needs TPU-v5p-512-head: 1 (a v5p-512 slice); the cluster's TPU
    #   node types: v5p-32, v5p-64", ...}

Step-specific rules are a generic hook: a step function may carry an attribute
`placement_problems`, a callable `(config, node_type) -> list[str]`. It is asked about each node
type that has all the step's resources, and the step is placeable only if at least one of those
gets no problems (e.g. work that must split evenly over a slice's devices). A rule that raises
is reported as the step's problem, naming the rule.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from pipeline.node_types import (HEAD_RESOURCE, ClusterFileError, NodeType, node_types_from_cluster_file,
                                 node_types_from_live_cluster, tpu_slice)
from pipeline.step import ResourceConfig

__all__ = ["ClusterFileError", "NodeType", "node_types_from_cluster_file", "node_types_from_live_cluster",
           "placement_problems", "tpu_slice", "wanted_resources", "format_resources"]

GiB = 1024**3
Pending = tuple[str, Callable[[Any], Any], Any, Optional[ResourceConfig]]  # (step name, fn, concrete config, resources)
_MAX_LISTED = 8


def wanted_resources(resources: Optional[ResourceConfig]) -> dict[str, float]:
    """What the step asks of one node, as Ray names it (memory in bytes); zeros left out. For a `tpu`
    step, the slice it launches on: its head resource (the supervisor's own place, the head node,
    every cluster has)."""
    resources = resources or ResourceConfig()
    if resources.tpu:
        return {resources.slice_head_resource: 1.0}
    options = resources.ray_options()
    wanted = dict(options.get("resources", {}))
    wanted["CPU"] = resources.cpus
    wanted["GPU"] = resources.gpus
    if options.get("memory"):
        wanted["memory"] = options["memory"]
    return {k: float(v) for k, v in wanted.items() if v}


def format_resources(resources: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {_amount(k, v)}" for k, v in sorted(resources.items())) + "}"


def placement_problems(pending: Iterable[Pending], node_types: Sequence[NodeType]) -> dict[str, str]:
    """Step name -> why no node type could ever run it; steps that could run are left out."""
    candidates = [t for t in node_types if t.max_workers != 0]
    problems: dict[str, str] = {}
    for name, fn, config, resources in pending:
        wanted = wanted_resources(resources)
        fitting = [t for t in candidates if t.fits(wanted)]
        if not fitting:
            problems[name] = _why_none_fits(wanted, candidates, len(node_types) - len(candidates))
            continue
        rule = getattr(fn, "placement_problems", None)
        if callable(rule):
            said = _ask_rule(rule, config, fitting)
            if said is not None:
                problems[name] = said
    return problems


def _ask_rule(rule: Callable[[Any, NodeType], Sequence[str]], config: Any, fitting: list[NodeType]) -> Optional[str]:
    """None when some fitting node type has no problems under the step's rule, else what it said."""
    said: dict[tuple[str, ...], list[str]] = {}  # the problems -> the node types that have them
    for node_type in fitting:
        try:
            found = tuple(str(p) for p in rule(config, node_type))
        except Exception as e:  # a broken rule must not pass a step silently, nor crash the whole check
            name = f"{getattr(rule, '__module__', '?')}.{getattr(rule, '__qualname__', repr(rule))}"
            found = (f"its placement rule {name} raised {type(e).__name__}: {e}",)
        if not found:
            return None
        said.setdefault(found, []).append(node_type.name)
    return "; ".join(f"on {_names(names)}: {' '.join(found)}" for found, names in said.items())


def _why_none_fits(wanted: dict[str, float], types: list[NodeType], cannot_start: int) -> str:
    if not types:
        return (f"needs {format_resources(wanted)} on one node, but the cluster has no node types"
                + (f" that can start ({cannot_start} with max_workers 0)" if cannot_start else ""))
    lacking = [_lacking(key, amount, types) for key, amount in sorted(wanted.items())
               if not any(t.fits({key: amount}) for t in types)]
    if lacking:
        return "; ".join(lacking)
    return (f"needs {format_resources(wanted)} on one node; each is on some node type, but no node type has "
            f"them all (node types: {_describe(types)})")


def _lacking(key: str, amount: float, types: list[NodeType]) -> str:
    head = HEAD_RESOURCE.fullmatch(key)
    if head:
        slices = sorted({t.accelerator for t in types if t.is_tpu_slice}, key=_slice_order)
        have = f"the cluster's TPU node types: {', '.join(slices)}" if slices else "the cluster has no TPU node types"
        return f"needs {key}: {amount:g} (a {head.group(1)} slice); {have}"
    having = [t for t in types if t.resources.get(key, 0) > 0]
    if not having:
        kind = {"GPU": "GPUs", "CPU": "CPUs", "memory": "memory"}.get(key, key)
        return f"needs {key}: {_amount(key, amount)}; no node type has {kind}"
    most = max(t.resources[key] for t in having)
    biggest = [t.name for t in having if t.resources[key] == most]
    return (f"needs {key}: {_amount(key, amount)} on one node; the most any node type has is "
            f"{_amount(key, most)} ({_names(biggest)})")


def _describe(types: list[NodeType]) -> str:
    groups: dict[str, list[str]] = {}
    for t in types:
        shown = {k: v for k, v in t.resources.items() if k not in ("object_store_memory",)}
        groups.setdefault(format_resources(shown), []).append(t.name)
    parts = [f"{_names(names)} {resources}" for resources, names in groups.items()]
    more = f" and {len(parts) - _MAX_LISTED} more" if len(parts) > _MAX_LISTED else ""
    return "; ".join(parts[:_MAX_LISTED]) + more


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _amount(key: str, value: float) -> str:
    return f"{value / GiB:.1f}GiB" if key in ("memory", "object_store_memory") else f"{value:g}"


def _slice_order(tpu_type: Optional[str]) -> tuple:
    m = re.fullmatch(r"(.*)-(\d+)", tpu_type or "")
    return (m.group(1), int(m.group(2))) if m else (tpu_type or "", 0)
