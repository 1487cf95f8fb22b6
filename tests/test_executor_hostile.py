"""Careless and hostile command lines: relative prefixes on a cluster, empty selections, bad numbers, Ctrl-C."""

import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline import ExecutorStep, storage, this_output_path
from pipeline.executor import Executor, RelativePrefixError
from pipeline.lease import lease_for
from pipeline.main import ExecutorMainConfig, executor_main
from pipeline.plan import PlanError
from tests import fault_harness as harness
from tests.fault_dag import PartsConfig, write_parts
from tests.ray_cluster import RayStartCluster

REPO = harness.REPO


def _one_step(probe: str) -> ExecutorStep:
    return ExecutorStep(name="gen/a", fn=write_parts,
                        config=PartsConfig(out=this_output_path(), seed=1, parts=1, probe=probe))


def test_a_relative_prefix_is_made_absolute_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    executor = Executor("out", experiment_name="x")
    assert executor.prefix == str(tmp_path / "out")
    plan = executor.compute_versions([_one_step(str(tmp_path / "probe"))])
    assert all(os.path.isabs(p.output_path) for p in plan.steps)
    assert Executor("file://out").prefix == f"file://{tmp_path}/out"
    assert Executor("gs://bucket/soda").prefix == "gs://bucket/soda"


def test_a_relative_override_path_lands_under_the_prefix_not_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    step = _one_step(str(tmp_path / "probe")).with_output_path("fixed/a")
    plan = Executor("gs://bucket/soda").compute_versions([step])
    assert plan.steps[0].output_path == "gs://bucket/soda/fixed/a"


@pytest.mark.parametrize("address", ["10.255.255.1:6379", "ray://head.example.invalid:10001"])
def test_a_relative_prefix_for_a_remote_cluster_is_refused_saying_how_to_share_one(tmp_path, monkeypatch, address):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RelativePrefixError, match="gs://BUCKET/PATH"):
        Executor("soda-out", ray_address=address)
    Executor(str(tmp_path / "shared"), ray_address=address)  # absolute: may be a shared mount
    Executor("gs://bucket/soda", ray_address=address)
    with pytest.raises(SystemExit) as e:  # the command line: one line, exit 1, nothing written
        executor_main([_one_step(str(tmp_path / "probe"))], config=ExecutorMainConfig(prefix="soda-out",
                                                                                      ray_address=address))
    assert e.value.code == 1 and not (tmp_path / "soda-out").exists()


@pytest.mark.slow
def test_a_relative_prefix_with_a_cluster_writes_where_the_driver_records_success(tmp_path):
    """The Ray head runs in the repository; the driver in tmp_path. Outputs must land under tmp_path."""
    probe = str(tmp_path / "probe")
    with RayStartCluster(nodes=[{"head": 1}]) as cluster:
        proc = subprocess.Popen([sys.executable, harness.SCRIPT, "--prefix", "rel-out", "--ray-address",
                                 cluster.address], env=harness.env_for(probe), cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        out = harness.finish(proc)
    assert proc.returncode == 0, out
    prefix = str(tmp_path / "rel-out")
    assert harness.status_of(prefix, "merge/ab") == storage.SUCCESS
    assert harness.step_outputs(prefix, "gen/a") and harness.step_outputs(prefix, "merge/ab")
    assert not os.path.exists(os.path.join(REPO, "rel-out")), "a step wrote under the Ray head's directory"


@pytest.mark.parametrize("argv", [["--run-only"], ["--run-only", ""], ["--run-only", " "], ["--run-only=[]"]])
def test_an_empty_run_only_is_refused_not_read_as_everything(tmp_path, argv):
    out = subprocess.run([sys.executable, harness.SCRIPT, "--prefix", str(tmp_path / "p"), "--dry-run", *argv],
                         env=harness.env_for(str(tmp_path / "probe")), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "--run-only was given no pattern" in out.stderr and "Traceback" not in out.stderr
    assert "gen/a" not in out.stdout  # no plan was printed


@pytest.mark.parametrize("run_only", [[], [""], "  "])
def test_executor_refuses_an_empty_selection(tmp_path, run_only):
    with pytest.raises(PlanError, match="would select every step"):
        Executor(str(tmp_path)).run([_one_step(str(tmp_path / "probe"))], run_only=run_only)
    assert not (tmp_path / "gen").exists()


@pytest.mark.parametrize("argv, message", [
    (["--max-concurrent", "0"], "--max-concurrent must be at least 1, got 0"),
    (["--max-concurrent", "-3"], "--max-concurrent must be at least 1, got -3"),
    (["--max-concurrent", "abc"], "--max-concurrent: "),
    (["--force-run-failed", "maybe"], "--force-run-failed: "),
    (["--prefix", ""], "--prefix was given an empty value"),
])
def test_bad_numbers_and_values_are_one_line(tmp_path, argv, message):
    out = subprocess.run([sys.executable, harness.SCRIPT, "--dry-run", *argv],
                         env=harness.env_for(str(tmp_path / "probe")), capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_ctrl_c_marks_running_steps_interrupted_frees_their_leases_and_exits_130(tmp_path):
    prefix, probe = str(tmp_path / "prefix"), str(tmp_path / "probe")
    proc = harness.launch(prefix, probe, sleep="5")
    try:  # gen/a and gen/b sleep 5 s before each of their parts; interrupt while they run
        harness.wait_for(lambda: harness.probes(probe, "a") and harness.probes(probe, "b"), 120, "both steps started")
        proc.send_signal(signal.SIGINT)
        out = harness.finish(proc, timeout=120)
    finally:
        harness.kill_group(proc)
    assert proc.returncode == 130, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("interrupted: 2 running step(s) marked interrupted (gen/a-"), out
    assert "rerun the same command" in last and "Traceback" not in out and "KeyboardInterrupt" not in out
    for name in ("gen/a", "gen/b"):
        path = harness.step_dir(prefix, name)
        assert storage.read_status(path).status == storage.INTERRUPTED
        assert lease_for(path, owner="probe").probe() is None  # released, not left to go stale
    assert harness.step_dir(prefix, "merge/ab") == ""  # never started
    started = len(harness.ledger(probe))
    time.sleep(6)  # the steps' Ray workers are gone: nothing more is written after the exit
    assert len(harness.ledger(probe)) == started

    plan = subprocess.run([sys.executable, harness.SCRIPT, "--prefix", prefix, "--dry-run"],
                          env=harness.env_for(probe), capture_output=True, text=True, timeout=60, cwd=REPO)
    assert plan.stdout.count("interrupted (Ctrl-C) in an earlier run") == 2, plan.stdout
    code, out = harness.run(prefix, probe)
    assert code == 0, out
    assert harness.status_of(prefix, "merge/ab") == storage.SUCCESS
