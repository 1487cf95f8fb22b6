"""Run a function on every host of a TPU slice through Ray (multi-host JAX), until it finishes:
preempted or lost hosts start the slice again, errors of the code have a small budget.

Ray's TPU conventions (ray._private.accelerators.tpu; Levanter's and Marin's pod launchers):
every host of a slice has the resources `TPU: <chips per host>` and `<slice name>: 1`; host 0
also has `TPU-<type>-head: 1`. The supervisor, `run_on_slice`, runs off the slice (the executor
runs a step declared with `ResourceConfig(tpu="v5p-64")` on the Ray head node), so it outlives
every slice it uses. Each attempt:

1. Reserve a slice by its head resource with a small reservation actor, waiting for one to be free
   (after a preemption the autoscaler brings up a new one, often under another name).
2. Find the slice's name (`TPU_NAME` on the head, else the head node's own resources) and its
   hosts (alive nodes with `<slice name>: 1`, the head first). A slice with hosts missing is
   waited for, like a preempted one.
3. Start one Ray task per host, pinned there by the slice-name resource and node affinity, with
   `TPU: <chips per host>`, each in a fresh worker process (`max_calls=1`), with the multi-host
   JAX settings in its environment (coordinator = host 0's IP, process count, process id).
4. Await all. When a host raises or dies, the others get `grace_s` to report, then are killed, and
   the attempt is judged by what Ray and JAX said (`error_kind`):
   - Ray says a host's worker or node died (WorkerCrashedError, NodeDiedError, ...), or the
     surviving hosts only raise JAX's lost-peer errors (a gloo/ICI collective whose peer went
     away, the coordination service reporting another task dead): a preemption. The slice starts
     again, without limit by default; the function resumes from its latest checkpoint.
   - Some host's code raised an error of its own (or was OOM-killed): a failure. The slice starts
     again at most `max_failures` times (default 1: a transient error of storage or network), then
     the call raises SliceFailed naming each host's error.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from pipeline.node_types import TpuSlice, tpu_slice
from pipeline.step_log import in_step_log

logger = logging.getLogger(__name__)

ENV_COORDINATOR = "SODA_JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "SODA_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "SODA_JAX_PROCESS_ID"
ENV_SLICE = "SODA_TPU_SLICE_NAME"
COORDINATOR_PORT = 8476
_NOT_SLICE_NAMES = re.compile(r"^(CPU|GPU|TPU|memory|object_store_memory|node:.*|accelerator_type:.*|TPU-.*-head)$")


class SliceFailed(RuntimeError):
    """Hosts' code raised errors more often than `max_failures` allows."""


class SlicePreempted(RuntimeError):
    """The slice was preempted or lost hosts more often than `max_preemptions` allows (unbounded by default)."""


def slice_spec(tpu_type: str) -> TpuSlice:
    """Chips, hosts and devices of a slice type (pipeline.node_types.tpu_slice, Ray's conventions):
    v2/v3/v4/v5p count TensorCores (2 per chip), v5e/v6e chips; hosts carry 4 chips, except
    single-host v5e/v6e slices of up to 8 chips."""
    return tpu_slice(tpu_type)


# ---- host side ----------------------------------------------------------------------------


def distributed_settings_from_env() -> dict:
    """Levanter DistributedConfig fields from the launcher's environment ({} when not on a slice)."""
    if ENV_COORDINATOR not in os.environ:
        return {}
    return {
        "coordinator_address": os.environ[ENV_COORDINATOR],
        "num_processes": int(os.environ[ENV_NUM_PROCESSES]),
        "process_id": int(os.environ[ENV_PROCESS_ID]),
    }


def on_slice_host() -> bool:
    """True inside a per-host task started by `run_on_slice`."""
    return ENV_PROCESS_ID in os.environ


def ray_is_up() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


# ---- discovery ----------------------------------------------------------------------------


def _slice_name_on_this_node() -> str:
    """The slice name of the node this code runs on."""
    import ray

    for var in (ENV_SLICE, "TPU_NAME"):
        if os.environ.get(var):
            return os.environ[var]
    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node["NodeID"] == node_id:
            names = [k for k, v in node["Resources"].items() if v == 1 and not _NOT_SLICE_NAMES.match(k)]
            if len(names) == 1:
                return names[0]
            raise RuntimeError(f"cannot tell this node's TPU slice name from its resources {node['Resources']}; "
                               f"set {ENV_SLICE} or TPU_NAME on the slice's hosts")
    raise RuntimeError(f"node {node_id} is not in ray.nodes()")


def slice_hosts(slice_name: str, head_resource: str) -> list[dict]:
    """Alive nodes of the slice, the head first: [{node_id, ip}]."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get(slice_name, 0) >= 1]
    nodes.sort(key=lambda n: (n["Resources"].get(head_resource, 0) < 1, n["NodeManagerAddress"], n["NodeID"]))
    return [{"node_id": n["NodeID"], "ip": n["NodeManagerAddress"]} for n in nodes]


def _reserve(spec: TpuSlice, timeout_s: float):
    """(slice name, reservation actor or None). None: this task already holds the head resource (it
    runs on the slice: `_attempt` refuses that). _Lost when no slice is free within `timeout_s`."""
    import ray
    import ray.exceptions as rex

    ctx = ray.get_runtime_context()
    held = ctx.get_assigned_resources() if ctx.worker.mode == ray.WORKER_MODE else {}  # a driver holds nothing
    if held.get(spec.head_resource, 0) >= 1:
        return _slice_name_on_this_node(), None

    @ray.remote(num_cpus=0)
    class _Reservation:
        def slice_name(self) -> str:
            return _slice_name_on_this_node()

    actor = _Reservation.options(resources={spec.head_resource: 1}).remote()
    try:
        return ray.get(actor.slice_name.remote(), timeout=timeout_s), actor
    except (rex.GetTimeoutError, rex.RayActorError) as e:  # no slice free yet, or its head died meanwhile
        ray.kill(actor)
        raise _Lost(f"no {spec.tpu_type} slice could be reserved ({spec.head_resource}) within {timeout_s:.0f}s: "
                    f"{type(e).__name__}", waiting=True) from e
    except BaseException:
        ray.kill(actor)
        raise


# ---- running ------------------------------------------------------------------------------

# What Ray reports when a host's process or node went away: preemption, a lost host, a killed worker.
# TaskUnschedulableError: a host task pinned (hard node affinity) to a node that was alive when the
# hosts were listed and is gone by the time the task is placed.
_RAY_DEATHS = ("WorkerCrashedError", "NodeDiedError", "ActorDiedError", "ActorUnavailableError", "OwnerDiedError",
               "ObjectLostError", "LocalRayletDiedError", "RaySystemError", "TaskUnschedulableError")
# What JAX reports on the hosts that survive one that died: a collective whose peer went away (gloo on
# CPU, ICI/DCN on TPU), or the distributed runtime's coordination service saying another task died.
JAX_PEER_LOST = re.compile(
    r"Gloo .*(Connection (reset|closed) by peer|Read error|Write error|Socket closed)"
    r"|coordination service|another task died|the leader task was preempted|UNAVAILABLE: .*(RPC|peer|socket)"
    r"|DEADLINE_EXCEEDED: .*(barrier|heartbeat|coordination)|task .* (preempted|heartbeat timeout)",
    re.IGNORECASE)

DIED, PEER_LOST, ERROR = "died", "peer_lost", "error"


def error_kind(error: BaseException) -> str:
    """DIED: Ray says the host's worker, node or owner is gone (OOM-killed workers excepted: that is
    the code's doing). PEER_LOST: the host's code raised what JAX raises when another host of the
    mesh vanished. ERROR: anything else the host's code raised."""
    import ray.exceptions as rex

    if isinstance(error, getattr(rex, "OutOfMemoryError", ())):
        return ERROR
    if isinstance(error, tuple(getattr(rex, n) for n in _RAY_DEATHS if hasattr(rex, n))):
        return DIED
    cause = getattr(error, "cause", None) if isinstance(error, rex.RayTaskError) else error
    return PEER_LOST if JAX_PEER_LOST.search(f"{type(cause).__name__}: {cause}") else ERROR


class _Lost(Exception):
    """One attempt ended by preemption or a lost host; the slice is tried again (not a failure).
    `waiting`: nothing was launched, because no whole slice was there to launch on."""

    def __init__(self, message: str, waiting: bool = False):
        super().__init__(message)
        self.waiting = waiting


class _Failed(Exception):
    """One attempt ended by an error of the code on some host; counted against the failure budget."""


def _host_call(fn: Callable, args: tuple) -> Any:
    return fn(*args)


def _launch(fn: Callable, args: tuple, spec: TpuSlice, name: str, hosts: list[dict], port: int) -> list:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    coordinator = f"{hosts[0]['ip']}:{port}"
    logger.info("slice %s (%s): starting on %d hosts, coordinator %s", name, spec.tpu_type, len(hosts), coordinator)

    remote = ray.remote(max_calls=1)(in_step_log(_host_call))  # a fresh process per call: frees the TPU after
    refs = []
    for i, host in enumerate(hosts):
        env = {ENV_COORDINATOR: coordinator, ENV_NUM_PROCESSES: str(len(hosts)), ENV_PROCESS_ID: str(i),
               ENV_SLICE: name}
        refs.append(remote.options(
            name=f"{spec.tpu_type}-host{i}",
            num_cpus=0,
            resources={name: 1, "TPU": spec.chips_per_host},
            scheduling_strategy=NodeAffinitySchedulingStrategy(host["node_id"], soft=False),
            runtime_env={"env_vars": env},
            max_retries=0,  # the supervisor restarts the whole slice: one host alone cannot rejoin a JAX mesh
        ).remote(fn, args))
    return refs


def _await_hosts(refs: list, grace_s: float) -> tuple[list[Any], dict[int, BaseException], list]:
    """Results by host, errors by host, and the refs still running. After the first error the others
    get `grace_s` to report theirs (a survivor's peer-lost error, another host's own error), except
    that a code error ends the wait at once."""
    import ray

    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    errors: dict[int, BaseException] = {}
    pending, deadline = list(refs), None
    while pending:
        timeout = None if deadline is None else max(0.0, deadline - time.time())
        done, pending = ray.wait(pending, num_returns=1, timeout=timeout)
        if not done:
            break
        for ref in done:
            try:
                results[index[ref]] = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - every host's outcome is classified below
                errors[index[ref]] = e
        if errors:
            if any(error_kind(e) == ERROR for e in errors.values()):
                break
            deadline = deadline or time.time() + grace_s
    return results, errors, pending


def _stop(pending: list, wait_s: float = 60.0) -> None:
    """Kill the hosts still running and wait for their processes to end (they hold the TPU and the port)."""
    import ray

    for ref in pending:
        ray.cancel(ref, force=True)
    if pending:
        ray.wait(pending, num_returns=len(pending), timeout=wait_s)


def _judge(name: str, hosts: list[dict], errors: dict[int, BaseException]) -> Exception:
    """_Failed when some host's code raised an error of its own, else _Lost (a host died, or the
    survivors only report losing it)."""
    kinds = {i: error_kind(e) for i, e in errors.items()}
    described = "; ".join(f"host {i} ({hosts[i]['ip']}) {'died' if kinds[i] == DIED else 'lost a peer' if kinds[i] == PEER_LOST else 'failed'}: "
                          f"{_one_line(errors[i])}" for i in sorted(errors))
    own = [i for i, k in kinds.items() if k == ERROR]
    if own:
        return _Failed(f"slice {name!r}: {described}")
    return _Lost(f"slice {name!r}: {described}")


def _one_line(error: BaseException, limit: int = 300) -> str:
    import ray.exceptions as rex

    shown = getattr(error, "cause", None) if isinstance(error, rex.RayTaskError) else error
    text = f"{type(shown).__name__}: {shown}".strip().splitlines()
    line = text[-1] if text else type(error).__name__
    return line if len(line) <= limit else line[:limit] + "..."


def _attempt(fn: Callable, args: tuple, spec: TpuSlice, timeout_s: float, port: int, grace_s: float) -> list[Any]:
    """One launch on a whole slice: the hosts' results, or _Lost / _Failed."""
    import ray

    name, reservation = _reserve(spec, timeout_s)
    try:
        hosts = slice_hosts(name, spec.head_resource)
        here = ray.get_runtime_context().get_node_id()
        if any(h["node_id"] == here for h in hosts):
            raise RuntimeError(f"run_on_slice runs on a host of slice {name!r}, the slice it supervises: it would "
                               "die with it. Run it off the slice (the executor runs a step with "
                               "ResourceConfig(tpu=...) on the Ray head node)")
        if len(hosts) != spec.hosts:
            raise _Lost(f"slice {name!r} ({spec.tpu_type}) has {len(hosts)} of its {spec.hosts} hosts alive",
                        waiting=True)
        refs = _launch(fn, args, spec, name, hosts, port)
        try:
            results, errors, pending = _await_hosts(refs, grace_s)
        except BaseException:  # Ctrl-C, or the supervisor's own task cancelled: take the hosts down too
            _stop(refs)
            raise
        if not errors:
            return results
        _stop(pending)
        raise _judge(name, hosts, errors)
    finally:
        if reservation is not None:
            ray.kill(reservation)


@dataclass(frozen=True)
class SliceEvent:
    """One attempt that ended without results: "preempted" (a host died, or survivors lost a peer),
    "waiting" (no whole slice to launch on: hosts missing, or none free) or "failed" (a code error)."""

    kind: str
    attempt: int
    message: str
    time: float


def run_on_slice(fn: Callable, args: Sequence[Any], tpu_type: str, *, max_failures: int = 1,
                 max_preemptions: Optional[int] = None, reserve_timeout_s: float = 600.0,
                 coordinator_port: int = COORDINATOR_PORT, retry_wait_s: float = 10.0,
                 max_retry_wait_s: float = 300.0, grace_s: float = 10.0,
                 on_event: Optional[Callable[[SliceEvent], None]] = None) -> list[Any]:
    """Call `fn(*args)` once on every host of a `tpu_type` slice, until every host returns; the
    hosts' results in process-id order.

    Must run off the slice (on the Ray head node, where the executor runs a step declared with
    `ResourceConfig(tpu=...)`), so that it outlives the slice. An attempt ends when a host's call
    raises or a host dies; the other hosts are then killed and the whole slice starts again (`fn`
    resumes from its own checkpoints):
    - a preemption, a lost host, or survivors that only report losing a peer (error_kind) is
      retried without limit (or `max_preemptions` times);
    - while no whole slice is there (hosts missing, none free) the supervisor waits; waiting is
      neither a preemption nor a failure;
    - an error of the code on some host is retried at most `max_failures` times, then SliceFailed.
    Between attempts it waits `retry_wait_s`, doubling for each attempt in a row that ended within
    five minutes (up to `max_retry_wait_s`). `on_event` hears of every attempt that ended without
    results."""
    spec = slice_spec(tpu_type)
    if on_slice_host():
        raise RuntimeError("run_on_slice called from a slice host's own task: the supervisor must run off the slice")
    failures = preemptions = streak = 0
    for attempt in itertools.count(1):
        started = time.time()
        try:
            return _attempt(fn, tuple(args), spec, reserve_timeout_s, coordinator_port, grace_s)
        except _Lost as e:
            message = str(e)
            if e.waiting:
                kind, budget = "waiting", "waiting for a whole slice"
            else:
                preemptions += 1
                kind = "preempted"
                if max_preemptions is not None and preemptions > max_preemptions:
                    raise SlicePreempted(f"{message}; gave up after {max_preemptions} preemptions") from e
                budget = f"preemption {preemptions}" + (f" of {max_preemptions}" if max_preemptions is not None
                                                       else ", not counted as a failure")
        except _Failed as e:
            failures += 1
            kind, message = "failed", str(e)
            if failures > max_failures:
                raise SliceFailed(f"{message} (failure {failures}; {max_failures} retr"
                                  f"{'y' if max_failures == 1 else 'ies'} allowed for errors of the code)") from e
            budget = f"failure {failures} of {max_failures} allowed"
        streak = streak + 1 if time.time() - started < 300 else 1
        wait = min(retry_wait_s * 2 ** (streak - 1), max(max_retry_wait_s, retry_wait_s))
        if on_event is not None:
            on_event(SliceEvent(kind, attempt, message, time.time()))
        logger.warning("%s (%s); starting the slice again in %.0fs", message, budget, wait)
        time.sleep(wait)
    raise AssertionError("unreachable")
