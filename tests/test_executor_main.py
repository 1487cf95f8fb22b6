"""The experiment-script command line and `soda log`."""

import os
import subprocess
import sys

import pytest

from pipeline.main import ExecutorMainConfig, normalize_argv, parse_main_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tests", "executor_dag.py")


@pytest.mark.parametrize("argv, expected", [
    (["--dry-run"], ExecutorMainConfig(dry_run=True)),
    (["--dry_run", "false"], ExecutorMainConfig(dry_run=False)),
    (["--dry-run=true", "--prefix", "gs://b/p"], ExecutorMainConfig(dry_run=True, prefix="gs://b/p")),
    (["--run-only", "^raw/", "tok.*[0-9]"], ExecutorMainConfig(run_only=["^raw/", "tok.*[0-9]"])),
    (["--run-only", "a", "--dry-run"], ExecutorMainConfig(run_only=["a"], dry_run=True)),
    (["--force-run-failed", "false", "--max-concurrent", "3"],
     ExecutorMainConfig(force_run_failed=False, max_concurrent=3)),
    (["--ray-address=127.0.0.1:6379"], ExecutorMainConfig(ray_address="127.0.0.1:6379")),
])
def test_parse_main_config(argv, expected):
    assert parse_main_config(argv) == expected


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        normalize_argv(["--max-concurrent"])
    with pytest.raises(SystemExit):
        normalize_argv(["--dry-run", "yes", "no"])
    with pytest.raises(SystemExit):
        parse_main_config(["--no-such-option", "1"])


def run_script(*args, env=None, ledger):
    full_env = dict(os.environ, SODA_TEST_LEDGER=ledger, PYTHONPATH=REPO, **(env or {}))
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=120)


def test_script_dry_run_uses_soda_prefix_and_run_only(tmp_path):
    ledger = str(tmp_path / "ledger")
    prefix = str(tmp_path / "from-env")
    out = run_script("--dry-run", "--run-only", "^raw/a$", env={"SODA_PREFIX": prefix}, ledger=ledger)
    assert out.returncode == 0, out.stderr
    assert f"{prefix}/raw/a-34e818db" in out.stdout
    assert "4 steps: 1 run, 3 skip: not selected" in out.stdout
    assert not os.path.exists(prefix)


def test_script_failure_exits_nonzero_naming_steps_and_soda_log_reports_it(tmp_path):
    ledger = str(tmp_path / "ledger")
    marker = tmp_path / "broken"
    marker.write_text("")
    prefix = str(tmp_path / "p")
    out = run_script("--prefix", prefix, env={"SODA_TEST_FAIL_MARKER": str(marker)}, ledger=ledger)
    assert out.returncode == 1
    assert "raw/b-a442a9f6: RuntimeError: deliberate failure" in out.stderr
    assert "did not run because a dependency failed: tokenized/ab-e729381d, analysis/total-7148b74d" in out.stderr
    log = subprocess.run([sys.executable, "-m", "infra.cli", "log", prefix], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert log.returncode == 0, log.stderr
    assert "executor_dag" in log.stdout and "failed" in log.stdout
    assert "blocked" in log.stdout and "deliberate failure" in log.stdout
    assert log.stdout.strip().endswith(".html")
    html_path = log.stdout.strip().split("log page: ")[-1]
    page = open(html_path).read()
    assert "deliberate failure" in page and "tokenized/ab-e729381d" in page
    assert os.path.exists(html_path[:-5] + ".md")


def test_soda_log_without_records_says_so(tmp_path):
    out = subprocess.run([sys.executable, "-m", "infra.cli", "log", str(tmp_path)], capture_output=True,
                         text=True, cwd=REPO, timeout=60)
    assert out.returncode == 1 and "no experiment records" in out.stderr


def test_log_page_marks_plumbing_runs_and_their_descendants(tmp_path):
    from pipeline import ExecutorStep, this_output_path
    from pipeline.experiment_log import ExperimentRecord
    from pipeline.log_page import render_html, render_markdown
    from pipeline.plan import build_plan
    from tests.executor_dag import SumConfig, sum_values

    for plumbing, expected in (("random weights", True), (None, False)):
        encoded = ExecutorStep("encoded/x", sum_values, SumConfig([], this_output_path(), "/l"), plumbing=plumbing)
        tokenized = ExecutorStep("tokenized/x", sum_values, SumConfig([encoded], this_output_path(), "/l"))
        unrelated = ExecutorStep("raw/y", sum_values, SumConfig([], this_output_path(), "/l"))
        plan = build_plan([tokenized, unrelated], str(tmp_path))
        record = ExperimentRecord(str(tmp_path), "t", plan, "d", "run")
        marked = [name.split("-")[0] for name in record.data["plumbing_steps"]]
        assert marked == (["encoded/x", "tokenized/x"] if expected else [])
        assert ("PLUMBING RUN: 2 step(s) are marked as not meaningful or are built on one that is (random weights)"
                in render_html(record.data)) is expected
        assert ("PLUMBING RUN" in render_markdown(record.data)) is expected
