"""The slice launcher on a local multi-node Ray cluster with fake TPU hosts: one process per host,
all started and awaited, supervised from off the slice. A host's code error fails the call after a
small budget; a host dying, a host's node lost, or survivors reporting a lost JAX peer start the
slice again without counting against that budget."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import pytest

from steps.training.launch import (DIED, ERROR, PEER_LOST, SliceFailed, SlicePreempted, distributed_settings_from_env,
                                   error_kind, run_on_slice, slice_spec)


@pytest.mark.parametrize("tpu, chips, hosts", [("v5p-16", 8, 2), ("v5p-64", 32, 8), ("v4-8", 4, 1),
                                               ("v6e-8", 8, 1), ("v6e-16", 16, 4), ("v5p-256", 128, 32)])
def test_slice_spec(tpu, chips, hosts):
    spec = slice_spec(tpu)
    assert (spec.chips, spec.hosts) == (chips, hosts)
    assert spec.head_resource == f"TPU-{tpu}-head"


def test_bad_slice_type():
    with pytest.raises(ValueError, match="not like 'v5p-64'"):
        slice_spec("tpu-big")


# What JAX raised on a surviving process when its peer was killed with -9 (gloo on CPU, measured here),
# and what XLA's coordination service reports when the leader task is gone.
GLOO_PEER_RESET = ("UNKNOWN: Gloo AllGather failed: [external/gloo/gloo/transport/tcp/pair.cc:538] Read error "
                   "[127.0.0.1]:948: Connection reset by peer")
LEADER_GONE = ("UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task was "
               "preempted/died/restarted unexpectedly or this task is experiencing network issues.")


def test_errors_are_told_apart_by_what_ray_and_jax_report():
    import ray.exceptions as rex

    assert error_kind(rex.WorkerCrashedError()) == DIED
    assert error_kind(rex.NodeDiedError("node gone")) == DIED
    assert error_kind(rex.ActorDiedError()) == DIED
    assert error_kind(rex.TaskUnschedulableError("the node of NodeAffinitySchedulingStrategy does not exist")) == DIED
    assert error_kind(RuntimeError(GLOO_PEER_RESET)) == PEER_LOST
    assert error_kind(RuntimeError(LEADER_GONE)) == PEER_LOST
    wrapped = rex.RayTaskError("train_on_host", "traceback", RuntimeError(GLOO_PEER_RESET))
    assert error_kind(wrapped) == PEER_LOST
    assert error_kind(rex.RayTaskError("f", "tb", ValueError("batch size 7 does not divide 8 devices"))) == ERROR
    assert error_kind(FileNotFoundError("gs://bucket/cache/train/shard_ledger.json")) == ERROR
    assert error_kind(rex.OutOfMemoryError("the OOM killer took the worker")) == ERROR  # the code's doing


# ---- functions the fake hosts run (importable by Ray workers as tests.test_launch) -------------

def _count(out_dir: str, name: str) -> int:
    """How many times `name` happened before (a file per time), and record this one."""
    n = len([f for f in os.listdir(out_dir) if f.startswith(name + "-")])
    open(os.path.join(out_dir, f"{name}-{n}"), "w").close()
    return n


def _wait_for_files(out_dir: str, prefix: str, count: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while len([n for n in os.listdir(out_dir) if n.startswith(prefix)]) < count and time.time() < deadline:
        time.sleep(0.1)


def record_host(out_dir: str, fail_host: int = -1, crash_host: int = -1, crashes: int = 1,
                peer_error_host: int = -1, hold_file: str = "") -> dict:
    """One fake host's run. `crash_host` dies like a preempted host (os._exit) its first `crashes`
    times; `peer_error_host` then raises what JAX raises on a survivor; `fail_host` raises a code
    error once every host has started; `hold_file`: wait until it exists."""
    import ray

    settings = distributed_settings_from_env()
    pid = settings["process_id"]
    info = {"settings": settings, "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "tpu": ray.get_runtime_context().get_assigned_resources().get("TPU")}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"started-{pid}-{os.getpid()}.json"), "w") as f:
        json.dump(info, f)
    if pid == crash_host and _count(out_dir, "crash") < crashes:
        if peer_error_host >= 0:
            crashes_so_far = len([n for n in os.listdir(out_dir) if n.startswith("crash-")])  # this one included
            _wait_for_files(out_dir, f"started-{peer_error_host}-", crashes_so_far)  # the survivor runs this try
        os._exit(1)  # the worker process dies: like a preempted host
    if pid == peer_error_host and len([n for n in os.listdir(out_dir) if n.startswith("crash-")]) <= crashes \
            and not os.path.exists(os.path.join(out_dir, "peer-error-done")):
        _wait_for_files(out_dir, "crash-", 1)
        open(os.path.join(out_dir, "peer-error-done"), "w").close()
        raise RuntimeError(GLOO_PEER_RESET)  # a survivor's collective lost its peer
    if pid == fail_host:  # fail only once every host has started this attempt
        mine = len([n for n in os.listdir(out_dir) if n.startswith(f"started-{pid}-")])
        for other in range(settings["num_processes"]):
            _wait_for_files(out_dir, f"started-{other}-", mine)
        raise RuntimeError(f"host {pid} failed on purpose")
    if fail_host >= 0:
        time.sleep(120)  # the healthy host keeps "training" until it is cancelled
    while hold_file and not os.path.exists(hold_file):
        time.sleep(0.1)
    return info


@dataclass(frozen=True)
class SliceProbeConfig:
    out_dir: str
    fail_host: int = -1


def slice_probe_step(config: SliceProbeConfig) -> None:
    import ray

    os.makedirs(config.out_dir, exist_ok=True)
    with open(os.path.join(config.out_dir, "supervisor.json"), "w") as f:
        json.dump({"node": ray.get_runtime_context().get_node_id()}, f)
    run_on_slice(record_host, (config.out_dir, config.fail_host), "v5p-16", retry_wait_s=0.5, max_failures=0)


def supervise_from_a_slice_host(out_dir: str) -> str:
    try:
        run_on_slice(record_host, (out_dir,), "v5p-16")
    except RuntimeError as e:
        return str(e)
    return "ran"


# ---- the cluster -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from infra.local_cluster import LocalTpuCluster

    c = LocalTpuCluster("v5p-16").start()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.stop()


def _started(out_dir):
    return [json.load(open(os.path.join(out_dir, n))) for n in sorted(os.listdir(out_dir)) if n.startswith("started-")]


def _starts_by_host(out_dir) -> list[int]:
    return sorted(s["settings"]["process_id"] for s in _started(out_dir))


def test_one_process_per_fake_host_all_awaited(cluster, tmp_path):
    results = run_on_slice(record_host, (str(tmp_path),), "v5p-16")
    assert [r["settings"]["process_id"] for r in results] == [0, 1]
    assert all(r["settings"]["num_processes"] == 2 for r in results)
    assert len({r["settings"]["coordinator_address"] for r in results}) == 1
    assert results[0]["settings"]["coordinator_address"].endswith(":8476")
    host_nodes = {n.node_id for n in cluster.host_nodes[cluster.slice_names[0]]}
    assert {r["node"] for r in results} == host_nodes  # one per host, on the slice's hosts
    assert all(r["tpu"] == 4 for r in results)
    assert len(_started(tmp_path)) == 2


def test_a_code_error_is_retried_within_its_budget_then_fails_naming_the_host(cluster, tmp_path):
    events = []
    t0 = time.time()
    with pytest.raises(SliceFailed, match=r"host 1 .*failed: RuntimeError: host 1 failed on purpose.*failure 2; "
                                          r"1 retry allowed"):
        run_on_slice(record_host, (str(tmp_path), 1), "v5p-16", max_failures=1, retry_wait_s=0.5,
                     on_event=events.append)
    assert time.time() - t0 < 100  # the healthy host was killed each time, not awaited for 120 s
    assert _starts_by_host(tmp_path) == [0, 0, 1, 1]  # the whole slice ran twice: the first try and one retry
    assert [(e.kind, e.attempt) for e in events] == [("failed", 1)]


def test_no_retry_with_a_zero_failure_budget(cluster, tmp_path):
    with pytest.raises(SliceFailed, match="failed on purpose"):
        run_on_slice(record_host, (str(tmp_path), 0), "v5p-16", max_failures=0)
    assert _starts_by_host(tmp_path) == [0, 1]


def test_host_deaths_are_preemptions_and_never_spend_the_failure_budget(cluster, tmp_path):
    events = []
    results = run_on_slice(record_host, (str(tmp_path), -1, 1, 3), "v5p-16", max_failures=0, retry_wait_s=0.5,
                           on_event=events.append)
    assert [r["settings"]["process_id"] for r in results] == [0, 1]
    assert [e.kind for e in events] == ["preempted"] * 3 and all("host 1" in e.message and "died" in e.message
                                                                  for e in events)
    assert _starts_by_host(tmp_path).count(1) == 4  # host 1 ran 3 times and died, then finished


def test_a_survivors_lost_peer_error_is_a_preemption_not_its_own_failure(cluster, tmp_path):
    """Host 0 raises JAX's gloo error (possibly before Ray reports host 1 dead): still a preemption."""
    events = []
    results = run_on_slice(record_host, (str(tmp_path), -1, 1, 1, 0), "v5p-16", max_failures=0, retry_wait_s=0.5,
                           on_event=events.append)
    assert [r["settings"]["process_id"] for r in results] == [0, 1]
    assert [e.kind for e in events] == ["preempted"]
    assert "host 0" in events[0].message and "lost a peer" in events[0].message and "host 1" in events[0].message


def test_a_preemption_limit_when_one_is_set(cluster, tmp_path):
    with pytest.raises(SlicePreempted, match="gave up after 1 preemptions"):
        run_on_slice(record_host, (str(tmp_path), -1, 1, 5), "v5p-16", max_preemptions=1, retry_wait_s=0.5)


def test_the_supervisor_refuses_to_run_on_a_host_of_its_slice(cluster, tmp_path):
    import ray

    name = cluster.slice_names[0]
    said = ray.get(ray.remote(supervise_from_a_slice_host).options(num_cpus=0, resources={name: 0.01})
                   .remote(str(tmp_path)))
    assert "it would die with it" in said
    assert not os.path.exists(tmp_path) or not _started(tmp_path)  # nothing was launched


def test_tpu_step_through_the_executor_supervises_from_the_head_node(cluster, tmp_path, prefix):
    from pipeline import Executor, ExecutorError, ExecutorStep, ResourceConfig

    ok = ExecutorStep("checkpoints/slice-ok", slice_probe_step, SliceProbeConfig(str(tmp_path / "ok")),
                      resources=ResourceConfig(tpu="v5p-16"))
    Executor(prefix, ray_address=cluster.address).run([ok])
    assert _starts_by_host(tmp_path / "ok") == [0, 1]
    supervisor = json.load(open(tmp_path / "ok" / "supervisor.json"))["node"]
    slice_nodes = {n.node_id for nodes in cluster.host_nodes.values() for n in nodes}
    assert supervisor not in slice_nodes  # on the head node, which no slice includes

    bad = ExecutorStep("checkpoints/slice-bad", slice_probe_step, SliceProbeConfig(str(tmp_path / "bad"), 0),
                       resources=ResourceConfig(tpu="v5p-16"))
    with pytest.raises(ExecutorError, match="slice-bad"):
        Executor(prefix, ray_address=cluster.address).run([bad])
