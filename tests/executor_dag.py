"""A small DAG of real steps for the executor's tests; also runnable as an experiment script.

Every step appends its name to a ledger file (`SODA_TEST_LEDGER`), so tests can count how
often each step ran, across processes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline import ExecutorStep, executor_main, output_path_of, this_output_path, versioned  # noqa: E402


@dataclass(frozen=True)
class ValueConfig:
    out: str
    value: int
    ledger: str
    note: str = "unversioned"
    sleep: float = 0.0
    fail_marker: Optional[str] = None  # the step raises while this file exists


@dataclass(frozen=True)
class SumConfig:
    inputs: list
    out: str
    ledger: str
    extra: dict = field(default_factory=dict)


def _log(ledger: str, name: str) -> None:
    with open(ledger, "a") as f:
        f.write(name + "\n")


def write_value(config: ValueConfig) -> None:
    _log(config.ledger, f"start {os.path.basename(config.out)}")
    if config.fail_marker and os.path.exists(config.fail_marker):
        raise RuntimeError(f"deliberate failure: {config.fail_marker} exists")
    os.makedirs(config.out, exist_ok=True)
    time.sleep(config.sleep)
    with open(os.path.join(config.out, "value.json"), "w") as f:
        json.dump({"value": config.value}, f)
    _log(config.ledger, f"end {os.path.basename(config.out)}")


def sum_values(config: SumConfig) -> None:
    _log(config.ledger, f"start {os.path.basename(config.out)}")
    total = 0
    for path in config.inputs:
        with open(os.path.join(path, "value.json") if os.path.isdir(path) else path) as f:
            total += json.load(f)["value"]
    os.makedirs(config.out, exist_ok=True)
    with open(os.path.join(config.out, "value.json"), "w") as f:
        json.dump({"value": total, "inputs": list(config.inputs)}, f)
    _log(config.ledger, f"end {os.path.basename(config.out)}")


def build(ledger: str, a: int = 1, note: str = "unversioned", sleep: float = 0.0,
          fail_marker: Optional[str] = None) -> list[ExecutorStep]:
    """raw/a, raw/b -> tokenized/ab (reads a/value.json by sub-path) -> analysis/total."""
    step_a = ExecutorStep("raw/a", write_value, ValueConfig(this_output_path(), versioned(a), ledger, note=note,
                                                            sleep=sleep))
    step_b = ExecutorStep("raw/b", write_value, ValueConfig(this_output_path(), versioned(2), ledger, sleep=sleep,
                                                            fail_marker=fail_marker))
    step_ab = ExecutorStep("tokenized/ab", sum_values,
                           SumConfig([output_path_of(step_a, "value.json"), step_b], this_output_path(), ledger))
    total = ExecutorStep("analysis/total", sum_values, SumConfig([step_ab], this_output_path(), ledger))
    return [step_a, step_b, step_ab, total]


if __name__ == "__main__":
    steps = build(os.environ["SODA_TEST_LEDGER"], a=int(os.environ.get("SODA_TEST_A", "1")),
                  sleep=float(os.environ.get("SODA_TEST_SLEEP", "0")),
                  fail_marker=os.environ.get("SODA_TEST_FAIL_MARKER"))
    executor_main(steps=steps, description="executor test DAG")


# The identities of `build(...)` with default arguments (pinned in tests/test_identity.py).
GOLDEN_NAMES = {
    "raw/a": "raw/a-34e818db",
    "raw/b": "raw/b-a442a9f6",
    "tokenized/ab": "tokenized/ab-e729381d",
    "analysis/total": "analysis/total-7148b74d",
}
