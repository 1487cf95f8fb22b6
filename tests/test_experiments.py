"""Every experiment script's dry run: it plans, writes nothing and imports no framework."""

import glob
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(p for p in glob.glob(os.path.join(REPO, "experiments", "*.py"))
                 if os.path.basename(p) not in ("__init__.py", "defaults.py"))
HEAVY = ("ray", "jax", "torch", "transformers", "levanter", "datasets")


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_dry_run_plans_and_writes_nothing(script, tmp_path):
    prefix = tmp_path / "prefix"
    out = subprocess.run([sys.executable, script, "--dry-run", "--prefix", str(prefix)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.split()[1] == "steps:" and int(last.split()[0]) >= 5, out.stdout
    assert not prefix.exists()


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_importing_a_script_loads_no_framework(script):
    code = (f"import runpy, sys; sys.argv = [{script!r}]; runpy.run_path({script!r}, run_name='not_main'); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
