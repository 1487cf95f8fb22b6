"""Levanter fixes that only a multi-host slice needs, checked on a two-process JAX run on CPU."""

import os
import subprocess
import sys

import pytest

from tests.ray_cluster import free_port

HOST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "levanter_tags_host.py")


def run_two_hosts(fix: bool) -> list[subprocess.CompletedProcess]:
    port = str(free_port())
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, HOST, str(i), port, "1" if fix else "0"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    outs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=180)
        finally:
            proc.kill()
        outs.append(subprocess.CompletedProcess(proc.args, proc.returncode, out))
    return outs


def test_eval_tags_stack_with_host_local_examples_on_a_two_host_slice():
    for i, out in enumerate(run_two_hosts(fix=True)):
        assert out.returncode == 0, out.stdout[-3000:]
        assert f"process {i}: stacked tokens (2, 4) tags (2, 1)" in out.stdout


@pytest.mark.slow
def test_without_the_fix_levanter_still_fails_there():
    """When this fails, Levanter has fixed it upstream: drop steps/training/levanter_fixes.py's patch."""
    outs = run_two_hosts(fix=False)
    assert any("incompatible devices" in out.stdout for out in outs)
