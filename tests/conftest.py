import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Every Ray in the suite (embedded, `ray start` clusters on 127.0.0.1, ray.cluster_utils) runs without
# token auth. Ray 2.60 turns token auth on for a new local cluster when RAY_AUTH_MODE is unset (and
# writes ~/.ray/auth_token), but a process reads the mode once, at its first ray.init: a test that
# connected with one mode would break every later in-process Ray started with the other. The
# end-to-end run of experiments/soda_local.py unsets it, so Ray's default mode is exercised too.
os.environ["RAY_AUTH_MODE"] = "disabled"


@pytest.fixture
def prefix(tmp_path: Path) -> str:
    """A fresh local executor prefix."""
    path = tmp_path / "prefix"
    path.mkdir()
    return str(path)


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    """An empty ledger file that tests/executor_dag.py's steps append to."""
    path = tmp_path / "ledger.txt"
    path.write_text("")
    return str(path)


@pytest.fixture(scope="module")
def gcs(request):
    """A GCS emulator (fake-gcs-server behind the precondition proxy) for the module, with the bucket
    its `BUCKET` names; skipped where the binary is missing."""
    from infra.gcs_emulator import GcsEmulator, _binary

    try:
        _binary()
    except (ImportError, RuntimeError) as e:
        pytest.skip(f"no fake-gcs-server binary: {e}")
    with GcsEmulator(buckets=[request.module.BUCKET]) as emulator:
        yield emulator


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SODA_RUN_SLOW") == "1":
        # the rehearsals (10-17 minutes each) go last, so CI's budget (SODA_SLOW_DEADLINE) is spent on them
        # only after every other slow test has had its turn
        items.sort(key=lambda item: "rehearsal" in item.keywords)
        return
    skip_slow = pytest.mark.skip(reason="slow: set SODA_RUN_SLOW=1 (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def pytest_runtest_setup(item):
    """CI's time budget: with SODA_SLOW_DEADLINE (seconds since the epoch) set, a slow test that would
    start after it is skipped, so the suite ends in time; fast tests always run."""
    import time

    deadline = os.environ.get("SODA_SLOW_DEADLINE")
    if deadline and "slow" in item.keywords and time.time() > float(deadline):
        pytest.skip("slow: CI's time budget for slow tests is spent (SODA_SLOW_DEADLINE)")


@pytest.fixture(scope="session")
def llama3_dir(tmp_path_factory) -> str:
    """The Llama 3 + SODA tokenizer (144,644 ids), built once per session from the offline base."""
    from tokenizer.testing import llama3_extended_dir

    return llama3_extended_dir(str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory) -> str:
    """The tiny Qwen-style SODA tokenizer (16,842 ids), built once per session."""
    from tokenizer.testing import qwen_style_extended_dir

    return qwen_style_extended_dir(str(tmp_path_factory.getbasetemp()))
