"""Run a benchmark's child process under a memory cap: kill its process group once its resident set
passes the cap, so an unbounded run ends as a finding rather than taking the machine down."""

from __future__ import annotations

import os
import signal
import subprocess
import time


def rss_bytes(pid: int) -> int:
    """The process's current resident set (VmRSS), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def wait_capped(proc: subprocess.Popen, limit_bytes: int, poll_s: float = 0.1):
    """Wait for `proc` (started with start_new_session=True), killing its group past `limit_bytes`.
    Returns (exit code, resource usage, killed)."""
    killed = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage, killed
        if not killed and rss_bytes(proc.pid) > limit_bytes:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
        time.sleep(poll_s)
