"""A module as it was at another git revision, imported under its own name, so a benchmark can time
the previous code against the current one in the same run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_previous(ref: str, path: str, name: str):
    """`path` (e.g. "steps/download.py") at git revision `ref`, imported as module `name`."""
    source = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=REPO, check=True, capture_output=True,
                            text=True).stdout
    file = os.path.join(tempfile.mkdtemp(prefix="soda-bench-"), f"{name}.py")
    with open(file, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
