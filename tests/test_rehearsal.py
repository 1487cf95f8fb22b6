"""The rehearsal: the DAG rewrite, the rehearsal scale applied to exp1699's own DAG, the local cluster
mirroring the cluster file, the GCS emulator with GCS's preconditions, and (slow) `soda rehearse` of
exp1699 end to end."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import ExecutorStep, output_path_of, this_output_path, unwrap_versioned, versioned
from pipeline.plan import build_plan, topological_order
from pipeline.rewrite import rewrite_dag

REPO = Path(__file__).resolve().parent.parent
CLUSTER_FILE = REPO / "infra" / "cluster-tpu.yaml"
PRODUCTION_SCRIPTS = ("exp1699_soda_all", "exp7_isoflop_sweep", "exp8_soda_prelim", "exp8_source_annealing",
                      "exp8_text_ratio", "exp8_token_composition", "exp8_warm_start", "exp10_s2st_finetune",
                      "exp20_yodas2_raw")
TRAINS_NOTHING = {"exp20_yodas2_raw"}  # data only: raw YODAS2 to tokens, compared with the released documents


@dataclass(frozen=True)
class _Config:
    value: int = 0
    inputs: tuple = ()
    output_path: str = this_output_path()


def _noop(config):
    return None


def _diamond():
    a = ExecutorStep("raw/a", _noop, _Config(versioned(1)))
    b = ExecutorStep("documents/b", _noop, _Config(versioned(2), (output_path_of(a),)))
    c = ExecutorStep("documents/c", _noop, _Config(versioned(3), (output_path_of(a, "sub"),)))
    d = ExecutorStep("analysis/d", _noop, _Config(versioned(4), (output_path_of(b), output_path_of(c))))
    return a, b, c, d


def test_rewrite_dag_rewrites_each_step_once_and_keeps_shared_dependencies_shared():
    a, b, c, d = _diamond()
    seen = []

    def rule(step):
        seen.append(step.name)
        if step.name == "raw/a":
            return dataclasses.replace(step, config=dataclasses.replace(step.config, value=versioned(10)))
        return step

    (new_d,) = rewrite_dag([d], rule)
    assert seen == ["raw/a", "documents/b", "documents/c", "analysis/d"]
    order = topological_order([new_d])
    new_a = order[0]
    assert new_a.name == "raw/a" and unwrap_versioned(new_a.config.value) == 10
    # both middle steps point at the one rewritten raw/a (sub-path kept), not at the original
    b2, c2 = (s for s in order if s.name.startswith("documents/"))
    assert b2.config.inputs[0].step is new_a and c2.config.inputs[0].step is new_a
    assert c2.config.inputs[0].name == "sub"
    assert len(order) == 4
    # the rewrite moved raw/a and everything downstream of it to new hashes
    old_plan, new_plan = build_plan([d], "/p"), build_plan([new_d], "/p")
    assert {p.name: p.identity.hash for p in old_plan.steps}.keys() == {p.name: p.identity.hash for p in new_plan.steps}.keys()
    assert all(o.identity.hash != n.identity.hash for o, n in zip(old_plan.steps, new_plan.steps))
    assert unwrap_versioned(a.config.value) == 1  # the declared DAG is untouched


def test_rewrite_rule_must_return_a_step():
    _, _, _, d = _diamond()
    with pytest.raises(TypeError, match="raw/a"):
        rewrite_dag([d], lambda step: None)


# ---- the rehearsal scale on exp1699 -----------------------------------------------------------


@pytest.fixture(scope="module")
def exp1699():
    from experiments import exp1699_soda_all

    return exp1699_soda_all


def _steps_by_fn(roots):
    from steps.evaluate import evaluate
    from steps.training.train import train

    order = topological_order(roots)
    return order, [s for s in order if s.fn is train], [s for s in order if s.fn is evaluate]


def test_rehearsal_dag_of_exp1699_shrinks_training_and_evaluation(exp1699):
    from experiments.rehearsal import RehearsalScale, rehearsal_dag

    scale = RehearsalScale()
    before, trains_before, evals_before = _steps_by_fn(exp1699.STEPS)
    after, trains, evals = _steps_by_fn(rehearsal_dag(exp1699.STEPS, scale))
    assert len(after) == len(before) + 1  # every step kept, plus the random judges
    assert [s.name for s in trains] == [s.name for s in trains_before]
    widths = []
    for step in trains:
        c = step.config
        assert c.tpu == "v5p-16" and step.resources.tpu == "v5p-16"  # 2 hosts of 4 chips: a multi-host launch
        assert c.require_accelerator is False
        assert unwrap_versioned(c.batch_size) == scale.batch_size and unwrap_versioned(c.num_steps) == scale.train_steps
        assert unwrap_versioned(c.token_budget) is None and unwrap_versioned(c.seq_len) == scale.seq_len
        shape = unwrap_versioned(c.shape)
        assert shape.layers == scale.layers and shape.vocab_size == 144_644 and shape.qk_norm
        widths.append(shape.hidden)
    assert widths == [32, 64, 128, 160]  # the four SODA widths / 16: the models still differ in size
    judges = {s.config.tts_asr_judge.step for s in evals}
    assert len(judges) == 1 and next(iter(judges)).name == "judges/random-init"
    assert all(unwrap_versioned(s.config.mimi_model) == "random" and unwrap_versioned(s.config.max_examples) == 4 for s in evals)
    # the declared production DAG is untouched
    assert all(s.config.tpu in ("v5p-32", "v5p-64", "v5p-128", "v5p-256") for s in trains_before)
    assert all(s.config.mimi_model == "kyutai/mimi" for s in evals_before)


def test_rehearsal_keeps_data_paths_and_moves_model_paths(exp1699):
    from experiments.rehearsal import rehearsal_dag

    prod = {p.name: p.output_path for p in build_plan(exp1699.STEPS, "gs://b/x").steps}
    rehearsal = {p.name: p.output_path for p in build_plan(rehearsal_dag(exp1699.STEPS), "gs://b/x").steps}
    for name, path in prod.items():
        if name.split("/")[0] in ("raw", "documents", "tokenizer", "tokenized"):
            assert rehearsal[name] == path, name  # data stages run as declared
        else:
            assert rehearsal[name] != path, name  # models, evals, analyses never share a real run's path


def test_rehearsal_slice_is_the_smallest_multi_host_slice_of_the_generation():
    from experiments.rehearsal import rehearsal_slice
    from steps.training.launch import slice_spec

    assert rehearsal_slice("v5p-256") == "v5p-16" == rehearsal_slice("v5p-8")
    assert rehearsal_slice("v4-2048") == "v4-16"
    assert slice_spec(rehearsal_slice("v6e-256")).hosts >= 2
    with pytest.raises(ValueError, match="not like"):
        rehearsal_slice("a100")


def test_script_rehearsal_flag_is_applied_by_the_shared_main(tmp_path):
    done = subprocess.run([sys.executable, "experiments/exp1699_soda_all.py", "--dry-run", "--rehearsal",
                           "--prefix", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "judges/random-init" in done.stdout and "60 steps" in done.stdout
    plain = subprocess.run([sys.executable, "experiments/exp1699_soda_all.py", "--dry-run", "--prefix", str(tmp_path)],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "judges/random-init" not in plain.stdout and "59 steps" in plain.stdout


# ---- the local cluster from the cluster file ----------------------------------------------------


def test_local_nodes_mirror_the_cluster_file_scaled_down():
    from infra.rehearse import local_nodes

    head_cpus, nodes = local_nodes(str(CLUSTER_FILE), max_cpus=2)
    assert head_cpus == 0  # the file's head schedules only
    by_type = {}
    for n in nodes:
        by_type.setdefault(n.node_type, []).append(n)
    assert [n.num_cpus for n in by_type["cpu_worker"]] == [2]
    gpu = [n for n in nodes if n.num_gpus]
    assert gpu and all(n.num_gpus == 1 for n in gpu)
    tpu_hosts = [n for n in nodes if "TPU" in n.resources]
    assert len(tpu_hosts) == 2  # one rehearsal slice (v5p-16) for every v5p node type: 2 hosts
    assert tpu_hosts[0].resources["TPU-v5p-16-head"] == 1 and "TPU-v5p-16-head" not in tpu_hosts[1].resources
    assert all(h.resources["TPU"] == 4 and h.resources["rehearsal-v5p-16-0"] == 1 and
               h.resources["accelerator_type:TPU-V5P"] == 1 for h in tpu_hosts)
    assert all(h.env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4" for h in tpu_hosts)
    assert [h.labels["ray.io/tpu-worker-id"] for h in tpu_hosts] == ["0", "1"]


def test_local_fallbacks_finds_object_store_urls_used_as_local_paths(tmp_path):
    from infra.rehearse import local_fallbacks

    (tmp_path / "mirror" / "gs" / "cvss").mkdir(parents=True)  # a mirror's own layout: fine
    assert local_fallbacks(str(tmp_path)) == []
    os.makedirs(os.path.join(tmp_path, "driver", "gs://bucket/x/status"))  # what os.makedirs does with a URL
    assert local_fallbacks(str(tmp_path)) == [os.path.join(tmp_path, "driver", "gs:")]


# ---- the GCS emulator ---------------------------------------------------------------------------


def _post(url: str, data: bytes) -> int:
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/octet-stream"})
    try:
        return urllib.request.urlopen(req).status
    except urllib.error.HTTPError as e:
        return e.code


def test_gcs_emulator_answers_generation_preconditions_and_serves_the_stack(tmp_path):
    from infra.gcs_emulator import GcsEmulator
    from pipeline.fileio import atomic_write_json, read_json

    with GcsEmulator(buckets=["soda-test"]) as gcs:
        assert os.environ["TENSORSTORE_GCS_HTTP_URL"] == gcs.url == os.environ["STORAGE_EMULATOR_HOST"]
        create = f"{gcs.url}/upload/storage/v1/b/soda-test/o?uploadType=media&name=m/manifest&ifGenerationMatch=0"
        assert _post(create, b"first") == 200
        assert _post(create, b"second") == 412  # as GCS: the object exists (the bundled binary says 200)
        body = urllib.request.urlopen(f"{gcs.url}/storage/v1/b/soda-test/o/m%2Fmanifest?alt=media").read()
        assert body == b"first"
        atomic_write_json("gs://soda-test/x/summary.json", {"a": 1})  # gcsfs through the environment
        assert read_json("gs://soda-test/x/summary.json") == {"a": 1}
        assert gcs.download("soda-test", str(tmp_path)) == 2
        assert json.loads((tmp_path / "x" / "summary.json").read_text()) == {"a": 1}
    assert "STORAGE_EMULATOR_HOST" not in os.environ or os.environ["STORAGE_EMULATOR_HOST"] != gcs.url


# ---- the whole rehearsal ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.rehearsal
@pytest.mark.timeout(2700)
def test_soda_rehearse_exp1699_end_to_end(tmp_path):
    out = tmp_path / "bucket"
    done = _rehearse("exp1699_soda_all", out)
    last = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert last == "rehearsal: exp1699_soda_all 60 steps, 60 succeeded, 0 failed, prefix gs://soda-rehearsal/exp1699_soda_all"
    root = out / "exp1699_soda_all"
    summaries = sorted(root.glob("checkpoints/soda-*/summary.json"))
    assert len(summaries) == 4
    for path in summaries:
        summary = json.loads(path.read_text())
        assert summary["jax_process_count"] == 2 and summary["jax_device_count"] == 8, path
        assert summary["tpu"] == "v5p-16" and summary["steps"] == 8
        ckpt = path.parent / "checkpoints"
        assert sorted(p.name for p in ckpt.iterdir()) == ["step-4", "step-7"]  # multi-host OCDBT checkpoints
        assert (ckpt / "step-7" / "manifest.ocdbt").exists()
    assert len(list(root.glob("evaluation/*/summary.json"))) == 36
    assert list(root.glob("analysis/soda-correlations-*/correlations.json"))
    assert list(root.glob("experiments/exp1699_soda_all-*.html"))
    assert "[" in done.stdout and "steps done" in done.stdout  # progress while it ran


def _rehearse(script: str, out: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # Ray's default auth mode, as users have
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "soda"), "rehearse",
                           f"experiments/{script}.py", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=2600)


REHEARSED_ELSEWHERE = {"exp1699_soda_all"}  # its own rehearsal test, which checks more


@pytest.mark.slow
@pytest.mark.rehearsal
@pytest.mark.timeout(2700)
@pytest.mark.parametrize("script", [s for s in PRODUCTION_SCRIPTS if s not in REHEARSED_ELSEWHERE])
def test_soda_rehearse_every_other_production_script(script, tmp_path):
    """The other production scripts, each end to end: every step succeeds, every training (pre-training
    and fine-tuning) ran as one multi-process JAX job on the rehearsal slice, through the bucket."""
    done = _rehearse(script, tmp_path / "bucket")
    last = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    steps = int(last.split()[2])
    assert last == f"rehearsal: {script} {steps} steps, {steps} succeeded, 0 failed, prefix gs://soda-rehearsal/{script}"
    summaries = sorted((tmp_path / "bucket" / script).glob("checkpoints/*/summary.json"))
    assert bool(summaries) != (script in TRAINS_NOTHING)
    for path in summaries:
        summary = json.loads(path.read_text())
        assert summary["jax_process_count"] == 2 and summary["tpu"] == "v5p-16", path


def test_slow_tests_past_ci_deadline_are_skipped_not_run():
    """CI's budget (SODA_SLOW_DEADLINE, tests/conftest.py): a slow test due after it is skipped at once."""
    env = dict(os.environ, SODA_RUN_SLOW="1", SODA_SLOW_DEADLINE="0")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "tests/test_rehearsal.py::test_soda_rehearse_exp1699_end_to_end"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "1 skipped" in done.stdout and "SODA_SLOW_DEADLINE" in done.stdout


# ---- every production script's rehearsal DAG keeps its stages ----------------------------------

ADDED_KINDS = {"judges", "hub"}  # stand-ins for what the Hub holds: judges, base models


def _kind(step) -> str:
    return step.name.split("/", 1)[0]


def _graph(roots):
    from pipeline.identity import dependencies_of

    order = topological_order(roots)
    kinds = {(_kind(s), f"{s.fn.__module__}.{s.fn.__qualname__}") for s in order}
    edges = {(_kind(d), _kind(s)) for s in order for d in dependencies_of(s)}
    deps = {s.name: {d.name for d in dependencies_of(s)} for s in order}
    return kinds, edges, deps


@pytest.mark.parametrize("script", PRODUCTION_SCRIPTS)
def test_rehearsal_dag_keeps_every_kind_of_step_and_edge(script):
    """A rehearsal may shrink steps and drop sweep points, never a stage: the same step kinds (name prefix
    and function) and kind-to-kind edges as the production DAG; each kept step keeps its dependencies."""
    import importlib

    from experiments.rehearsal import rehearsal_dag

    steps = importlib.import_module(f"experiments.{script}").STEPS
    kinds, edges, deps = _graph(steps)
    r_kinds, r_edges, r_deps = _graph(rehearsal_dag(steps))
    assert {k for k in r_kinds if k[0] not in ADDED_KINDS} == kinds
    assert {e for e in r_edges if e[0] not in ADDED_KINDS} == edges
    for name, needed in r_deps.items():
        if name in deps:
            added = {d for d in needed if d.split("/", 1)[0] in ADDED_KINDS}
            assert needed - added <= deps[name], name
            dropped = deps[name] - needed  # only sweep points that the rehearsal leaves out
            assert all(d not in r_deps for d in dropped), (name, dropped)
