"""Executors as real processes: two at once on one DAG, and kill -9 then rerun."""

import os
import signal
import subprocess
import sys
import time

from pipeline import storage
from tests.executor_dag import GOLDEN_NAMES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tests", "executor_dag.py")


def launch(prefix, ledger, **env):
    full_env = dict(os.environ, SODA_TEST_LEDGER=ledger, PYTHONPATH=REPO,
                    **{f"SODA_TEST_{k.upper()}": str(v) for k, v in env.items()})
    return subprocess.Popen([sys.executable, SCRIPT, "--prefix", prefix], env=full_env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc, timeout=180):
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        try:  # the process group: whatever Ray left behind
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return out


def ledger_lines(ledger):
    return open(ledger).read().splitlines()


def test_two_executors_at_once_run_each_step_exactly_once(prefix, ledger):
    first = launch(prefix, ledger, sleep=3)
    second = launch(prefix, ledger, sleep=3)
    outputs = [finish(first), finish(second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    started = sorted(line.split()[1] for line in ledger_lines(ledger) if line.startswith("start"))
    assert started == sorted(name.split("/")[1] for name in GOLDEN_NAMES.values())
    for name in GOLDEN_NAMES.values():
        assert storage.read_status(os.path.join(prefix, name)).status == "SUCCESS"


def test_kill9_of_executor_then_rerun_completes_promptly(prefix, ledger):
    proc = launch(prefix, ledger, sleep=60)
    deadline = time.time() + 120
    while time.time() < deadline and not any(line.startswith("start") for line in ledger_lines(ledger)):
        time.sleep(0.2)
    assert any(line.startswith("start") for line in ledger_lines(ledger)), "no step started"
    os.kill(proc.pid, signal.SIGKILL)
    finish(proc, timeout=30)
    running = [n for n in GOLDEN_NAMES.values()
               if (s := storage.read_status(os.path.join(prefix, n))) is not None and s.status == "RUNNING"]
    assert running, "the killed run left no step RUNNING"

    dry = subprocess.run([sys.executable, SCRIPT, "--prefix", prefix, "--dry-run"], cwd=REPO, capture_output=True,
                         text=True, env=dict(os.environ, SODA_TEST_LEDGER=ledger, PYTHONPATH=REPO), timeout=60)
    assert "take over" in dry.stdout, dry.stdout + dry.stderr

    started = time.time()
    rerun = launch(prefix, ledger, sleep=0)
    out = finish(rerun)
    assert rerun.returncode == 0, out
    assert time.time() - started < 90  # no waiting for a lease to go stale
    for name in GOLDEN_NAMES.values():
        assert storage.read_status(os.path.join(prefix, name)).status == "SUCCESS"
    with open(os.path.join(prefix, GOLDEN_NAMES["analysis/total"], "value.json")) as f:
        assert '"value": 3' in f.read()
