"""`soda status` reads where a running experiment stands from its files alone (no Ray): counts per step
kind, the running step with its lease holder, a failure with its error, and a running step whose
executor was killed.

The same file is the executor's script: `python -m tests.test_soda_status PREFIX GATE`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import ExecutorStep, ResourceConfig, output_path_of, this_output_path, versioned
from pipeline.status_view import cli_main, experiment_status, render

REPO = Path(__file__).resolve().parent.parent
BUCKET = "soda-status"


@dataclass(frozen=True)
class GateConfig:
    out: str
    gate: str
    after: str = ""
    fail: bool = False


def gated(config: GateConfig) -> None:
    """Waits until the gate file exists (a step that is still running), or fails at once."""
    if config.fail:
        raise RuntimeError("gen/broken failed on purpose")
    while not os.path.exists(config.gate):
        time.sleep(0.2)
    os.makedirs(config.out, exist_ok=True)


def steps(gate: str):
    quick = [ExecutorStep(f"gen/quick-{i}", gated, GateConfig(this_output_path(), "/", versioned(str(i))),
                          resources=ResourceConfig(cpus=0.1)) for i in range(2)]
    broken = ExecutorStep("gen/broken", gated, GateConfig(this_output_path(), "/", fail=versioned(True)),
                          resources=ResourceConfig(cpus=0.1))
    slow = ExecutorStep("train/slow", gated, GateConfig(this_output_path(), gate, output_path_of(quick[0])),
                        resources=ResourceConfig(cpus=0.1))
    after = ExecutorStep("eval/after", gated, GateConfig(this_output_path(), "/", output_path_of(slow)),
                         resources=ResourceConfig(cpus=0.1))
    return [*quick, broken, slow, after]


def _wait(predicate, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
        except LookupError:
            value = None
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the executor exited ({proc.returncode}):\n{proc.stdout.read()[-4000:]}")
        time.sleep(0.3)
    raise AssertionError("timed out")


def _start(prefix: str, gate: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.test_soda_status", prefix, gate], cwd=str(REPO),
                            env={**os.environ, "PYTHONPATH": str(REPO), **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _running(prefix):
    def check():
        status = experiment_status(prefix)
        states = sorted((s.name.split("-")[0], s.state) for s in status.steps)
        settled = [("eval/after", "waiting"), ("gen/broken", "failed"), ("gen/quick", "done"), ("gen/quick", "done"),
                   ("train/slow", "running")]
        return status if states == settled else None  # the quick steps done, the broken one failed
    return check


@pytest.mark.timeout(300)
def test_status_on_gs_shows_the_holder_and_its_heartbeat(gcs, tmp_path):
    """On an object store the lease is a conditional-write heartbeat: status reads holder and beat."""
    prefix, gate = f"gs://{BUCKET}/run", str(tmp_path / "gate")
    proc = _start(prefix, gate, gcs.environment())
    try:
        status = _wait(_running(prefix), proc)
        (slow,) = [s for s in status.steps if s.state == "running"]
        assert slow.holder is not None and time.time() - slow.holder.heartbeat < 60
        assert "heartbeat" in render(status) and status.record_url.startswith(f"gs://{BUCKET}/run/experiments/")
        open(gate, "w").close()  # let it finish: every step is then done but the failed one
        assert proc.wait(timeout=120) == 1
        counts = experiment_status(prefix).counts()
        assert counts["train"]["done"] == 1 and counts["eval"]["done"] == 1 and counts["gen"]["failed"] == 1
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.timeout(300)
def test_status_of_a_running_experiment_from_its_files(tmp_path, capsys):
    prefix, gate = str(tmp_path / "prefix"), str(tmp_path / "gate")
    proc = _start(prefix, gate, {})
    try:
        status = _wait(_running(prefix), proc)
        counts = status.counts()
        assert counts["gen"] == {"done": 2, "running": 0, "failed": 1, "interrupted": 0, "waiting": 0}
        assert counts["train"]["running"] == 1 and counts["eval"]["waiting"] == 1
        (slow,) = [s for s in status.steps if s.state == "running"]
        assert slow.holder is not None and slow.holder.pid > 0  # the executor's flock on the step's lease
        text = render(status)
        assert "held by" in text and f"pid {slow.holder.pid}" in text
        assert "gen/broken" in text and "failed on purpose" in text
        assert cli_main([prefix]) == 0 and "kind" in capsys.readouterr().out

        os.killpg(proc.pid, signal.SIGKILL)  # the executor dies with the step running
        proc.wait(timeout=30)
        status = experiment_status(prefix)
        (slow,) = [s for s in status.steps if s.state == "running"]
        assert slow.holder is None and status.run["status"] == "died"
        assert "its executor died; rerun the same command" in render(status)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_no_record_is_one_line_and_exit_1(tmp_path, capsys):
    assert cli_main([str(tmp_path)]) == 1
    assert "no readable experiment record" in capsys.readouterr().err


if __name__ == "__main__":
    from pipeline import Executor

    Executor(sys.argv[1], experiment_name="status-probe").run(steps(sys.argv[2]))
