"""The states a step goes through in one run of the executor, as recorded in the experiment record.

A `StrEnum`: each state is its own string, so records written before stay readable and a state
compares equal to its name (`RunState.CACHED == "cached"`)."""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    PLANNED = "planned"  # in the plan, not yet looked at
    PENDING = "pending"  # waiting for its dependencies
    WAITING = "waiting"  # another executor holds its lease
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CACHED = "cached"  # an earlier run's output is used
    FAILED = "failed"
    BLOCKED = "blocked"  # a dependency failed
    INTERRUPTED = "interrupted"  # the run was stopped while it ran

    @property
    def done(self) -> bool:
        """Its output is there for the steps after it."""
        return self in (RunState.SUCCEEDED, RunState.CACHED)

    @property
    def ended(self) -> bool:
        """Nothing more happens to it in this run."""
        return self in (RunState.SUCCEEDED, RunState.CACHED, RunState.FAILED, RunState.BLOCKED, RunState.INTERRUPTED)
