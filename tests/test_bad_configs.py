"""Bad executor configurations get a clear error before any work starts, and nothing is written.

(tests/test_identity.py already covers `..`, absolute, URL and empty-segment names at declaration,
a cycle in `build_plan`, and a twin differing in an unversioned field; here are the rest, each also
through `Executor.run` or `executor_main` with an empty prefix that must stay empty.)
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass

import pytest

from pipeline import Executor, ExecutorStep, output_path_of, this_output_path, versioned
from pipeline.executor import PreflightError
from pipeline.identity import EncodingError
from pipeline.main import ExecutorMainConfig, executor_main
from pipeline.plan import PlanError, UnhashableConfigError
from tests.executor_dag import ValueConfig, build, sum_values, write_value


def tree(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


def run_and_expect(prefix: str, steps, error: type, match: str):
    with pytest.raises(error, match=match) as info:
        Executor(prefix, experiment_name="bad").run(steps)
    assert tree(prefix) == [], "something was written before the error"
    return info.value


def other_writer(config: ValueConfig) -> None:
    """A different function with the same config type as write_value."""
    write_value(config)


@pytest.mark.parametrize("bad", [
    "a/b#c", "a/b*", "a/b?c", "a/[x]", "a/b\nc", "a/über", "a/b%2F", "a/b:c", "a/~x", "a/b\x00c", "a/b/",
    "../a", "a/..", " a", "a/-x", "a/" + "x" * 201, "x/" * 300 + "y",
])
def test_names_unsafe_for_object_stores_or_filesystems_are_refused_at_declaration(bad):
    with pytest.raises(ValueError, match="step name"):
        ExecutorStep(bad, write_value, ValueConfig(this_output_path(), 1, "/l"))


@pytest.mark.parametrize("bad", ["../x", "/abs", "a//b", "a/./b"])
def test_sub_paths_that_leave_the_dependency_are_refused(bad):
    step = ExecutorStep("raw/a", write_value, ValueConfig(this_output_path(), 1, "/l"))
    with pytest.raises(ValueError, match="sub-path"):
        output_path_of(step, bad)
    with pytest.raises(ValueError, match="sub-path"):
        this_output_path(bad)


def test_cycle_is_refused_before_anything_is_written(prefix, capsys):
    @dataclass(frozen=True)
    class Deps:
        deps: list

    a = ExecutorStep("cyc/a", write_value, Deps([]))
    b = ExecutorStep("cyc/b", write_value, Deps([a]))
    a.config.deps.append(b)
    run_and_expect(prefix, [b], PlanError, r"dependency cycle: cyc/b -> cyc/a -> cyc/b")
    with pytest.raises(SystemExit) as exit_info:  # the experiment script's command line: a message, no traceback
        executor_main([b], config=ExecutorMainConfig(prefix=prefix))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "dependency cycle: cyc/b -> cyc/a -> cyc/b" in err and "Traceback" not in err
    assert tree(prefix) == []


def _twin(step: ExecutorStep, fn) -> ExecutorStep:
    return ExecutorStep(step.name, fn, step.config)


@pytest.mark.parametrize("fns, match", [
    ((write_value, other_writer), r"their function \(tests.executor_dag.write_value vs "
                                  r"tests.test_bad_configs.other_writer\)"),
    ((lambda c: write_value(c), lambda c: other_writer(c)), r"two different objects both named .*<lambda>"),
    ((functools.partial(write_value), functools.partial(other_writer)), r"their function"),
])
def test_two_different_steps_with_the_same_name_and_hash_are_refused(prefix, fns, match):
    first = build("/ledger")[0]
    steps = [_twin(first, fns[0]), _twin(first, fns[1])]
    error = run_and_expect(prefix, steps, PlanError, match)
    assert "raw/a-34e818db" in str(error) and "Give one another name, or mark the differing value versioned()" in \
        str(error)


def test_the_same_function_object_declared_twice_is_one_step():
    from pipeline.plan import build_plan

    fn = functools.partial(write_value)
    first = build("/ledger")[0]
    plan = build_plan([_twin(first, fn), _twin(first, fn)], "/p")
    assert len(plan.steps) == 1


def test_two_steps_overriding_to_the_same_output_are_refused(prefix):
    a, b = build("/ledger")[:2]
    run_and_expect(prefix, [a.with_output_path(prefix + "/shared"), b.with_output_path(prefix + "/shared")],
                   PlanError, r"would both write")


@pytest.mark.parametrize("value, what", [
    (object(), "has no deterministic encoding"),
    (float("nan"), "NaN/inf"),
    (float("inf"), "NaN/inf"),
    ({1: "a"}, "dict key 1 is not a string"),
    ([1, {"x": lambda: 0}], "no deterministic encoding"),
])
def test_versioned_values_that_cannot_be_hashed_are_a_plan_error_naming_the_step(prefix, capsys, value, what):
    step = ExecutorStep("x/bad", write_value, ValueConfig(this_output_path(), versioned(value), "/l"))
    error = run_and_expect(prefix, [step], UnhashableConfigError, what)
    assert isinstance(error, PlanError) and isinstance(error, EncodingError)
    assert "step 'x/bad', config field 'value'" in str(error) and "Nothing was run" in str(error)
    with pytest.raises(SystemExit):
        executor_main([step], config=ExecutorMainConfig(prefix=prefix))
    assert "step 'x/bad', config field 'value'" in capsys.readouterr().err
    assert tree(prefix) == []


def test_config_that_cannot_be_sent_to_a_worker_fails_before_anything_runs(prefix, tmp_path):
    ledger = tmp_path / "ledger"
    ledger.write_text("")
    good = build(str(ledger))[0]
    lock_holder = ExecutorStep("x/locked", sum_values, {"inputs": [good], "lock": threading.Lock()})
    error = run_and_expect(prefix, [lock_holder], PreflightError, r"cannot be sent to a Ray worker")
    assert "x/locked-" in str(error) and "nothing was started" in str(error) and "plain data" in str(error)
    assert ledger.read_text() == ""  # not even the healthy dependency ran
