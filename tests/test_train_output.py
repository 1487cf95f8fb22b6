"""steps.training.train_output: the one reader of a train step's layout (checkpoints, HF exports, summary)."""

import json

import pytest

from steps.training.train_output import TrainOutput, is_checkpoint, latest_checkpoint_of


def _run(root):
    for step, complete in ((5, True), (7, True), (10, False), (12, True)):
        d = root / "checkpoints" / f"step-{step}"
        d.mkdir(parents=True)
        if complete:
            (d / "metadata.json").write_text("{}")
    (root / "checkpoints" / "not-a-step").mkdir()
    for step in (7, 12):
        (root / "hf" / f"step-{step}").mkdir(parents=True)
    (root / "hf" / "step-7" / "config.json").write_text("{}")  # step-12's export is unfinished
    (root / "summary.json").write_text(json.dumps({"plumbing_run": True, "steps": 12}))
    return TrainOutput(str(root))


def test_latest_complete_checkpoint_and_export_by_step_number(tmp_path):
    run = _run(tmp_path / "run")
    assert [s for s, _ in run.checkpoints()] == [5, 7, 12]  # by number, not by name (12 after 7)
    assert run.latest_checkpoint() == str(tmp_path / "run" / "checkpoints" / "step-12")
    assert run.latest_hf_export() == str(tmp_path / "run" / "hf" / "step-7")
    assert run.summary()["steps"] == 12 and run.is_plumbing()


def test_a_checkpoint_or_export_leads_back_to_its_run(tmp_path):
    run = _run(tmp_path / "run")
    for inner in ("checkpoints/step-5", "hf/step-7", ""):
        found = TrainOutput.of(str(tmp_path / "run" / inner))
        assert found is not None and found.path == run.path
    assert TrainOutput.of(str(tmp_path / "run" / "checkpoints")) is None  # not a step-N directory
    assert TrainOutput.of(str(tmp_path)) is None and TrainOutput.of("") is None


def test_latest_checkpoint_of_a_checkpoint_a_run_or_nothing(tmp_path):
    run = _run(tmp_path / "run")
    five = str(tmp_path / "run" / "checkpoints" / "step-5")
    assert is_checkpoint(five) and latest_checkpoint_of(five) == five
    assert latest_checkpoint_of(run.path) == run.latest_checkpoint()
    assert latest_checkpoint_of(str(tmp_path / "run" / "checkpoints")).endswith("step-12")
    with pytest.raises(FileNotFoundError, match="no Levanter checkpoint"):
        latest_checkpoint_of(str(tmp_path / "empty"))
    fresh = TrainOutput(str(tmp_path / "fresh"))
    assert fresh.checkpoints() == [] and fresh.latest_hf_export() is None and not fresh.is_plumbing()
    with pytest.raises(FileNotFoundError):
        fresh.summary()
