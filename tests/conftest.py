import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture
def prefix(tmp_path: Path) -> str:
    """A fresh local executor prefix."""
    path = tmp_path / "prefix"
    path.mkdir()
    return str(path)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SODA_RUN_SLOW") == "1":
        return
    skip_slow = pytest.mark.skip(reason="slow: set SODA_RUN_SLOW=1 (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
