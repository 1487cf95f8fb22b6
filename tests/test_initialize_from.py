"""A run that continues another run's train state (TrainConfig.initialize_from): which checkpoint it
picks, that Levanter is told to load it, and (slow) that training continues that state: same step,
same loss at the first step after it, as the source run had."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from steps.training.mixtures import FINAL, PRELIM, anneal_start_step, mixture
from steps.training.train import build_train_lm_config, checkpoint_to_initialize_from
from steps.training.train_config import TrainConfig, resolve


def _run_with_checkpoints(root: Path, steps: list[int], incomplete: tuple[int, ...] = ()) -> str:
    for step in steps:
        d = root / "checkpoints" / f"step-{step}"
        d.mkdir(parents=True)
        if step not in incomplete:
            (d / "metadata.json").write_text("{}")
    return str(root)


def _config(**kw) -> TrainConfig:
    args = dict(caches={s: f"/c/{s}" for s in [*FINAL.active_sources, *PRELIM.active_sources]}, tokenizer="/t",
                preset="soda-600m", mixture=PRELIM, batch_size=512, num_steps=238_419)
    args.update(kw)
    return TrainConfig(**args)


def test_an_annealed_run_starts_from_the_sources_last_checkpoint_before_its_decay(tmp_path):
    anneal_at = anneal_start_step(238_419, 512)
    assert anneal_at == 190_736
    source = _run_with_checkpoints(tmp_path / "prelim", [180_000, 190_000, 190_736, 200_000, 238_419])
    config = _config(anneal_mixture=FINAL, initialize_from=source)
    assert checkpoint_to_initialize_from(config, resolve(config)) == f"{source}/checkpoints/step-190000"
    # without annealing: the source's latest; a checkpoint given directly: itself
    plain = _config(initialize_from=source)
    assert checkpoint_to_initialize_from(plain, resolve(plain)) == f"{source}/checkpoints/step-238419"
    direct = _config(initialize_from=f"{source}/checkpoints/step-180000")
    assert checkpoint_to_initialize_from(direct, resolve(direct)) == f"{source}/checkpoints/step-180000"


def test_an_incomplete_checkpoint_is_never_picked_and_none_is_an_error_naming_what_is_there(tmp_path):
    source = _run_with_checkpoints(tmp_path / "prelim", [180_000, 190_000], incomplete=(190_000,))
    config = _config(anneal_mixture=FINAL, initialize_from=source)
    assert checkpoint_to_initialize_from(config, resolve(config)).endswith("step-180000")
    late = _run_with_checkpoints(tmp_path / "late", [200_000])
    config = _config(anneal_mixture=FINAL, initialize_from=late)
    with pytest.raises(ValueError, match=r"no complete checkpoint before step 190736 .*\[200000\]"):
        checkpoint_to_initialize_from(config, resolve(config))


def test_warm_start_and_initialize_from_are_exclusive():
    with pytest.raises(ValueError, match="at most one of warm_start_hf"):
        resolve(_config(warm_start_hf="Qwen/Qwen3-0.6B-Base", initialize_from="/runs/prelim"))


def test_levanter_is_told_to_load_the_whole_train_state(tmp_path):
    from tokenizer.testing import qwen_style_extended_dir

    tok = qwen_style_extended_dir(str(tmp_path))
    config = TrainConfig(caches={"emilia-en": str(tmp_path / "a")}, tokenizer=tok, preset="tiny",
                         mixture=mixture("a", {"emilia-en": 1.0}), batch_size=4, num_steps=10,
                         output_path=str(tmp_path / "out"))
    lm = build_train_lm_config(config, resolve(config, vocab_size=16_842), init_checkpoint="/runs/p/checkpoints/step-4")
    assert lm.trainer.initialize_from == "/runs/p/checkpoints/step-4"
    assert lm.initialize_from_hf is False and lm.initialize_from_checkpoint_path is None  # not a model-only load


def test_source_annealing_continues_soda_prelim():
    import importlib

    from pipeline.plan import build_plan

    exp = importlib.import_module("experiments.exp8_source_annealing")
    plan = build_plan(exp.STEPS, "/p")
    prelim = plan.of(exp.prelim)
    for source, step in exp.annealed.items():
        config = plan.of(step).concrete_config(plan.paths)
        assert config.initialize_from == prelim.output_path
        assert prelim in plan.of(step).dependencies  # a versioned dependency: its identity is in the hash
        assert config.anneal_mixture.name == f"source-{source}"


# ---- the real thing, on CPU (slow) ----------------------------------------------------------

@pytest.fixture
def base_tokenizer(tmp_path):
    from tokenizer.testing import make_tiny_qwen_style_tokenizer_dir

    return make_tiny_qwen_style_tokenizer_dir(str(tmp_path / "tiny-qwen-base"))


@pytest.mark.slow  # about 2 minutes: data steps and two short CPU training runs
def test_a_run_initialized_from_another_continues_its_state(prefix, base_tokenizer):
    import dataclasses

    from pipeline import Executor, ExecutorStep, output_path_of
    from tests.test_train_step import CHECKPOINT_EVERY, pipeline_steps

    *data, source = pipeline_steps(base_tokenizer, num_steps=2 * CHECKPOINT_EVERY)
    cont = ExecutorStep("checkpoints/tiny-continued", source.fn, dataclasses.replace(
        source.config, initialize_from=output_path_of(source, f"checkpoints/step-{CHECKPOINT_EVERY}")),
        resources=source.resources)
    Executor(prefix, experiment_name="initialize-from").run([*data, source, cont])

    def rows(step_name):
        (out,) = Path(prefix).glob(f"checkpoints/{step_name}-*")
        return out, [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]

    src_dir, src_rows = rows("tiny-local")
    out, cont_rows = rows("tiny-continued")
    sessions = [json.loads(x) for x in (out / "train_sessions.jsonl").read_text().splitlines()]
    assert sessions[0]["first_step"] > 0  # not from step 0: from the source's step-10 state
    first = cont_rows[0]["step"]
    src_loss = {r["step"]: r["train/loss"] for r in src_rows if "train/loss" in r}
    cont_loss = {r["step"]: r["train/loss"] for r in cont_rows if "train/loss" in r}
    assert first == sessions[0]["first_step"] and first in src_loss
    for step in range(first, first + 3):  # same parameters, optimizer state and batches as the source run
        assert cont_loss[step] == pytest.approx(src_loss[step], rel=1e-4), step
    summary = json.loads((out / "summary.json").read_text())
    assert summary["initialized_from"] == os.path.join(str(src_dir), "checkpoints", f"step-{CHECKPOINT_EVERY}")
