"""Run a function on every host of a TPU slice through Ray (multi-host JAX), with preemption retries.

Ray's TPU conventions (ray._private.accelerators.tpu; Levanter's and Marin's pod launchers):
every host of a slice has the resources `TPU: <chips per host>` and `<slice name>: 1`; host 0
also has `TPU-<type>-head: 1`. So:

1. Reserve the slice by its head resource. A step declared with `ResourceConfig(tpu="v5p-64")`
   already runs on the head (the executor's task holds `TPU-v5p-64-head`); from anywhere else
   `run_on_slice` holds it with a small reservation actor.
2. Find the slice's name (`TPU_NAME` on the head, else the head node's own resources) and its
   hosts (alive nodes with `<slice name>: 1`, the head first).
3. Start one Ray task per host, pinned there by the slice-name resource and node affinity, with
   `TPU: <chips per host>`, each in a fresh worker process (`max_calls=1`), with the multi-host
   JAX settings in its environment (coordinator = host 0's IP, process count, process id).
4. Await all. An exception on one host cancels the others and fails the call, naming the host.
   A host or worker dying (preemption) cancels the rest and starts again from step 1, up to
   `max_preemptions` times; a training function resumes from its latest checkpoint.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, Callable, Sequence

from pipeline.node_types import TpuSlice, tpu_slice

logger = logging.getLogger(__name__)

ENV_COORDINATOR = "SODA_JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "SODA_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "SODA_JAX_PROCESS_ID"
ENV_SLICE = "SODA_TPU_SLICE_NAME"
COORDINATOR_PORT = 8476
_NOT_SLICE_NAMES = re.compile(r"^(CPU|GPU|TPU|memory|object_store_memory|node:.*|accelerator_type:.*|TPU-.*-head)$")


class SliceFailed(RuntimeError):
    """A host's function raised: the step fails (no retry)."""


class SlicePreempted(RuntimeError):
    """A host or worker died more often than `max_preemptions` allows."""


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
    """(slice name, reservation actor or None). None: this task already holds the head resource."""
    import ray

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
    except Exception:
        ray.kill(actor)
        raise


# ---- running ------------------------------------------------------------------------------


def _preempted(error: BaseException) -> bool:
    import ray.exceptions as rex

    kinds = tuple(getattr(rex, n) for n in ("WorkerCrashedError", "NodeDiedError", "ActorDiedError",
                                             "OwnerDiedError", "ObjectLostError", "LocalRayletDiedError",
                                             "RaySystemError") if hasattr(rex, n))
    return isinstance(error, kinds)


def _host_call(fn: Callable, args: tuple) -> Any:
    return fn(*args)


def _attempt(fn: Callable, args: tuple, spec: TpuSlice, timeout_s: float, port: int) -> list[Any]:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name, reservation = _reserve(spec, timeout_s)
    try:
        hosts = slice_hosts(name, spec.head_resource)
        if len(hosts) != spec.hosts:
            raise RuntimeError(f"slice {name!r} ({spec.tpu_type}) has {len(hosts)} alive hosts, expected {spec.hosts}")
        coordinator = f"{hosts[0]['ip']}:{port}"
        logger.info("slice %s (%s): starting on %d hosts, coordinator %s", name, spec.tpu_type, len(hosts), coordinator)
        remote = ray.remote(max_calls=1)(_host_call)  # a fresh process per call: frees the TPU after
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
                max_retries=0,
            ).remote(fn, args))
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = refs.index(done[0])
            try:
                results[i] = ray.get(done[0])
            except Exception as e:
                for ref in pending:
                    ray.cancel(ref, force=True)
                if _preempted(e):
                    raise SlicePreempted(f"slice {name!r}: host {i} ({hosts[i]['ip']}) died: {type(e).__name__}") from e
                raise SliceFailed(f"slice {name!r}: host {i} ({hosts[i]['ip']}) failed: {e}") from e
        return results
    finally:
        if reservation is not None:
            ray.kill(reservation)


def run_on_slice(fn: Callable, args: Sequence[Any], tpu_type: str, *, max_preemptions: int = 3,
                 reserve_timeout_s: float = 600.0, coordinator_port: int = COORDINATOR_PORT,
                 retry_wait_s: float = 5.0) -> list[Any]:
    """Call `fn(*args)` once on every host of a `tpu_type` slice; returns the hosts' results in
    process-id order. Raises SliceFailed when a host's call raises, SlicePreempted when hosts
    died more than `max_preemptions` times."""
    spec = slice_spec(tpu_type)
    for attempt in range(max_preemptions + 1):
        try:
            return _attempt(fn, tuple(args), spec, reserve_timeout_s, coordinator_port)
        except SlicePreempted as e:
            if attempt == max_preemptions:
                raise SlicePreempted(f"{e}; gave up after {max_preemptions} retries") from e
            logger.warning("%s; retrying (%d of %d) after %.0fs", e, attempt + 1, max_preemptions, retry_wait_s)
            time.sleep(retry_wait_s)
    raise AssertionError("unreachable")
