"""Helpers for the fault tests: run tests/fault_dag.py as real processes, read what they left.

Every executor runs in its own session (process group), so `finish` can kill whatever Ray left
behind with one killpg of a group this test started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Optional

from pipeline import storage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tests", "fault_dag.py")
STEPS = ("gen/a", "gen/b", "merge/ab")


def env_for(probe: str, **settings) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=REPO, SODA_TEST_PROBE=probe, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    for key, value in settings.items():
        env[f"SODA_TEST_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def launch(prefix: str, probe: str, *args: str, address: Optional[str] = None, env: Optional[dict] = None,
           **settings) -> subprocess.Popen:
    """Start the fault DAG's executor (on the Ray cluster at `address`, else on an embedded Ray)."""
    full_env = env_for(probe, **settings)
    full_env.update(env or {})
    args = (*args, "--ray-address", address) if address else args
    return subprocess.Popen([sys.executable, SCRIPT, "--prefix", prefix, *args], env=full_env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc)  # whatever the embedded Ray left behind
    return out or ""


def run(prefix: str, probe: str, *args: str, address: Optional[str] = None, timeout: float = 240,
        **settings) -> tuple[int, str]:
    proc = launch(prefix, probe, *args, address=address, **settings)
    out = finish(proc, timeout)
    return proc.returncode, out


def ledger(probe: str) -> list[str]:
    path = os.path.join(probe, "ledger.txt")
    return open(path).read().splitlines() if os.path.exists(path) else []


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def probes(probe: str, step_basename_prefix: str) -> list[dict]:
    """The start records (pid, node id) of a step, in start order."""
    found = []
    for name in os.listdir(probe) if os.path.isdir(probe) else []:
        if name.startswith(step_basename_prefix + "-") and name.endswith(".json"):
            with open(os.path.join(probe, name)) as f:
                found.append(json.load(f))
    return sorted(found, key=lambda r: r["time"])


def step_dir(prefix: str, name: str) -> str:
    parent = os.path.join(prefix, os.path.dirname(name))
    matches = [d for d in os.listdir(parent) if d.rsplit("-", 1)[0] == os.path.basename(name)] \
        if os.path.isdir(parent) else []
    assert len(matches) <= 1, matches
    return os.path.join(parent, matches[0]) if matches else ""


def status_of(prefix: str, name: str) -> Optional[str]:
    path = step_dir(prefix, name)
    record = storage.read_status(path) if path else None
    return record.status if record else None


def outputs(prefix: str) -> dict[str, bytes]:
    """Every file the steps wrote (relative path -> bytes), without the executor's own files."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(prefix):
        rel_dir = os.path.relpath(dirpath, prefix)
        if rel_dir.split(os.sep)[0] == "experiments":
            continue
        for name in filenames:
            if not name.startswith(".executor_"):
                with open(os.path.join(dirpath, name), "rb") as f:
                    found[os.path.normpath(os.path.join(rel_dir, name))] = f.read()
    return found


def step_outputs(prefix: str, name: str) -> dict[str, bytes]:
    base = os.path.relpath(step_dir(prefix, name), prefix)
    return {k: v for k, v in outputs(prefix).items() if k.startswith(base + os.sep)}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
