"""Real runs of a small DAG on a local Ray: caching, failures, reruns, dry runs, records."""

import io
import json
import logging
import os
import subprocess
import sys

import pytest

from pipeline import Executor, ExecutorError, ExecutorStep, ResourceConfig, this_output_path, versioned
from pipeline import fileio, storage
from pipeline.lease import LocalLease
from tests.executor_dag import GOLDEN_NAMES, ValueConfig, build, write_value

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": REPO}})
    yield
    ray.shutdown()


@pytest.fixture
def ledger(tmp_path):
    path = tmp_path / "ledger.txt"
    path.write_text("")
    return str(path)


def starts(ledger):
    return [line.split()[1] for line in open(ledger).read().splitlines() if line.startswith("start")]


def value_at(path):
    with open(os.path.join(path, "value.json")) as f:
        return json.load(f)["value"]


def tree(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            out[full] = os.stat(full).st_mtime_ns
    return out


def test_first_run_then_all_cached(prefix, ledger):
    executor = Executor(prefix, experiment_name="t")
    result = executor.run(build(ledger))
    assert sorted(result.names("succeeded")) == sorted(GOLDEN_NAMES.values())
    total = executor.output_paths[executor.steps[-1]]
    assert value_at(total) == 3
    assert storage.read_status(total).status == "SUCCESS"
    info = fileio.read_json(os.path.join(total, ".executor_info"), default=None)
    assert info["dependencies"] == {"inputs.0": GOLDEN_NAMES["tokenized/ab"]}
    assert info["config"]["out"] == total
    assert len(starts(ledger)) == 4

    again = Executor(prefix, experiment_name="t").run(build(ledger))
    assert sorted(again.names("cached")) == sorted(GOLDEN_NAMES.values())
    assert len(starts(ledger)) == 4  # nothing executed
    record = fileio.read_json(again.record_url, default=None)
    assert [r["status"] for r in record["runs"]] == ["succeeded", "succeeded"]
    assert record["order"][-1] == GOLDEN_NAMES["analysis/total"]
    assert os.path.exists(again.record_url[:-5] + ".html")


def test_failure_stops_descendants_and_rerun_after_fix_resumes(prefix, ledger, tmp_path):
    marker = tmp_path / "broken"
    marker.write_text("")
    with pytest.raises(ExecutorError) as info:
        Executor(prefix, experiment_name="t").run(build(ledger, fail_marker=str(marker)))
    assert "raw/b" in str(info.value) and "tokenized/ab" in str(info.value)
    assert sorted(starts(ledger)) == ["a-34e818db", "b-a442a9f6"]  # descendants never started
    b_path = os.path.join(prefix, GOLDEN_NAMES["raw/b"])
    status = storage.read_status(b_path)
    assert status.status == "FAILED"
    assert "deliberate failure" in status.traceback and "Traceback" in status.traceback

    with pytest.raises(ExecutorError, match="--force-run-failed is false"):
        Executor(prefix, experiment_name="t").run(build(ledger, fail_marker=str(marker)), force_run_failed=False)
    assert len(starts(ledger)) == 2

    marker.unlink()
    result = Executor(prefix, experiment_name="t").run(build(ledger, fail_marker=str(marker)))
    assert result.names("cached") == [GOLDEN_NAMES["raw/a"]]
    assert sorted(result.names("succeeded")) == sorted(
        GOLDEN_NAMES[n] for n in ("raw/b", "tokenized/ab", "analysis/total"))
    assert value_at(os.path.join(prefix, GOLDEN_NAMES["analysis/total"])) == 3


def test_unversioned_change_keeps_output_and_warns(prefix, ledger, caplog):
    Executor(prefix, experiment_name="t").run(build(ledger))
    with caplog.at_level(logging.WARNING, logger="pipeline.executor"):
        result = Executor(prefix, experiment_name="t").run(build(ledger, note="changed"))
    assert len(result.names("cached")) == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("raw/a-34e818db" in w and "note" in w for w in warnings), warnings


def test_dry_run_writes_nothing_and_explains(prefix, ledger):
    before = tree(prefix)
    out = io.StringIO()
    result = Executor(prefix, experiment_name="t").run(build(ledger), dry_run=True, out=out)
    assert tree(prefix) == before == {}
    assert "4 steps: 4 run" in out.getvalue()
    assert set(result.states.values()) == {"planned"}

    Executor(prefix, experiment_name="t").run(build(ledger))
    a_path = os.path.join(prefix, GOLDEN_NAMES["raw/a"])
    storage.write_status(os.path.join(prefix, GOLDEN_NAMES["raw/b"]), "RUNNING", "crashed-run")  # holder died
    held = LocalLease(a_path, "someone")  # a live holder of raw/a
    assert held.try_acquire()
    try:
        before = tree(prefix)
        out = io.StringIO()
        result = Executor(prefix, experiment_name="t").run(build(ledger, a=5), dry_run=True, out=out)
        text = out.getvalue()
        assert tree(prefix) == before
    finally:
        held.release()
    actions = {name.split("-")[0]: a.kind for name, a in result.actions.items()}
    assert actions == {"raw/a": "run", "raw/b": "take over", "tokenized/ab": "run", "analysis/total": "run"}
    assert "changed: versioned value: 1 -> 5" in text
    assert "changed: dependency inputs.0: raw/a-34e818db/value.json -> raw/a-" in text
    out = io.StringIO()
    Executor(prefix, experiment_name="t").run(build(ledger), dry_run=True, out=out)
    assert "wait" not in out.getvalue() and "take over" in out.getvalue()
    assert held.try_acquire()
    try:
        out = io.StringIO()
        result = Executor(prefix, experiment_name="t").run(build(ledger, a=1), dry_run=True, out=out)
        assert result.actions[GOLDEN_NAMES["raw/a"]].kind == "skip"  # SUCCESS outranks a lease
    finally:
        held.release()


def test_run_only_and_max_concurrent(prefix, ledger):
    result = Executor(prefix, experiment_name="t").run(build(ledger), run_only=["^raw/a$"])
    assert result.names("succeeded") == [GOLDEN_NAMES["raw/a"]]
    assert len(result.names("not selected")) == 3

    Executor(prefix, experiment_name="u").run(build(ledger, a=9, sleep=0.5), max_concurrent=1)
    lines = [line for line in open(ledger).read().splitlines()[2:] if line.split()[1].startswith(("a-", "b-"))]
    for first, second in zip(lines[::2], lines[1::2]):  # start x, end x, start y, end y: never interleaved
        assert first.split()[1] == second.split()[1] and first.startswith("start") and second.startswith("end")


def test_unschedulable_resources_fail_with_clear_error(prefix, ledger):
    step = ExecutorStep("train/big", write_value, ValueConfig(this_output_path(), versioned(1), ledger),
                        resources=ResourceConfig(tpu="v5p-64"))
    with pytest.raises(ExecutorError, match=r"TPU-v5p-64-head"):
        Executor(prefix, experiment_name="t").run([step])
    assert starts(ledger) == []


def test_secrets_never_reach_status_info_or_log(prefix, ledger, tmp_path, monkeypatch):
    secret = "hf_VerySecretTokenValue123"
    monkeypatch.setenv("HF_TOKEN", secret)
    marker = tmp_path / secret  # the failure message will contain the secret
    marker.write_text("")
    with pytest.raises(ExecutorError) as info:
        Executor(prefix, experiment_name="t").run(build(ledger, fail_marker=str(marker)))
    assert secret not in str(info.value)
    for dirpath, _, filenames in os.walk(prefix):
        for name in filenames:
            with open(os.path.join(dirpath, name), errors="replace") as f:
                assert secret not in f.read(), os.path.join(dirpath, name)


def test_unwritable_prefix_is_a_clear_error(tmp_path, ledger):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="cannot write to the executor prefix"):
        Executor(str(blocker / "prefix"), experiment_name="t").run(build(ledger))


def test_all_cached_rerun_starts_no_ray(prefix, ledger):
    code = ("import sys; sys.path.insert(0, %r); from tests.executor_dag import build; "
            "from pipeline import Executor; r = Executor(%r, experiment_name='t').run(build(%r)); "
            "print(len(r.names('cached')), 'ray' in sys.modules)" % (REPO, prefix, ledger))
    Executor(prefix, experiment_name="t").run(build(ledger))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["4", "False"]


def test_the_report_builder_the_caller_passes_writes_the_page_sections(prefix, ledger):
    """The executor knows no report of its own: a run without a builder has no report sections; with
    one, its sections (built from the finished record) are on the record and the page."""
    plain = Executor(prefix, experiment_name="plain").run(build(ledger))
    assert "sections" not in fileio.read_json(plain.record_url) or not fileio.read_json(plain.record_url)["sections"]

    def report(data):
        states = data["runs"][-1]["steps"]
        done = sorted(n for n, s in states.items() if s["status"] in ("succeeded", "cached"))
        return [{"title": "Steps done", "html": f"<p>{len(done)} done</p>", "markdown": f"{len(done)} done"}]

    result = Executor(prefix, experiment_name="reported", report=report).run(build(ledger))
    record = fileio.read_json(result.record_url)
    assert record["sections"] == [{"title": "Steps done", "html": "<p>4 done</p>", "markdown": "4 done",
                                   "source": "report"}]
    page = open(result.record_url[:-5] + ".html").read()
    assert "<h2>Steps done</h2><p>4 done</p>" in page
