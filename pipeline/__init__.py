"""A content-hashed executor: steps in a DAG, run on Ray.

Marin's public vocabulary, so a Marin experiment ports by changing one import:

    from pipeline import ExecutorStep, Executor, InputName, versioned, output_path_of, \
        this_output_path, executor_main

Declarations (`pipeline.step`) import nothing heavy; `Executor` and `executor_main` load their
modules on first use, and Ray only when some step must actually run.
"""

from pipeline.step import (
    ExecutorStep,
    InputName,
    OutputName,
    ResourceConfig,
    VersionedValue,
    output_path_of,
    this_output_path,
    unwrap_versioned,
    versioned,
)

__all__ = [
    "Executor",
    "ExecutorError",
    "ExecutorMainConfig",
    "ExecutorStep",
    "InputName",
    "OutputName",
    "ResourceConfig",
    "VersionedValue",
    "executor_main",
    "output_path_of",
    "this_output_path",
    "unwrap_versioned",
    "versioned",
]

_LAZY = {
    "Executor": "pipeline.executor",
    "ExecutorError": "pipeline.executor",
    "executor_main": "pipeline.main",
    "ExecutorMainConfig": "pipeline.main",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
