"""Summary files are strict JSON: a NaN is written as null, with a count of what was missing.

Each writer (the executor's status/info/record writer, the steps' summary and stats writer, the
training tracker's metrics.jsonl) is fed NaN and infinities; its file must parse with a parser that
refuses `NaN`/`Infinity` (as jq, JavaScript and BigQuery do), hold null there and count it under
`non_finite`; and the readers downstream (the scaling analysis, the experiment log's report) must
take the null as missing.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from pipeline import storage, strict_json
from steps import report
from pipeline import fileio
from steps.scaling.analysis import NLL_METRIC, NLL_TASK, RunRef, read_run
from steps.training.metrics import METRICS_FILE, JsonlMetricsTracker, read_jsonl

NAN, INF = float("nan"), float("inf")


def strict_loads(text: str):
    """json.loads that fails on NaN, Infinity and -Infinity, as every non-Python JSON reader does."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def read_strict(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return strict_loads(f.read())


SUMMARY = {"task": "asr", "metrics": {"wer": NAN, "acc": 0.5}, "losses": [1.0, NAN, INF, -INF, np.float32("nan")],
           "n": 3, "ok": True, "name": "nan"}
COUNTS = {"metrics.wer": {"nan": 1}, "losses[]": {"nan": 2, "inf": 1, "-inf": 1}}


@pytest.mark.parametrize("writer", [storage.write_json_atomic, fileio.atomic_write_json])
def test_writers_write_null_and_count_it(tmp_path, writer):
    path = tmp_path / "summary.json"
    writer(str(path), SUMMARY)
    data = read_strict(path)
    assert data["metrics"] == {"wer": None, "acc": 0.5}
    assert data["losses"] == [1.0, None, None, None, None]
    assert data["non_finite"] == COUNTS
    assert (data["n"], data["ok"], data["name"]) == (3, True, "nan")  # a string "nan" is left alone
    # a summary read back, changed and rewritten keeps the counts of the nulls it already had
    data["extra"] = -INF
    writer(str(path), data)
    assert read_strict(path)["non_finite"] == {**COUNTS, "extra": {"-inf": 1}}


def test_non_finite_keys_and_a_top_level_list(caplog):
    assert strict_loads(strict_json.dumps({NAN: 1, 2.5: 2})) == {"nan": 1, "2.5": 2}
    with caplog.at_level(logging.WARNING, logger="pipeline.strict_json"):
        assert strict_loads(strict_json.dumps([1.0, NAN])) == [1.0, None]
    assert "'[]': {'nan': 1}" in caplog.text  # no object to hold the count: it is logged
    assert strict_json.dumps({"a": 1.5}) == '{"a": 1.5}'  # nothing non-finite: no extra field


def test_metrics_jsonl_lines_are_strict(tmp_path):
    tracker = JsonlMetricsTracker(str(tmp_path))
    tracker.log({"train/loss": np.float32("nan"), "lr": 1e-3}, step=0)
    tracker.log({"train/loss": 2.0, "throughput": {"tokens_per_s": INF}}, step=1)
    tracker.finish()
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    rows = [strict_loads(line) for line in lines]
    assert rows[0] == {"step": 0, "train/loss": None, "lr": 1e-3, "non_finite": {"train/loss": {"nan": 1}}}
    assert rows[1] == {"step": 1, "train/loss": 2.0, "throughput/tokens_per_s": None,
                       "non_finite": {"throughput/tokens_per_s": {"inf": 1}}}
    assert read_jsonl(str(tmp_path / METRICS_FILE)) == rows


def _eval_summary(path, task: str, metrics: dict) -> str:
    fileio.atomic_write_json(f"{path}/summary.json", {"task": task, "metrics": metrics})
    return str(path)


def test_scaling_analysis_reads_null_as_missing(tmp_path):
    train = tmp_path / "train"
    fileio.atomic_write_json(f"{train}/summary.json", {"params_total": 10, "params_nonembedding": 8,
                                                         "tokens": 100, "training_flops": 4800.0})
    evals = {"nll": _eval_summary(tmp_path / "nll", NLL_TASK, {NLL_METRIC: NAN}),
             "asr": _eval_summary(tmp_path / "asr", "asr", {"wer": INF, "cer": 0.25})}
    row, metrics, problem = read_run(RunRef(budget=0, train=str(train), evals=evals))
    assert row["loss"] is None and problem == f"{tmp_path}/nll/summary.json: metrics.{NLL_METRIC} is None"
    assert metrics == {"asr/cer": 0.25}  # the missing WER is left out, not fitted as a number


def test_report_reads_null_as_missing(tmp_path):
    asr = _eval_summary(tmp_path / "asr", "asr", {"wer": NAN})
    sblimp = _eval_summary(tmp_path / "sblimp", "sblimp", {"acc": 0.75})
    fits = tmp_path / "fits"
    fileio.atomic_write_json(f"{fits}/summary.json", {
        "runs": 3, "budgets": [1e18, NAN], "approach3": {"alpha": NAN, "beta": 0.4},
        "intervals": {"approach3": {"alpha": [NAN, 0.7], "beta": [0.3, 0.5], "level": 0.95}}})
    steps = {"evaluation/asr": {"fn": report.EVAL_FN, "output_path": asr, "config": {"model_path": "/m/tiny"}},
             "evaluation/sblimp": {"fn": report.EVAL_FN, "output_path": sblimp, "config": {"model_path": "/m/tiny"}},
             "analysis/fits": {"fn": report.FITS_FN, "output_path": str(fits)}}
    sections = {s["title"]: s["markdown"] for s in report.build_sections({"order": list(steps), "steps": steps})}
    results = sections["Results: model x metric"]
    assert "| tiny | 75.0 | - |" in results  # sBLIMP shown, ASR WER missing
    fitted = sections["Scaling laws (analysis/fits)"]
    assert "budgets 1.0e+18, -;" in fitted
    assert "| approach3 | alpha | - | - |" in fitted and "| approach3 | beta | 0.400 | [0.300, 0.500] |" in fitted


def test_a_diverged_runs_final_loss_is_null_and_counted_not_an_earlier_finite_loss(tmp_path):
    from steps.training.train import write_summary
    from steps.training.train_config import TrainConfig, resolve

    config = TrainConfig(caches={name: "unused" for name in ("yodas2-en", "emilia-yodas-en", "emilia-en",
                                                           "nemotron-cc-hq-actual")},
                         tokenizer="unused", preset="tiny", batch_size=4,
                         num_steps=3, seq_len=64, output_path=str(tmp_path))
    rows = [{"step": 0, "train/loss": 9.0}, {"step": 1, "train/loss": 7.5}, {"step": 2, "train/loss": NAN}]
    with open(tmp_path / METRICS_FILE, "w") as f:
        f.writelines(strict_json.dumps(row) + "\n" for row in rows)  # as the tracker writes them: null
    write_summary(config, resolve(config, vocab_size=1000))
    summary = strict_loads((tmp_path / "summary.json").read_text())
    assert summary["first_loss"] == 9.0 and summary["final_loss"] is None and summary["steps"] == 3
    assert summary["non_finite"]["final_loss"] == {"nan": 1}
