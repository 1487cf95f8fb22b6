"""Marin's executor behaviours that experiments and notebooks rely on, in our API.

- `.nonblocking()` inputs (Marin's pseudo-dependencies): the path enters the reader's hash, but
  the reader neither waits for nor runs the step it reads (Marin's tests/execution/test_executor.py:
  test_collect_deps_skip_vs_block, test_parent_version_bubbles_into_skip_child,
  test_parent_doesnt_run_on_skip_parent, test_skippable_parent_will_run_if_asked,
  test_parent_will_run_if_some_child_is_not_skippable).
- Executors in threads of one process share one Ray runtime (Marin's
  test_status_actor_one_executor_waiting_for_another and ..._multiple_steps_race_condition).

Every real run here starts the embedded Ray itself (no fixture starts one), as a notebook would.
"""

import io
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from pipeline import Executor, ExecutorStep, InputName, output_path_of, this_output_path, versioned
from pipeline import storage
from pipeline.lease import LocalLease
from pipeline.plan import build_plan
from pipeline.rewrite import rewrite_dag


@dataclass(frozen=True)
class StepConfig:
    ledger: str
    out: Any = None
    x: Any = 0
    input_path: Any = None
    sleep: float = 0.0


def record_run(config: StepConfig) -> None:
    """Append `name node input` to the ledger (a file: steps run in Ray workers), then write the output."""
    import ray

    name, node = os.path.basename(config.out), ray.get_runtime_context().get_node_id()
    with open(config.ledger, "a") as f:
        f.write(f"start {name} {node} {config.input_path}\n")
    time.sleep(config.sleep)
    os.makedirs(config.out, exist_ok=True)
    with open(os.path.join(config.out, "done.txt"), "w") as f:
        f.write(str(config.x))


def must_not_run(config: StepConfig) -> None:
    raise RuntimeError("a step read only nonblocking was run")


def runs(ledger: str) -> list[str]:
    """The last name component (without hash) of each step that started, in order."""
    return [line.split()[1].rsplit("-", 1)[0] for line in open(ledger).read().splitlines()]


@pytest.fixture
def ledger(tmp_path) -> str:
    path = tmp_path / "ledger.txt"
    path.write_text("")
    return str(path)


def parent_and_child(ledger: str, x: int = 1, fn: Callable = record_run, blocking: bool = False):
    parent = ExecutorStep("checkpoints/parent", fn, StepConfig(ledger, this_output_path(), versioned(x)))
    ref = parent.cd("step-100") if blocking else parent.cd("step-100").nonblocking()
    child = ExecutorStep("evaluation/child", record_run, StepConfig(ledger, this_output_path(), input_path=ref))
    return parent, child


# --- .nonblocking(): identity and plan (no Ray) ---------------------------------------------------


def test_nonblocking_is_kept_by_every_way_of_naming_a_path():
    parent, _ = parent_and_child("/dev/null")
    for ref in (output_path_of(parent).nonblocking(), parent.cd("a").nonblocking(), (parent / "a").nonblocking()):
        assert ref.block_on_step is False
        assert (ref / "b").block_on_step is False and ref.cd("b").name.endswith("b")
    assert output_path_of(parent, "a").block_on_step and (parent / "a") == InputName(parent, "a")
    with pytest.raises(TypeError):
        versioned(parent.cd("a").nonblocking())


def test_nonblocking_path_enters_the_hash_and_differs_from_a_dependency(prefix):
    plans = {(x, blocking): build_plan([parent_and_child("/dev/null", x, blocking=blocking)[1]], prefix)
             for x in (1, 2) for blocking in (False, True)}
    child = {key: plan.steps[-1] for key, plan in plans.items()}
    parent_name = plans[1, False].steps[0].versioned_name
    assert child[1, False].identity.dependencies == {"input_path": f"{parent_name}/step-100 (nonblocking)"}
    assert child[1, False].identity.nonblocking_inputs() == {"input_path": f"{parent_name}/step-100"}
    assert child[1, True].identity.dependencies == {"input_path": f"{parent_name}/step-100"}
    # the parent's versioned value reaches the child's hash through a nonblocking input (as in Marin) ...
    assert child[1, False].identity.hash != child[2, False].identity.hash
    # ... and reading without waiting is another identity than depending on it (Marin: pseudo_dependencies)
    assert child[1, False].identity.hash != child[1, True].identity.hash
    plan = plans[1, False]
    assert plan.steps[-1].dependencies == [] and [p.needed for p in plan.steps] == [False, True]
    assert [p.selected for p in plan.steps] == [False, True]
    assert [p.selected for p in plans[1, True].steps] == [True, True]


def test_what_a_nonblocking_input_waits_for_runs_only_if_something_blocks_on_it(prefix):
    """Unlike Marin (whose flag stays on the first path that reached a step), order does not matter: the
    grandparent runs whenever a blocking reference to the parent is among the roots."""
    grandparent = ExecutorStep("raw/grandparent", record_run, StepConfig("/dev/null", this_output_path()))
    parent = ExecutorStep("checkpoints/parent", record_run,
                          StepConfig("/dev/null", this_output_path(), input_path=grandparent))
    child = ExecutorStep("evaluation/child", record_run,
                         StepConfig("/dev/null", this_output_path(), input_path=parent.cd("x").nonblocking()))
    child2 = ExecutorStep("evaluation/child2", record_run,
                          StepConfig("/dev/null", this_output_path(), input_path=parent.cd("x")))
    needed = {p.name: p.needed for p in build_plan([child], prefix).steps}
    assert needed == {"raw/grandparent": False, "checkpoints/parent": False, "evaluation/child": True}
    for roots in ([child, child2], [child2, child]):
        assert all(p.selected for p in build_plan(roots, prefix).steps)
    selected = {p.name: p.selected for p in build_plan([child], prefix, run_only=["parent"]).steps}
    assert selected == {"raw/grandparent": True, "checkpoints/parent": True, "evaluation/child": False}


def test_nonblocking_survives_a_dag_rewrite(prefix):
    _, child = parent_and_child("/dev/null")
    [rewritten] = rewrite_dag([child], lambda step: step)
    assert rewritten.config.input_path.block_on_step is False
    assert build_plan([rewritten], prefix).steps[-1].identity == build_plan([child], prefix).steps[-1].identity


def test_dry_run_shows_a_nonblocking_input_and_that_its_step_is_not_run(prefix):
    parent, child = parent_and_child("/dev/null")
    out = io.StringIO()
    result = Executor(prefix, experiment_name="nb").run([child], dry_run=True, out=out)
    text = out.getvalue()
    parent_name = result.plan.of(parent).versioned_name
    assert result.actions[parent_name].label() == "skip: only a nonblocking input of other steps"
    assert f"nonblocking input input_path: {parent_name}/step-100 (not waited for)" in text
    out = io.StringIO()
    result = Executor(prefix, experiment_name="nb").run([child], dry_run=True, run_only=["parent"], out=out)
    assert result.actions[parent_name].kind == "run"


# --- .nonblocking(): real runs, in one embedded Ray that the executors share -------------------------


@pytest.fixture(scope="class")
def shared_ray():
    """One embedded Ray for the class, started as an executor would: each executor attaches to it and
    leaves it running, since this runner is still attached."""
    from pipeline.runner import RayRunner

    holder = RayRunner(address="")  # "" (not None): never $RAY_ADDRESS
    holder._ensure_started()
    yield holder
    holder.shutdown()


@pytest.mark.usefixtures("shared_ray")
class TestNonblockingRuns:
    def test_step_read_nonblocking_is_neither_run_nor_waited_for(self, prefix, ledger):
        """The parent is 'running elsewhere' (its lease held, status RUNNING) and would fail if run here:
        the child runs at once, reading the parent's path."""
        parent, child = parent_and_child(ledger, fn=must_not_run)
        executor = Executor(prefix, experiment_name="nb", ray_address="")
        parent_path = executor.compute_versions([child]).of(parent).output_path
        lease = LocalLease(parent_path, "another-run")
        assert lease.try_acquire()
        storage.write_status(parent_path, storage.RUNNING, "another-run")
        try:
            result = executor.run([child])
        finally:
            lease.release()
        assert runs(ledger) == ["child"]
        assert open(ledger).read().split()[3] == f"{parent_path}/step-100"
        assert result.states[result.plan.of(parent).versioned_name] == "not selected"
        assert storage.read_status(parent_path).status == storage.RUNNING  # untouched

    def test_step_read_nonblocking_runs_when_run_only_names_it(self, prefix, ledger):
        parent, child = parent_and_child(ledger)
        result = Executor(prefix, experiment_name="nb", ray_address="").run([child],
                                                                          run_only=["^checkpoints/parent$"])
        assert runs(ledger) == ["parent"]
        assert result.names("succeeded") == [result.plan.of(parent).versioned_name]

    def test_step_read_nonblocking_runs_when_another_step_depends_on_it(self, prefix, ledger):
        parent, child = parent_and_child(ledger)
        blocking = ExecutorStep("evaluation/child2", record_run,
                                StepConfig(ledger, this_output_path(), input_path=parent.cd("step-100")))
        result = Executor(prefix, experiment_name="nb", ray_address="").run([child, blocking])
        started = runs(ledger)
        assert sorted(started) == ["child", "child2", "parent"]
        assert started.index("parent") < started.index("child2")
        assert len(result.names("succeeded")) == 3

    def test_executors_wanting_different_ray_runtimes_in_one_process_are_told_why(self):
        from pipeline.runner import RayRunner

        with pytest.raises(RuntimeError, match="Ray allows one runtime per process"):
            RayRunner(address="127.0.0.1:1")._ensure_started()


# --- executors in threads of one process ------------------------------------------------------------


def in_threads(calls: list[Callable[[], Any]], timeout: float = 240.0) -> list[Any]:
    """Run each call in its own thread; their results, or the first error raised."""
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    deadline = time.time() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.time()))
    assert not any(t.is_alive() for t in threads), f"executors still running after {timeout:.0f}s"
    if errors:
        raise errors[0]
    return results


def race_dag(ledger: str, sleep: float = 0.0) -> list[ExecutorStep]:
    raw = ExecutorStep("raw/slow", record_run, StepConfig(ledger, this_output_path(), versioned(1), sleep=sleep))
    total = ExecutorStep("analysis/total", record_run, StepConfig(ledger, this_output_path(), input_path=raw))
    return [raw, total]


def test_ten_racing_executors_in_one_process_run_each_step_once(prefix, ledger):
    import ray

    def one_run():
        return Executor(prefix, experiment_name="race").run(race_dag(ledger, sleep=1.0))  # its own step objects

    results = in_threads([one_run] * 10)
    assert sorted(runs(ledger)) == ["slow", "total"]
    for name in results[0].states:
        states = sorted(r.states[name] for r in results)
        assert states == ["cached"] * 9 + ["succeeded"], (name, states)
    assert not ray.is_initialized()  # the last executor out shut down the Ray they shared


def test_one_executor_waits_for_another_in_the_same_process(prefix, ledger):
    """Executor 1 runs raw/slow; executor 2, started while it runs, waits for its lease, then runs
    analysis/total on its output in the Ray runtime that executor 1 started (and left to it)."""
    import ray

    def first():
        return Executor(prefix, experiment_name="one").run(race_dag(ledger, sleep=3.0)[:1])

    def second():
        deadline = time.time() + 120
        while "slow" not in runs(ledger):  # executor 1 has started Ray and holds the lease
            assert time.time() < deadline, "executor 1 never started its step"
            time.sleep(0.1)
        return Executor(prefix, experiment_name="two").run(race_dag(ledger, sleep=3.0))

    one, two = in_threads([first, second])
    assert runs(ledger) == ["slow", "total"]
    assert one.names("succeeded") and not one.names("cached")
    assert sorted(two.states.values()) == ["cached", "succeeded"]
    nodes = [line.split()[2] for line in open(ledger).read().splitlines()]
    assert nodes[0] == nodes[1], "the two executors' steps ran in two different Ray runtimes"
    assert not ray.is_initialized()  # the last executor out shut it down
