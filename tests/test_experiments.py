"""Every experiment script's dry run: it plans, writes nothing and imports no framework."""

import glob
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(p for p in glob.glob(os.path.join(REPO, "experiments", "*.py"))
                 if 'if __name__ == "__main__"' in open(p).read())  # scripts, not shared modules
HEAVY = ("ray", "jax", "torch", "transformers", "levanter", "datasets")


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_dry_run_plans_and_writes_nothing(script, tmp_path):
    prefix = tmp_path / "prefix"
    out = subprocess.run([sys.executable, script, "--dry-run", "--prefix", str(prefix)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.split()[1] == "steps:" and int(last.split()[0]) >= 5, out.stdout
    assert not prefix.exists()


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_importing_a_script_loads_no_framework(script):
    code = (f"import runpy, sys; sys.argv = [{script!r}]; runpy.run_path({script!r}, run_name='not_main'); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_isoflop_sweep_analysis_reads_every_train_and_nll_eval_of_the_grid():
    import importlib

    from pipeline.plan import build_plan
    from steps.scaling.grid import PAPER_TRAINING_BUDGETS, IsoFlopGridConfig, isoflop_grid

    sweep = importlib.import_module("experiments.exp7_isoflop_sweep")
    plan = build_plan(sweep.STEPS, "/p")
    fits = plan.of(sweep.fits)
    config = fits.concrete_config(plan.paths)
    points = isoflop_grid(IsoFlopGridConfig(budgets=PAPER_TRAINING_BUDGETS))
    assert len(config.runs) == len(points) == 59
    by_path = {p.output_path: p for p in plan.steps}
    for run, point in zip(config.runs, points):
        train = by_path[run.train]
        assert train.name == f"checkpoints/{point.name}"
        assert train.identity.versioned["num_steps"] == point.steps
        assert train.identity.versioned["batch_size"] == point.batch
        assert train.concrete_config(plan.paths).shape == point.shape  # the shape whose FLOPs were counted
        nll = by_path[run.evals["validation_nll"]]
        assert nll.name.startswith("evaluation/validation_nll-") and train in nll.dependencies
        assert train in fits.dependencies and nll in fits.dependencies


def test_an_isoflop_run_trains_its_grid_points_own_shape_under_any_grid_setting():
    """With a non-default head width and MLP ratio, the shape rebuilt from a preset name
    (`isoflop-d<width>`, default grid rules) is another model than the one the grid counted."""
    from experiments.defaults import isoflop_train
    from experiments.soda_data import tokenized, tokenizer
    from pipeline.plan import build_plan
    from steps.scaling.grid import IsoFlopGridConfig, isoflop_grid, shape_for_width
    from steps.training.mixtures import FINAL
    from steps.training.train_config import resolve

    grid = IsoFlopGridConfig(budgets=(3e18,), head_width=64, mlp_ratio=3, steps_per_run=2**12)
    points = isoflop_grid(grid)
    assert points
    for point in points:
        assert shape_for_width(point.hidden) != point.shape  # what a preset name would have trained
        plan = build_plan([isoflop_train(point, caches=tokenized, tokenizer=tokenizer, mixture=FINAL)], "/p")
        config = plan.steps[-1].concrete_config(plan.paths)
        assert config.shape == point.shape
        resolved = resolve(config, vocab_size=point.vocab_size)
        assert resolved.shape == point.shape and resolved.num_steps == point.steps
        assert resolved.learning_rate == point.lr


def test_default_train_versions_what_changes_the_model_and_refuses_the_rest():
    from experiments.defaults import default_train
    from experiments.soda_data import tokenized, tokenizer
    from pipeline.plan import build_plan
    from steps.training.mixtures import FINAL

    def run(**kw):
        args = dict(caches=tokenized, tokenizer=tokenizer, mixture=FINAL, batch_size=8, num_steps=10, preset="tiny")
        args.update(kw)
        return build_plan([default_train("t", **args)], "/p").steps[-1]

    base = run()
    assert run(checkpoint_every_steps=5).versioned_name == base.versioned_name  # cadence: same model
    for change in (dict(mp="f32"), dict(seq_len=128), dict(seed=1), dict(batch_size=16)):
        assert run(**change).versioned_name != base.versioned_name, change
    with pytest.raises(TypeError, match="learning_rate"):
        run(learning_rate=1e-3)
    with pytest.raises(ValueError, match="exactly one of preset, shape, warm_start_hf"):
        run(warm_start_hf="Qwen/Qwen3-0.6B-Base")


def test_s2st_finetune_builds_on_the_soda_runs_and_the_cvss_t_sft_cache():
    import importlib

    from pipeline.plan import build_plan

    exp = importlib.import_module("experiments.exp10_s2st_finetune")
    soda = importlib.import_module("experiments.exp1699_soda_all")
    plan = build_plan(exp.STEPS, "/p")
    assert len(exp.finetuned) == 4
    for size, step in exp.finetuned.items():
        node = plan.of(step)
        config = node.concrete_config(plan.paths)
        assert config.init_from == plan.of(soda.models[size]).output_path  # the same pre-training run
        assert config.data == plan.of(exp.sft_data).output_path
        assert node.identity.versioned["recipe"]["learning_rate"] == exp.RECIPE.learning_rate
    sft = plan.of(exp.sft_data).concrete_config(plan.paths)
    assert sft.pairs_path == plan.of(exp.pairs).output_path and sft.mimi_model == "kyutai/mimi"
    prepare = plan.of(exp.pairs).concrete_config(plan.paths)
    assert prepare.variant == "cvss_t" and prepare.languages == ("fr", "es", "de")
    assert plan.of(exp.cvss).concrete_config(plan.paths).source_url == "gs://cvss"
    for size, step in exp.evals.items():  # each fine-tune is scored on the prepared CVSS-T pairs
        config = plan.of(step).concrete_config(plan.paths)
        assert config.task == "s2st" and config.split is None  # the task's default split: test
        assert config.model_path == plan.of(exp.finetuned[size]).output_path
        assert config.dataset_path == plan.of(exp.pairs).output_path
        assert step.resources.gpus == 1
