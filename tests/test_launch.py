"""The slice launcher on a local multi-node Ray cluster with fake TPU hosts: one process per host,
all started and awaited, a host's failure fails the step, a host dying is retried."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import pytest

from steps.training.launch import SliceFailed, distributed_settings_from_env, run_on_slice, slice_spec


@pytest.mark.parametrize("tpu, chips, hosts", [("v5p-16", 8, 2), ("v5p-64", 32, 8), ("v4-8", 4, 1),
                                               ("v6e-8", 8, 1), ("v6e-16", 16, 4), ("v5p-256", 128, 32)])
def test_slice_spec(tpu, chips, hosts):
    spec = slice_spec(tpu)
    assert (spec.chips, spec.hosts) == (chips, hosts)
    assert spec.head_resource == f"TPU-{tpu}-head"


def test_bad_slice_type():
    with pytest.raises(ValueError, match="not like 'v5p-64'"):
        slice_spec("tpu-big")


# ---- functions the fake hosts run (importable by Ray workers as tests.test_launch) -------------

def record_host(out_dir: str, fail_host: int = -1, crash_once_host: int = -1) -> dict:
    import ray

    settings = distributed_settings_from_env()
    pid = settings["process_id"]
    info = {"settings": settings, "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "tpu": ray.get_runtime_context().get_assigned_resources().get("TPU")}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"started-{pid}-{os.getpid()}.json"), "w") as f:
        json.dump(info, f)
    if pid == crash_once_host and not os.path.exists(os.path.join(out_dir, "crashed")):
        open(os.path.join(out_dir, "crashed"), "w").close()
        os._exit(1)  # the worker process dies: like a preempted host
    if pid == fail_host:
        deadline = time.time() + 60  # fail only once every host has started
        while len([n for n in os.listdir(out_dir) if n.startswith("started-")]) < settings["num_processes"]:
            if time.time() > deadline:
                break
            time.sleep(0.1)
        raise RuntimeError(f"host {pid} failed on purpose")
    if fail_host >= 0:
        time.sleep(120)  # the healthy host keeps "training" until it is cancelled
    return info


@dataclass(frozen=True)
class SliceProbeConfig:
    out_dir: str
    fail_host: int = -1


def slice_probe_step(config: SliceProbeConfig) -> None:
    run_on_slice(record_host, (config.out_dir, config.fail_host), "v5p-16", retry_wait_s=0.5)


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


def test_failure_of_one_host_fails_the_call(cluster, tmp_path):
    t0 = time.time()
    with pytest.raises(SliceFailed, match="host 1 .*failed on purpose"):
        run_on_slice(record_host, (str(tmp_path), 1), "v5p-16")
    assert time.time() - t0 < 60  # the healthy host was cancelled, not awaited for 120 s
    assert sorted(s["settings"]["process_id"] for s in _started(tmp_path)) == [0, 1]


def test_host_death_is_retried_as_preemption(cluster, tmp_path):
    results = run_on_slice(record_host, (str(tmp_path), -1, 1), "v5p-16", retry_wait_s=0.5)
    assert [r["settings"]["process_id"] for r in results] == [0, 1]
    assert (tmp_path / "crashed").exists()
    starts = [s["settings"]["process_id"] for s in _started(tmp_path)]
    assert starts.count(1) == 2 and starts.count(0) >= 1  # host 1 ran twice: the slice was retried


def test_tpu_step_through_the_executor(cluster, tmp_path, prefix):
    from pipeline import Executor, ExecutorError, ExecutorStep, ResourceConfig

    ok = ExecutorStep("checkpoints/slice-ok", slice_probe_step, SliceProbeConfig(str(tmp_path / "ok")),
                      resources=ResourceConfig(cpus=0, tpu="v5p-16"))
    Executor(prefix, ray_address=cluster.address).run([ok])
    assert sorted(s["settings"]["process_id"] for s in _started(tmp_path / "ok")) == [0, 1]

    bad = ExecutorStep("checkpoints/slice-bad", slice_probe_step, SliceProbeConfig(str(tmp_path / "bad"), 0),
                       resources=ResourceConfig(cpus=0, tpu="v5p-16"))
    with pytest.raises(ExecutorError, match="slice-bad"):
        Executor(prefix, ray_address=cluster.address).run([bad])
