"""Faults with real processes: kill -9 of the executor and of a Ray worker, failures half-way through a
step, two executors at once, a multi-node Ray cluster, read-only and full prefixes. After each fault a
rerun must complete with outputs byte-identical to an uninterrupted run, and no partial output may
ever be marked SUCCESS.

Most executors here connect to one module-wide `ray start` cluster on 127.0.0.1 (a head node with
{"head": 1} and a worker node with {"big": 1}), which saves a Ray start per executor; the slow
variants repeat the kills with each executor's own embedded Ray.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import pytest

from pipeline import Executor, ExecutorError
from pipeline import storage
from tests import fault_dag
from tests.fault_harness import (SCRIPT, STEPS, env_for, finish, kill_group, launch, ledger, outputs, pid_alive,
                                 probes, run, status_of, step_dir, step_outputs, wait_for)
from tests.ray_cluster import RayStartCluster


@pytest.fixture(scope="module")
def cluster():
    with RayStartCluster(nodes=[{"head": 1}, {"big": 1}], cpus_per_node=1) as c:
        yield c
    assert c.leftover_pids() == []  # nothing of this cluster outlives the module


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cluster):
    """The outputs of one uninterrupted run."""
    root = tmp_path_factory.mktemp("reference")
    code, out = run(str(root / "prefix"), str(root / "probe"), address=cluster.address)
    assert code == 0, out
    found = outputs(str(root / "prefix"))
    assert len(found) == 10  # 4 + 4 parts, merged.bin, summary.json
    return found


def parts_written(probe: str, step: str) -> list[str]:
    return [line for line in ledger(probe) if line.startswith(f"part {step.split('/')[1]}-")]


def assert_no_partial_success(prefix: str, reference: dict[str, bytes]) -> None:
    """Every step marked SUCCESS holds exactly its complete reference output."""
    for name in STEPS:
        if status_of(prefix, name) == storage.SUCCESS:
            mine = step_outputs(prefix, name)
            assert mine and all(reference.get(k) == v for k, v in mine.items()), name
            assert len(mine) == len({k for k in reference if k.startswith(os.path.dirname(next(iter(mine))))})


@pytest.mark.parametrize("ray", ["cluster", pytest.param("embedded", marks=pytest.mark.slow)])
def test_kill9_of_executor_mid_step_then_rerun_gives_identical_outputs(tmp_path, reference, cluster, ray):
    prefix, probe = str(tmp_path / "prefix"), str(tmp_path / "probe")
    address = cluster.address if ray == "cluster" else None
    proc = launch(prefix, probe, sleep=1.0, address=address)
    try:
        wait_for(lambda: len(parts_written(probe, "gen/a")) >= 1, 120, "gen/a to write a part")
        workers = [r["pid"] for r in probes(probe, "a") + probes(probe, "b")]
        os.kill(proc.pid, signal.SIGKILL)  # the executor only: its Ray and workers are left to fend for themselves
        proc.wait(timeout=10)
        # With the driver gone, Ray kills its workers: no orphan keeps writing into the output.
        wait_for(lambda: not any(pid_alive(pid) for pid in workers), 30, "the dead executor's workers to exit")
    finally:
        finish(proc, timeout=10)
    assert status_of(prefix, "gen/a") == storage.RUNNING  # unfinished, and never SUCCESS
    assert status_of(prefix, "merge/ab") is None
    assert len(parts_written(probe, "gen/a")) >= 1  # a partial output exists, and is not marked done
    assert_no_partial_success(prefix, reference)

    code, out = run(prefix, probe, address=address)
    assert code == 0, out
    assert outputs(prefix) == reference
    assert len(parts_written(probe, "gen/a")) == 4  # the rerun resumed: finished parts were not redone
    assert all(status_of(prefix, n) == storage.SUCCESS for n in STEPS)


@pytest.mark.parametrize("ray", ["cluster", pytest.param("embedded", marks=pytest.mark.slow)])
def test_kill9_of_ray_worker_fails_the_step_clearly_then_rerun_completes(tmp_path, reference, cluster, ray):
    prefix, probe = str(tmp_path / "prefix"), str(tmp_path / "probe")
    address = cluster.address if ray == "cluster" else None
    proc = launch(prefix, probe, sleep=1.0, address=address)
    try:
        wait_for(lambda: len(parts_written(probe, "gen/a")) >= 1, 120, "gen/a to write a part")
        worker = probes(probe, "a")[0]["pid"]
        os.kill(worker, signal.SIGKILL)
        out = finish(proc, timeout=120)
    finally:
        kill_group(proc)
    assert proc.returncode == 1, out
    assert "gen/a" in out and "died before the step returned" in out, out
    assert "merge/ab" in out and "did not run because a dependency failed" in out
    a = storage.read_status(step_dir(prefix, "gen/a"))
    assert a.status == storage.FAILED
    assert "WorkerCrashedError" in a.traceback and "kill -9" in a.traceback and "rerun to resume" in a.traceback
    assert status_of(prefix, "gen/b") == storage.SUCCESS  # the other branch finished and is kept
    assert_no_partial_success(prefix, reference)

    code, out = run(prefix, probe, address=address)
    assert code == 0, out
    assert outputs(prefix) == reference
    assert len(parts_written(probe, "gen/b")) == 4  # cached: not run again


@pytest.mark.slow
def test_killed_worker_is_retried_by_ray_when_the_step_allows_it(tmp_path, reference, cluster):
    prefix, probe = str(tmp_path / "prefix"), str(tmp_path / "probe")
    proc = launch(prefix, probe, sleep=1.0, retries=1, address=cluster.address)
    try:
        wait_for(lambda: len(parts_written(probe, "gen/a")) >= 1, 120, "gen/a to write a part")
        os.kill(probes(probe, "a")[0]["pid"], signal.SIGKILL)
        out = finish(proc, timeout=180)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, out
    assert len(probes(probe, "a")) == 2  # a second worker ran the step
    assert outputs(prefix) == reference
    assert len(parts_written(probe, "gen/a")) == 4  # the retry resumed after the finished parts


def test_step_raising_after_half_its_files_is_failed_and_redone_on_rerun(tmp_path, reference, cluster):
    prefix, probe = str(tmp_path / "prefix"), str(tmp_path / "probe")
    marker = tmp_path / "broken"
    marker.write_text("")
    code, out = run(prefix, probe, fail_marker=str(marker), address=cluster.address)
    assert code == 1, out
    b = storage.read_status(step_dir(prefix, "gen/b"))
    assert b.status == storage.FAILED and "deliberate failure of b-" in b.error
    assert sorted(os.listdir(step_dir(prefix, "gen/b"))) == [
        ".executor_info", ".executor_lease", ".executor_log", ".executor_progress", ".executor_status", "part-000.txt",
        "part-001.txt"]
    assert status_of(prefix, "merge/ab") is None  # never started on half an input
    assert_no_partial_success(prefix, reference)

    dry = subprocess.run([sys.executable, SCRIPT, "--prefix", prefix, "--dry-run"], env=env_for(probe),
                         capture_output=True, text=True, timeout=60)
    assert "failed before: RuntimeError: deliberate failure" in dry.stdout, dry.stdout
    marker.unlink()
    stale = os.path.join(step_dir(prefix, "gen/b"), ".tmp-k1ll3d.executor_status")  # a status write cut short
    with open(stale, "w") as f:
        f.write('{"status": "SUCC')
    code, out = run(prefix, probe, fail_marker=str(marker), address=cluster.address)
    assert not os.path.exists(stale)  # the rerun removed it under the step's lease
    assert code == 0, out
    assert outputs(prefix) == reference
    assert len(parts_written(probe, "gen/b")) == 4  # parts 0-1 kept, 2-3 written by the rerun


@pytest.mark.slow  # tests/test_executor_processes.py checks exactly-once in the default suite
def test_two_executors_at_once_run_each_step_once_with_identical_outputs(tmp_path, reference, cluster):
    prefix, probe = str(tmp_path / "prefix"), str(tmp_path / "probe")
    first = launch(prefix, probe, sleep=0.5, address=cluster.address)
    second = launch(prefix, probe, sleep=0.5, address=cluster.address)
    outs = [finish(first), finish(second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    starts = sorted(line.split()[1].split("-")[0] for line in ledger(probe) if line.startswith("start"))
    assert starts == ["a", "ab", "b"]
    assert outputs(prefix) == reference


def test_status_write_failing_mid_run_fails_the_step_and_loses_nothing(tmp_path, reference, cluster, monkeypatch):
    """ENOSPC when the executor commits a step: the step is FAILED (not SUCCESS), others are kept."""
    import ray

    prefix, probe = str(tmp_path / "prefix"), str(tmp_path / "probe")
    real = storage.write_status

    def full_disk(output_path, status, *args, **kwargs):
        if status == storage.SUCCESS and "/gen/b-" in output_path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(output_path, status, *args, **kwargs)

    monkeypatch.setattr(storage, "write_status", full_disk)
    ray.init(address=cluster.address, configure_logging=False)
    try:
        with pytest.raises(ExecutorError) as info:
            Executor(prefix, experiment_name="fault_dag").run(fault_dag.build(probe))
        assert "SUCCESS status could not be written" in str(info.value.failed)
        assert "No space left on device" in str(info.value.failed)
        assert [b.split("-")[0] for b in info.value.blocked] == ["merge/ab"]
        assert status_of(prefix, "gen/b") == storage.FAILED  # the FAILED status still fitted
        assert status_of(prefix, "gen/a") == storage.SUCCESS
        monkeypatch.setattr(storage, "write_status", real)
        result = Executor(prefix, experiment_name="fault_dag").run(fault_dag.build(probe))
    finally:
        ray.shutdown()
    assert [n.split("-")[0] for n in result.names("cached")] == ["gen/a"]
    assert outputs(prefix) == reference


def test_prefix_on_a_filesystem_raising_erofs_or_enospc_is_a_clear_error(tmp_path, monkeypatch):
    """Without mounts: every write under the prefix fails as a read-only or full disk would."""
    prefix = str(tmp_path / "prefix")
    os.makedirs(prefix)
    for code, words in ((errno.EROFS, "Read-only file system"), (errno.ENOSPC, "No space left on device")):
        def refuse(src, dst, code=code):
            raise OSError(code, os.strerror(code), dst)

        with monkeypatch.context() as m:
            m.setattr(storage.os, "replace", refuse)
            with pytest.raises(storage.PrefixNotWritable) as info:
                Executor(prefix, experiment_name="t").run(fault_dag.build(str(tmp_path / "probe")))
        assert info.value.errno == code
        assert repr(prefix) in str(info.value) and words in str(info.value)
        assert os.listdir(prefix) == []  # the probe file was cleaned up; nothing else was written


def test_object_store_prefix_that_refuses_writes_is_a_clear_error(tmp_path):
    """The same through fsspec (the gs:// code path): a store whose writes fail with EROFS."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    class ReadOnlyStore(MemoryFileSystem):
        protocol = "rostore"

        def pipe_file(self, path, value, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system", path)

        def _open(self, path, mode="rb", **kwargs):
            if "r" not in mode:
                raise OSError(errno.EROFS, "Read-only file system", path)
            return super()._open(path, mode, **kwargs)

    fsspec.register_implementation("rostore", ReadOnlyStore, clobber=True)
    with pytest.raises(storage.PrefixNotWritable, match=r"cannot write to the executor prefix 'rostore://bucket/"
                                                         r"soda': Read-only file system \(the filesystem is mounted"):
        Executor("rostore://bucket/soda", experiment_name="t").run(fault_dag.build(str(tmp_path / "probe")))


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount is not permitted here ({done.stderr.strip() or done.returncode}); the monkeypatched "
                    "tests cover the same code paths")


def _umount(path: str) -> None:
    if subprocess.run(["umount", path], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", path], capture_output=True)


def test_read_only_mounted_prefix_is_a_clear_error(tmp_path):
    source, target = tmp_path / "source", tmp_path / "ro"
    source.mkdir()
    target.mkdir()
    _mount("--bind", str(source), str(target))
    try:
        _mount("-o", "remount,ro,bind", str(target))
        with pytest.raises(storage.PrefixNotWritable) as info:
            Executor(str(target), experiment_name="t").run(fault_dag.build(str(tmp_path / "probe")))
        assert info.value.errno == errno.EROFS
        assert repr(str(target)) in str(info.value) and "mounted read-only" in str(info.value)
    finally:
        _umount(str(target))
    assert os.listdir(source) == []


def _fill(directory: str) -> str:
    """Fill the filesystem holding `directory`; returns the filler file."""
    filler = os.path.join(directory, "filler")
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


def test_full_mounted_prefix_is_a_clear_error(tmp_path):
    target = tmp_path / "tiny"
    target.mkdir()
    _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target))
    try:
        prefix = target / "prefix"
        prefix.mkdir()
        _fill(str(target))
        with pytest.raises(storage.PrefixNotWritable) as info:
            Executor(str(prefix), experiment_name="t").run(fault_dag.build(str(tmp_path / "probe")))
        assert info.value.errno == errno.ENOSPC
        assert repr(str(prefix)) in str(info.value) and "free space there" in str(info.value)
        assert os.listdir(prefix) == []
    finally:
        _umount(str(target))


@pytest.mark.slow
def test_disk_full_during_a_step_fails_it_keeps_finished_steps_and_reruns_cleanly(tmp_path, reference, cluster):
    target = tmp_path / "disk"
    target.mkdir()
    _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(target))
    try:
        prefix, probe = str(target / "prefix"), str(tmp_path / "probe")
        filler = os.path.join(str(target), "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * 1664 * 1024)  # leaves ~380 KiB: enough for the small steps and the records
        big = 512 * 1024
        # One step at a time, so the small steps finish before the big one fills the disk.
        code, out = run(prefix, probe, "--max-concurrent", "1", big=big, address=cluster.address)
        assert code == 1, out
        assert "gen/big" in out and "No space left on device" in out and "is full: free space" in out, out
        status = storage.read_status(step_dir(prefix, "gen/big"))
        assert status.status == storage.FAILED and "No space left on device" in status.error
        assert status_of(prefix, "gen/a") == status_of(prefix, "gen/b") == storage.SUCCESS
        assert status_of(prefix, "merge/ab") is None
        kept = {k: v for k, v in outputs(prefix).items() if "/big-" not in k}
        assert kept == {k: v for k, v in reference.items() if k.startswith("gen")}  # nothing finished was lost
        left = [n for n in os.listdir(step_dir(prefix, "gen/big")) if not n.startswith(".executor_")]
        assert not [n for n in left if n.startswith("payload.bin")], left  # no payload, no half-written temp

        os.unlink(filler)
        code, out = run(prefix, probe, big=big, address=cluster.address)
        assert code == 0, out
        final = outputs(prefix)
        assert {k: v for k, v in final.items() if k.startswith("gen/") and "/big-" not in k} == kept
        payload = next(v for k, v in final.items() if k.endswith("payload.bin"))
        assert payload == bytes(range(256)) * (big // 256)
        assert len(parts_written(probe, "gen/a")) == 4  # cached, not redone
    finally:
        _umount(str(target))


def test_steps_land_on_the_nodes_that_have_their_resources(tmp_path, reference, cluster):
    prefix, probe = str(tmp_path / "prefix"), str(tmp_path / "probe")
    resources = {"gen/a": {"custom": {"big": 1}}, "gen/b": {"custom": {"head": 1}}, "merge/ab": {"cpus": 1}}
    code, out = run(prefix, probe, resources=resources, address=cluster.address)
    assert code == 0, out
    nodes = cluster.node_resources()
    assert "big" in nodes[probes(probe, "a")[0]["node_id"]]
    assert "head" in nodes[probes(probe, "b")[0]["node_id"]]
    assert probes(probe, "ab")[0]["node_id"] in nodes
    assert outputs(prefix) == reference  # where a step runs never changes what it writes


@pytest.mark.parametrize("resources, lacking", [
    ({"gen/b": {"custom": {"gpu-a100": 1}}}, "gpu-a100: 1"),
    ({"gen/a": {"cpus": 2}}, "CPU: 2"),  # 2 CPUs in all, but no node has 2
    ({"gen/a": {"custom": {"big": 1, "head": 1}}}, "big: 1, head: 1"),  # each exists, never on one node
    ({"merge/ab": {"tpu": "v5p-64"}}, "TPU-v5p-64-head: 1"),
])
def test_steps_needing_what_no_node_has_fail_before_anything_runs(tmp_path, cluster, resources, lacking):
    prefix, probe = str(tmp_path / "prefix"), str(tmp_path / "probe")
    os.makedirs(prefix)
    code, out = run(prefix, probe, resources=resources, address=cluster.address)
    assert code == 1, out
    assert "cannot run, so nothing was started" in out and lacking in out and "no node of the Ray cluster" in out
    assert "--ray-address" in out and "lower the step's ResourceConfig" in out
    assert ledger(probe) == []  # no step started
    assert os.listdir(prefix) == []  # and nothing was written under the prefix
