"""The placement check: cluster YAMLs and live clusters as node types, steps that no node type could run
(refused by `--dry-run --cluster FILE` and before a real run starts anything), the train step's rule."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline import Executor, ExecutorStep, ResourceConfig, this_output_path, versioned
from pipeline.executor import PreflightError
from pipeline.node_types import NodeType, tpu_slice
from pipeline.placement import ClusterFileError, node_types_from_cluster_file, placement_problems
from pipeline.plan import topological_order
from steps.training.accounting import SODA_PRESETS, params_total
from steps.training.mixtures import FINAL
from steps.training.placement import GiB, train_placement_problems, training_memory
from steps.training.train import train
from steps.training.train_config import TrainConfig
from tests.executor_dag import ValueConfig, write_value

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_TPU = os.path.join(REPO, "infra", "cluster-tpu.yaml")

SMALL_CLUSTER = """
max_workers: 10
head_node_type: head
available_node_types:
  head: {resources: {"CPU": 0}, node_config: {machineType: n2-standard-4}}
  cpu_worker: {resources: {"CPU": 32}, node_config: {machineType: n2-standard-32}, max_workers: 4}
  tpu_v5p_32: {resources: {"CPU": 8}, node_config: {acceleratorType: v5p-32}, max_workers: 1}
  tpu_v5p_64: {resources: {"CPU": 8}, node_config: {acceleratorType: v5p-64}, max_workers: 1}
  tpu_v5e_4: {resources: {"CPU": 8}, node_config: {acceleratorConfig: {type: V5LITE_POD, topology: 2x2}}}
  never: {resources: {"CPU": 1000}, node_config: {machineType: n2-standard-4}, max_workers: 0}
"""


@pytest.fixture
def small_cluster(tmp_path) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(SMALL_CLUSTER)
    return str(path)


def train_config(preset: str, tpu: str, batch: int, **kw) -> TrainConfig:
    return TrainConfig(caches={s: f"/caches/{s}" for s in FINAL.active_sources}, tokenizer="/tokenizer",
                       preset=preset, batch_size=batch, num_steps=10, tpu=tpu, **kw)


def train_step(name: str, preset: str, tpu: str, batch: int) -> ExecutorStep:
    return ExecutorStep(name=name, fn=train, config=train_config(preset, tpu, batch),
                        resources=ResourceConfig(tpu=tpu))


def value_step(name: str, ledger: str, **resources) -> ExecutorStep:
    return ExecutorStep(name=name, fn=write_value,
                        config=ValueConfig(out=this_output_path(), value=versioned(1), ledger=ledger),
                        resources=ResourceConfig(**resources))


def pending_of(steps):
    return [(s.name, s.fn, s.config, s.resources) for s in steps]


# ---- node types ---------------------------------------------------------------------------


def test_cluster_tpu_yaml_gives_per_host_slice_resources_and_a_gpu_node_type():
    types = {t.name: t for t in node_types_from_cluster_file(CLUSTER_TPU)}
    v5p_64 = types["tpu_v5p_64"]
    assert dict(v5p_64.resources) == {"CPU": 200, "TPU": 4, "accelerator_type:TPU-V5P": 1, "TPU-v5p-64-head": 1}
    assert (v5p_64.accelerator, v5p_64.hosts, v5p_64.devices, v5p_64.device_memory_gib) == ("v5p-64", 8, 32, 95)
    assert v5p_64.is_tpu_slice and v5p_64.max_workers == 4
    gpu = types["gpu_a100"]
    assert dict(gpu.resources) == {"CPU": 12, "GPU": 1}
    assert (gpu.accelerator, gpu.devices, gpu.device_memory_gib) == ("nvidia-tesla-a100", 1, 40)
    assert types["head"].max_workers == 1 and dict(types["head"].resources) == {"CPU": 0}
    assert "memory" in types["cpu_worker"].unknown  # not declared: Ray detects it, so never a reason to refuse


def test_every_slice_the_experiments_ask_for_has_a_node_type():
    import importlib

    heads = {k for t in node_types_from_cluster_file(CLUSTER_TPU) for k in t.resources if k.endswith("-head")}
    asked = set()
    for script in ("exp1699_soda_all", "exp7_isoflop_sweep", "exp8_soda_prelim", "exp8_source_annealing",
                   "exp8_text_ratio", "exp8_token_composition", "exp8_warm_start", "exp10_s2st_finetune"):
        module = importlib.import_module(f"experiments.{script}")
        asked |= {f"TPU-{s.resources.tpu}-head" for s in topological_order(module.STEPS)
                  if s.resources is not None and s.resources.tpu}
    assert asked >= {"TPU-v5p-8-head", "TPU-v5p-16-head", "TPU-v5p-256-head"}
    assert asked <= heads, sorted(asked - heads)


def test_gpu_count_comes_from_guest_accelerators_and_accelerator_config_names_the_slice(small_cluster, tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text("available_node_types:\n  g:\n    resources: {CPU: 4}\n    node_config:\n      machineType: a2\n"
                    "      guestAccelerators:\n        - {acceleratorType: projects/p/zones/z/acceleratorTypes/"
                    "nvidia-l4, acceleratorCount: 2}\n")
    (gpu,) = node_types_from_cluster_file(str(path))
    assert dict(gpu.resources) == {"CPU": 4, "GPU": 2}
    assert gpu.accelerator == "nvidia-l4" and gpu.device_memory_gib == 24
    v5e = {t.name: t for t in node_types_from_cluster_file(small_cluster)}["tpu_v5e_4"]
    assert v5e.accelerator == "v5litepod-4" and dict(v5e.resources)["TPU"] == 4 and v5e.devices == 4


@pytest.mark.parametrize("text, says", [
    ("cluster_name: x\n", "has no `available_node_types`"),
    ("available_node_types:\n  a: {resources: {CPU: many}}\n", "node type 'a': `resources` must map"),
    ("available_node_types:\n  t: {node_config: {acceleratorType: v9z-8}}\n", "node type 't': TPU type 'v9z-8'"),
    ("available_node_types: [\n", "is not valid YAML"),
])
def test_bad_cluster_files_are_refused_naming_the_file_and_field(tmp_path, text, says):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ClusterFileError, match="bad.yaml") as e:
        node_types_from_cluster_file(str(path))
    assert says in str(e.value)


@pytest.mark.parametrize("tpu_type", ["v2-8", "v3-32", "v4-8", "v4-16", "v5p-8", "v5p-16", "v5p-64", "v5p-256",
                                      "v5litepod-4", "v5litepod-8", "v5litepod-16", "v6e-8", "v6e-16"])
def test_slice_arithmetic_agrees_with_ray(tpu_type):
    """The one slice arithmetic (the launcher's slice_spec is tpu_slice) against Ray's own."""
    from ray._private.accelerators import tpu as ray_tpu

    mine = tpu_slice(tpu_type)
    assert mine.chips == ray_tpu.get_total_chips_from_accelerator_type(tpu_type)
    assert mine.chips_per_host == ray_tpu.get_num_tpu_visible_chips_per_host(tpu_type)
    assert mine.hosts * mine.chips_per_host == mine.chips


# ---- placement of a DAG -------------------------------------------------------------------


def test_unplaceable_steps_are_named_with_what_is_missing_and_what_the_cluster_has(small_cluster, tmp_path):
    ledger = str(tmp_path / "ledger")
    steps = [
        value_step("slice/v5p-512", ledger, tpu="v5p-512"),
        value_step("eval/gpu", ledger, gpus=1),
        value_step("cpu/many", ledger, cpus=600),  # only the max_workers 0 type has that many
        value_step("custom/a100", ledger, custom={"a100": 1}),
        train_step("train/batch-12", "soda-135m", "v5p-32", 12),
        train_step("train/4b-on-v5e-4", "soda-4b", "v5litepod-4", 4),
        train_step("train/600m-ok", "soda-600m", "v5p-64", 512),
        value_step("cpu/ok", ledger, cpus=16),
    ]
    problems = placement_problems(pending_of(steps), node_types_from_cluster_file(small_cluster))
    assert sorted(problems) == sorted(["slice/v5p-512", "eval/gpu", "cpu/many", "custom/a100", "train/batch-12",
                                       "train/4b-on-v5e-4"])
    assert problems["slice/v5p-512"] == ("needs TPU-v5p-512-head: 1 (a v5p-512 slice); the cluster's TPU node "
                                         "types: v5litepod-4, v5p-32, v5p-64")
    assert problems["eval/gpu"] == "needs GPU: 1; no node type has GPUs"
    assert problems["cpu/many"] == "needs CPU: 600 on one node; the most any node type has is 32 (cpu_worker)"
    assert problems["custom/a100"] == "needs a100: 1; no node type has a100"
    assert problems["train/batch-12"] == (
        "on tpu_v5p_32: the train batch 12 does not divide evenly over the 16 devices of a v5p-32 slice (Levanter "
        "shards each batch over all of them); use a multiple of 16, such as 16, or a slice whose device count "
        "divides 12")
    assert problems["train/4b-on-v5e-4"].startswith("on tpu_v5e_4: the model does not fit a v5litepod-4 slice's "
                                                    "memory: about ")
    assert problems["train/4b-on-v5e-4"].endswith(
        "against 14.4 GiB usable of the 16 GiB per device; use a larger slice")


def test_resources_on_different_node_types_are_not_one_node(small_cluster):
    step = ExecutorStep(name="both", fn=write_value, config=ValueConfig(out="x", value=1, ledger="l"),
                        resources=ResourceConfig(cpus=20, custom={"TPU": 4}))  # 32 CPUs on one type, TPUs on others
    problem = placement_problems(pending_of([step]), node_types_from_cluster_file(small_cluster))["both"]
    assert problem.startswith("needs {CPU: 20, TPU: 4} on one node; each is on some node type, but no "
                              "node type has them all")


def test_a_tpu_step_supervises_from_the_head_node_and_needs_only_a_slice(small_cluster):
    """The supervisor holds no CPU on the head (0 CPUs in the cluster file) and never sits on a slice."""
    options = ResourceConfig(tpu="v5p-32", max_retries=2).ray_options()
    assert options == {"num_cpus": 0, "max_retries": 2, "resources": {"node:__internal_head__": 0.001}}
    types = node_types_from_cluster_file(small_cluster)
    ok = ExecutorStep(name="ok", fn=write_value, config=ValueConfig(out="x", value=1, ledger="l"),
                      resources=ResourceConfig(tpu="v5p-32"))
    missing = ExecutorStep(name="missing", fn=write_value, config=ValueConfig(out="x", value=1, ledger="l"),
                           resources=ResourceConfig(tpu="v5p-128"))
    problems = placement_problems(pending_of([ok, missing]), types)
    assert "ok" not in problems
    assert problems["missing"] == ("needs TPU-v5p-128-head: 1 (a v5p-128 slice); the cluster's TPU node types: "
                                   "v5litepod-4, v5p-32, v5p-64")
    for bad in ({"gpus": 1}, {"memory_gb": 4}, {"custom": {"a100": 1}}):
        with pytest.raises(ValueError, match="supervisor"):
            ResourceConfig(tpu="v5p-32", **bad)


def test_a_step_rule_is_asked_only_about_fitting_node_types_and_one_clean_one_suffices(small_cluster):
    asked = []

    def fn(config):
        pass

    def rule(config, node_type):
        asked.append(node_type.name)
        return [] if node_type.name == "tpu_v5e_4" else [f"not {node_type.name}"]  # the last one asked

    fn.placement_problems = rule
    types = node_types_from_cluster_file(small_cluster)
    assert placement_problems([("s", fn, None, ResourceConfig(cpus=8))], types) == {}
    assert sorted(asked) == ["cpu_worker", "tpu_v5e_4", "tpu_v5p_32", "tpu_v5p_64"]  # not head (0 CPU), not never
    asked.clear()
    assert placement_problems([("s", fn, None, ResourceConfig(tpu="v5p-64"))], types) == {
        "s": "on tpu_v5p_64: not tpu_v5p_64"}

    def broken(config, node_type):
        raise KeyError("boom")

    fn.placement_problems = broken
    problem = placement_problems([("s", fn, None, ResourceConfig(cpus=1))], types)["s"]
    assert "raised KeyError: 'boom'" in problem and "broken" in problem


# ---- the train step's rule ----------------------------------------------------------------


def slice_node(tpu_type: str) -> NodeType:
    spec = tpu_slice(tpu_type)
    return NodeType(f"tpu_{tpu_type}", {"TPU": spec.chips_per_host, spec.head_resource: 1}, accelerator=tpu_type,
                    hosts=spec.hosts, devices=spec.devices, device_memory_gib=spec.device_memory_gib)


@pytest.mark.parametrize("preset, tpu", [("soda-135m", "v5p-32"), ("soda-600m", "v5p-64"), ("soda-1.7b", "v5p-128"),
                                         ("soda-4b", "v5p-256")])
def test_the_soda_models_fit_their_slices_at_batch_512(preset, tpu):
    assert train_placement_problems(train_config(preset, tpu, 512), slice_node(tpu)) == []


def test_memory_estimate_terms():
    shape = SODA_PRESETS["4B"]
    est = training_memory(shape, devices=128, examples_per_device=4)
    assert est.state == 16 * params_total(shape) / 128  # fp32 params, grads, two moments, sharded
    assert est.tokens_per_device == 4 * 4096
    assert 5 * GiB < est.total < 20 * GiB  # the paper trained it on v5p-256: far below 85.5 GiB usable
    # four times the tokens per device: the activations grow four-fold, the sharded state does not
    bigger = training_memory(shape, devices=128, examples_per_device=16)
    assert bigger.activations == pytest.approx(4 * est.activations) and bigger.state == est.state


def test_impossible_training_is_refused_with_advice():
    v5e = slice_node("v5litepod-4")
    (said,) = train_placement_problems(train_config("soda-4b", "v5litepod-4", 4), v5e)
    assert "optimizer state 16.3 GiB sharded over 4 devices" in said and said.endswith("use a larger slice")
    (said,) = train_placement_problems(train_config("soda-135m", "v5litepod-4", 512), v5e)  # activations too big
    assert "per_device_parallelism (gradient accumulation)" in said
    # gradient accumulation: 4 examples per device at a time fits, and 512 divides 4 devices x 4
    assert train_placement_problems(train_config("soda-135m", "v5litepod-4", 512, per_device_parallelism=4), v5e) == []
    (said,) = train_placement_problems(train_config("soda-135m", "v5litepod-4", 24, per_device_parallelism=4), v5e)
    assert "4 devices x per_device_parallelism 4" in said and "multiple of 16" in said


def test_train_rule_skips_cpu_runs_and_names_a_slice_mismatch():
    assert train_placement_problems(train_config("soda-4b", None, 3), NodeType("cpu", {"CPU": 1})) == []
    (said,) = train_placement_problems(train_config("soda-135m", "v5p-64", 512), slice_node("v5p-32"))
    assert "launches on a v5p-32 slice but TrainConfig.tpu is 'v5p-64'" in said


# ---- the command line and the executor ----------------------------------------------------


def run_script(*args, timeout=120, env=None):
    env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_exp1699_dry_run_fits_the_shipped_cluster(tmp_path):
    out = run_script("experiments/exp1699_soda_all.py", "--dry-run", "--cluster", "infra/cluster-tpu.yaml",
                     "--prefix", str(tmp_path / "p"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "placement: each of the 59 steps to run fits a node type of infra/cluster-tpu.yaml" in out.stdout
    assert not os.path.exists(tmp_path / "p")


SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from pipeline import executor_main
from tests.test_placement import train_step, value_step

executor_main(steps=[{steps}])
"""


def write_script(tmp_path, steps: str) -> str:
    path = tmp_path / "script.py"
    path.write_text(SCRIPT.format(repo=REPO, steps=steps.replace("LEDGER", repr(str(tmp_path / "ledger")))))
    return str(path)


def test_dry_run_with_cluster_names_unplaceable_steps_and_exits_1(tmp_path):
    script = write_script(tmp_path, 'value_step("raw/fine", LEDGER), value_step("eval/two-gpus", LEDGER, gpus=2), '
                                    'value_step("slice/v5p-512", LEDGER, tpu="v5p-512"), '
                                    'train_step("train/batch-12", "soda-135m", "v5p-32", 12)')
    prefix = str(tmp_path / "p")
    out = run_script(script, "--dry-run", "--cluster", CLUSTER_TPU, "--prefix", prefix)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"3 of the 4 steps to run can never run on the node types of {CLUSTER_TPU}:" in out.stdout
    assert "eval/two-gpus-" in out.stdout and "needs GPU: 2 on one node; the most any node type has is 1 (gpu_a100)" \
        in out.stdout
    assert "slice/v5p-512-" in out.stdout and "(a v5p-512 slice); the cluster's TPU node types: v5p-8, v5p-16," \
        in out.stdout
    assert "train/batch-12-" in out.stdout and "the train batch 12 does not divide evenly" in out.stdout
    assert "raw/fine-" not in out.stdout.split("can never run")[1]
    assert "3 step(s) can never run" in out.stderr
    same_without_cluster = run_script(script, "--dry-run", "--prefix", prefix)
    assert same_without_cluster.returncode == 0, same_without_cluster.stderr
    assert "can never run" not in same_without_cluster.stdout and "placement" not in same_without_cluster.stdout
    assert not os.path.exists(prefix) and not os.path.exists(tmp_path / "ledger")


def test_real_run_with_a_cluster_file_refuses_before_anything_starts(tmp_path, prefix, small_cluster):
    ledger = str(tmp_path / "ledger")
    steps = [value_step("raw/fine", ledger), value_step("eval/gpu", ledger, gpus=1),
             train_step("train/batch-12", "soda-135m", "v5p-32", 12)]
    with pytest.raises(PreflightError) as e:
        Executor(prefix, experiment_name="t", cluster_file=small_cluster).run(steps)
    message = str(e.value)
    assert message.startswith("2 step(s) cannot run, so nothing was started:")
    assert "eval/gpu-" in message and "needs GPU: 1; no node type has GPUs (node types of " in message
    assert "train/batch-12-" in message and "raw/fine" not in message
    assert not os.path.exists(ledger)  # no step ran
    assert [files for _, _, files in os.walk(prefix) if files] == []  # no status, info or record written


# ---- a live cluster -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_cluster():
    from tests.ray_cluster import RayStartCluster

    with RayStartCluster(nodes=[{"head": 1}], cpus_per_node=1) as cluster:
        yield cluster


def test_an_autoscaling_cluster_without_published_node_types_refuses_rather_than_waits(tmp_path, live_cluster):
    script = write_script(tmp_path, 'value_step("slice/v5p-64", LEDGER, tpu="v5p-64")')
    prefix = str(tmp_path / "p")
    os.makedirs(prefix)
    # the cluster says it may add nodes, yet no node type it publishes has the slice: refused, not left waiting
    out = run_script(script, "--ray-address", live_cluster.address, "--prefix", prefix, timeout=120,
                     env={"SODA_RAY_AUTOSCALING": "1"})
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "1 step(s) cannot run, so nothing was started" in out.stderr
    assert "needs {TPU-v5p-64-head: 1} on one node, but no node of the Ray cluster" in out.stderr
    assert "the cluster has no TPU node types" in out.stderr
    assert "publishes no node types" in out.stderr and "--cluster" in out.stderr
    assert not os.path.exists(tmp_path / "ledger") and [f for _, _, f in os.walk(prefix) if f] == []


def test_published_autoscaler_node_groups_count_as_node_types(live_cluster):
    import ray
    from ray._raylet import GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, GCS_AUTOSCALER_STATE_NAMESPACE
    from ray.core.generated import autoscaler_pb2
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_put

    from pipeline.placement import node_types_from_live_cluster
    from pipeline.runner import RayRunner

    key, namespace = GCS_AUTOSCALER_CLUSTER_CONFIG_KEY.encode(), GCS_AUTOSCALER_STATE_NAMESPACE.encode()
    config = autoscaler_pb2.ClusterConfig(node_group_configs=[autoscaler_pb2.NodeGroupConfig(
        name="tpu_v5p_32", resources={"CPU": 8, "TPU": 4, "TPU-v5p-32-head": 1}, max_count=2)])
    ray.init(address=live_cluster.address)
    try:
        _internal_kv_put(key, config.SerializeToString(), overwrite=True, namespace=namespace)
        types = {t.name: t for t in node_types_from_live_cluster()}
        group = types["tpu_v5p_32"]
        assert (group.source, group.max_workers, group.accelerator, group.devices) == ("autoscaler", 2, "v5p-32", 16)
        assert any(t.source == "live node" and t.resources.get("head") == 1 for t in types.values())
        runner = RayRunner(live_cluster.address)
        runner.check_resources("slice", ResourceConfig(tpu="v5p-32"))  # the autoscaler can add one: no error
        with pytest.raises(RuntimeError, match="cannot run on any node of the Ray cluster .* train batch 12"):
            runner.check_resources("train", ResourceConfig(tpu="v5p-32"), train,
                                   train_config("soda-135m", "v5p-32", 12))
    finally:
        _internal_kv_del(key, namespace=namespace)
        ray.shutdown()
