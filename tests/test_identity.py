"""Step identity and planning: hashes, paths, dependencies. No Ray, no storage."""

import enum
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from pipeline import ExecutorStep, InputName, output_path_of, this_output_path, versioned
from pipeline.identity import EncodingError, canonical, dumps
from pipeline.plan import PlanError, build_plan, replace_config
from tests.executor_dag import build, write_value, ValueConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Pinned: a change here changes every output path of every experiment. Never update these
# without a migration note in the README.
GOLDEN = {
    "raw/a": "raw/a-34e818db",
    "raw/b": "raw/b-a442a9f6",
    "tokenized/ab": "tokenized/ab-e729381d",
    "analysis/total": "analysis/total-7148b74d",
}


def names(prefix="/p", **kwargs):
    plan = build_plan(build("/ledger", **kwargs), prefix)
    return {p.name: p.versioned_name for p in plan.steps}, plan


def test_golden_hashes():
    got, _ = names()
    assert got == GOLDEN


def test_hashes_stable_across_processes_and_hash_seeds():
    code = ("import sys; sys.path.insert(0, %r); from tests.executor_dag import build; "
            "from pipeline.plan import build_plan; "
            "print(sorted(p.versioned_name for p in build_plan(build('/elsewhere'), 'gs://b/x').steps))" % REPO)
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outputs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   check=True).stdout.strip())
    assert outputs == {str(sorted(GOLDEN.values()))}


def test_prefix_and_ledger_do_not_change_identity():
    local, plan_local = names(prefix="/tmp/a")
    remote, plan_remote = names(prefix="gs://bucket/soda")
    assert local == remote == GOLDEN
    assert plan_remote.steps[0].output_path == "gs://bucket/soda/raw/a-34e818db"


def test_unversioned_change_keeps_paths():
    changed, _ = names(note="something else")
    assert changed == GOLDEN


def test_versioned_change_moves_step_and_all_descendants_only():
    changed, _ = names(a=7)
    assert changed["raw/b"] == GOLDEN["raw/b"]
    for name in ("raw/a", "tokenized/ab", "analysis/total"):
        assert changed[name] != GOLDEN[name], name


def test_sub_path_is_part_of_identity_and_resolves_inside_dependency():
    a = ExecutorStep("raw/a", write_value, ValueConfig(this_output_path(), versioned(1), "/l"))

    def reader(name):
        return ExecutorStep("x/read", write_value, ValueConfig(this_output_path(), versioned(0), "/l", note=name))

    @dataclass(frozen=True)
    class C:
        src: object
        out: object

    whole = ExecutorStep("x/read", write_value, C(output_path_of(a), this_output_path()))
    sub = ExecutorStep("x/read", write_value, C(a / "shards/0", this_output_path("out")))
    plan_whole, plan_sub = build_plan([whole], "/p"), build_plan([sub], "/p")
    assert plan_whole.of(whole).versioned_name != plan_sub.of(sub).versioned_name
    cfg = plan_sub.of(sub).concrete_config(plan_sub.paths)
    assert cfg.src == "/p/raw/a-34e818db/shards/0"
    assert cfg.out == plan_sub.of(sub).output_path + "/out"
    assert plan_sub.of(sub).identity.dependencies == {"src": "raw/a-34e818db/shards/0"}
    assert (a / "x" / "y") == InputName(a, "x/y")
    assert reader("n").name == "x/read"


def test_concrete_config_replaces_every_marker():
    plan = build_plan(build("/ledger"), "/p")
    total = plan.steps[-1]
    cfg = total.concrete_config(plan.paths)
    assert cfg.inputs == ["/p/tokenized/ab-e729381d"]
    assert cfg.out == "/p/analysis/total-7148b74d"
    first = plan.steps[0].concrete_config(plan.paths)
    assert first.value == 1 and isinstance(first.value, int)


def test_canonical_encoding_rejects_values_without_deterministic_form():
    class Color(enum.Enum):
        RED = 1

    assert dumps(canonical({"b": 1.5, "a": [1, (2, 3)], "c": Color.RED, "d": {3, 1, 2}})) == \
        '{"a":[1,[2,3]],"b":1.5,"c":{"__enum__":"Color.RED"},"d":{"__set__":[1,2,3]}}'
    assert dumps(canonical(1)) != dumps(canonical(1.0)) != dumps(canonical(True))
    with pytest.raises(EncodingError, match="no deterministic encoding"):
        canonical(object())
    with pytest.raises(EncodingError, match="NaN"):
        canonical(float("nan"))
    step = ExecutorStep("x/bad", write_value, ValueConfig(this_output_path(), versioned(lambda: 1), "/l"))
    with pytest.raises(EncodingError, match=r"step 'x/bad', config field 'value'"):
        build_plan([step], "/p")


@pytest.mark.parametrize("bad", ["", "/abs/path", "a/../b", "a//b", "./a", "gs://x", "a\\b", "a/ b", "a/."])
def test_bad_step_names_rejected_at_declaration(bad):
    with pytest.raises(ValueError, match="step name"):
        ExecutorStep(bad, write_value, ValueConfig(this_output_path(), 1, "/l"))


def test_dependency_cycle_named():
    @dataclass(frozen=True)
    class C:
        deps: list

    a = ExecutorStep("c/a", write_value, C([]))
    b = ExecutorStep("c/b", write_value, C([a]))
    a.config.deps.append(b)  # only mutation can make a cycle
    with pytest.raises(PlanError, match=r"dependency cycle: c/a -> c/b -> c/a"):
        build_plan([a], "/p")


def test_same_step_declared_twice_is_one_node_but_different_work_is_rejected():
    steps = build("/ledger")
    again = build("/ledger")  # equal declarations, other objects
    plan = build_plan(steps + again, "/p")
    assert len(plan.steps) == 4
    assert plan.of(again[0]) is plan.of(steps[0])
    clash = replace_config(steps[0], note="other")  # same name and hash, different unversioned config
    with pytest.raises(PlanError, match=r"raw/a-34e818db.*unversioned config fields note"):
        build_plan([steps[0], clash], "/p")


def test_run_only_selects_matches_and_their_dependencies():
    plan = build_plan(build("/ledger"), "/p", run_only=["^tokenized/"])
    assert {p.name for p in plan.steps if p.selected} == {"raw/a", "raw/b", "tokenized/ab"}
    with pytest.raises(PlanError, match="matches no step"):
        build_plan(build("/ledger"), "/p", run_only=["nothing"])


def test_importing_experiment_declarations_is_light():
    code = ("import sys; sys.path.insert(0, %r); import tests.executor_dag, pipeline.plan; "
            "heavy = [m for m in ('ray', 'jax', 'torch', 'transformers', 'levanter') if m in sys.modules]; "
            "print(heavy)" % REPO)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
