"""Experiment records that are corrupt, incomplete or left `running` by a killed executor.

A corrupt record of the experiment being run is moved aside and never stops the run; `soda log`
skips and names unreadable records of other experiments, shows records with missing fields, and
shows a run whose executor died (kill -9 mid-step, or between steps) as `died`.
"""

import glob
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from pipeline import Executor, fileio, storage
from pipeline.experiment_log import ExperimentRecord, cli_main
from pipeline.record_store import record_path
from pipeline.lease import LocalLease, new_owner_id
from pipeline.log_page import render_html, render_markdown
from pipeline.plan import build_plan
from pipeline.record_check import executor_gone, read_record
from tests.executor_dag import GOLDEN_NAMES, build
from tests.fault_harness import wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tests", "executor_dag.py")


def cached_dag(prefix, ledger):
    """The test DAG with every step already SUCCESS, so the executor runs it without starting Ray."""
    steps = build(ledger)
    plan = build_plan(steps, prefix)
    for p in plan.steps:
        storage.write_status(p.output_path, storage.SUCCESS, "an-earlier-run")
    return steps, plan


def soda_log(capsys, *argv):
    rc = cli_main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


CORRUPTIONS = {  # name -> (bytes from the good record's bytes, a phrase of the reason given)
    "cut short": (lambda good: good[: len(good) // 2], "not valid JSON"),
    "a JSON list": (lambda good: b"[1, 2, 3]\n", "not a JSON object but a list"),
    "binary junk": (lambda good: bytes(range(256)) * 8, "not UTF-8"),
    "empty": (lambda good: b"", "empty file"),
    "nested too deep": (lambda good: b"[" * 200_000, "nested too deeply"),
    "a newer schema": (lambda good: json.dumps({**json.loads(good), "schema": 2}).encode(), "a newer version wrote it"),
    "an older schema": (lambda good: json.dumps({**json.loads(good), "schema": 0}).encode(), "schema 0"),
    "runs not a list": (lambda good: json.dumps({**json.loads(good), "runs": "yesterday"}).encode(),
                        "runs is a string, not a list"),
    "a run's start a string": (
        lambda good: json.dumps({**json.loads(good), "runs": [
            {**r, "steps": {n: {**s, "start": "noon"} for n, s in r["steps"].items()}}
            for r in json.loads(good)["runs"]]}).encode(), ".start is a string, not a number or null"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_record_of_this_experiment_is_moved_aside_and_the_run_goes_on(prefix, ledger, kind, caplog,
                                                                               capsys):
    steps, plan = cached_dag(prefix, ledger)
    Executor(prefix, experiment_name="t").run(steps)
    url = record_path(prefix, "t", plan.dag_hash())
    make, reason = CORRUPTIONS[kind]
    corrupt = make(open(url, "rb").read())
    with open(url, "wb") as f:
        f.write(corrupt)

    with caplog.at_level(logging.WARNING):
        result = Executor(prefix, experiment_name="t").run(steps)
    assert sorted(result.names("cached")) == sorted(GOLDEN_NAMES.values())
    aside = glob.glob(url[: -len(".json")] + ".corrupt-*.json")
    assert len(aside) == 1 and open(aside[0], "rb").read() == corrupt  # kept byte for byte
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "moved aside" in r.getMessage()]
    assert len(warnings) == 1 and url in warnings[0] and aside[0] in warnings[0] and reason in warnings[0], warnings
    fresh = read_record(url)
    assert [r["status"] for r in fresh["runs"]] == ["succeeded"] and fresh["schema"] == 1
    rc, out, err = soda_log(capsys, prefix)  # the moved-aside file is not a record
    assert rc == 0 and "succeeded" in out and "corrupt" not in err


def test_corrupt_record_that_cannot_be_moved_is_left_untouched(prefix, ledger, caplog, monkeypatch):
    steps, plan = cached_dag(prefix, ledger)
    url = record_path(prefix, "t", plan.dag_hash())
    os.makedirs(os.path.dirname(url))
    with open(url, "wb") as f:
        f.write(b"\x00junk")
    Executor(prefix, experiment_name="t").run(steps, dry_run=True)  # a dry run only reports it

    def refuse(url):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("pipeline.experiment_log.set_aside", refuse)
    with caplog.at_level(logging.WARNING):
        result = Executor(prefix, experiment_name="t").run(steps)
    assert len(result.names("cached")) == 4
    assert open(url, "rb").read() == b"\x00junk" and os.listdir(os.path.dirname(url)) == [os.path.basename(url)]
    assert any(r.levelno == logging.ERROR and "could not be moved aside" in r.getMessage() and url in r.getMessage()
               for r in caplog.records)


def test_corrupt_record_on_an_object_store_is_moved_aside_there(ledger, caplog):
    prefix = f"memory://soda-test-{uuid.uuid4().hex[:8]}/prefix"
    plan = build_plan(build(ledger), prefix)
    url = record_path(prefix, "t", plan.dag_hash())
    fileio.atomic_write_text(url, '{"schema": 1, "runs": [')
    with caplog.at_level(logging.WARNING):
        record = ExperimentRecord(prefix, "t", plan, "d", new_owner_id())
    assert record.data["runs"] == [record.run]
    record.save()
    fs, experiments = fileio.url_to_fs(url.rsplit("/", 1)[0])
    aside = [p for p in fs.ls(experiments, detail=False) if ".corrupt-" in p]
    assert len(aside) == 1 and fs.cat_file(aside[0]) == b'{"schema": 1, "runs": ['
    assert any("moved aside" in r.getMessage() and url in r.getMessage() for r in caplog.records)
    assert read_record(url)["runs"][0]["run_lease"] is True  # a heartbeat lease while it runs
    record.finish("succeeded")
    assert read_record(url)["runs"][0]["status"] == "succeeded"
    assert not [p for p in fs.find(experiments) if "/.runs/" in p]  # its lease is gone


def test_on_an_object_store_a_run_dies_when_its_heartbeat_goes_stale():
    prefix = f"memory://soda-test-{uuid.uuid4().hex[:8]}/prefix"
    url = record_path(prefix, "t", "0123abcd")
    lease = f"{prefix}/experiments/.runs/elsewhere-7-0123abcd/.executor_lease"
    for age, died in ((10, False), (200, True)):  # the heartbeat lease's ttl is 90 s
        beat = time.time() - age
        fileio.atomic_write_text(lease, json.dumps({"holder": "elsewhere-7-0123abcd", "host": "elsewhere", "pid": 7,
                                                     "since": beat - 60, "heartbeat": beat}))
        run = {"run_id": "elsewhere-7-0123abcd", "status": "running", "host": "elsewhere", "run_lease": True}
        assert executor_gone(run, {}, url) is died


def test_soda_log_skips_and_names_unreadable_records_of_other_experiments(prefix, ledger, capsys):
    steps, _ = cached_dag(prefix, ledger)
    Executor(prefix, experiment_name="good").run(steps)
    experiments = os.path.join(prefix, "experiments")
    good = open(glob.glob(os.path.join(experiments, "good-*.json"))[0], "rb").read()
    bad = {"cut-0123abcd.json": good[:300], "alist-4567abcd.json": b"[]",
           "junk-89abcdef.json": os.urandom(64) + b"\xff\xfe", "typed-01234567.json": b'{"runs": [{"steps": 3}]}'}
    for name, content in bad.items():
        with open(os.path.join(experiments, name), "wb") as f:
            f.write(content)

    rc, out, err = soda_log(capsys, prefix)
    assert rc == 0 and "experiment  good" in out and "succeeded" in out
    lines = err.strip().splitlines()
    assert len(lines) == 4, err
    for name, reason in (("cut-0123abcd", "not valid JSON"), ("alist-4567abcd", "not a JSON object but a list"),
                         ("junk-89abcdef", "not UTF-8"), ("typed-01234567", "runs[0].steps is a number")):
        assert any(os.path.join(experiments, name + ".json") in line and reason in line for line in lines), (name, err)

    rc, out, err = soda_log(capsys, prefix, "--index")
    assert rc == 0 and "good-" in out and len(err.strip().splitlines()) == 4

    rc, out, err = soda_log(capsys, os.path.join(experiments, "alist-4567abcd.json"))
    assert rc == 1 and "alist-4567abcd.json" in err and "not a JSON object" in err

    for name in os.listdir(experiments):
        if name.startswith("good-") and name.endswith(".json"):
            os.unlink(os.path.join(experiments, name))
    rc, out, err = soda_log(capsys, prefix)
    assert rc == 1 and "no readable experiment records (4 unreadable)" in err and "cut-0123abcd.json" in err


MISSING = {  # record -> what its text must show
    "a run without steps, git, command or times": (
        {"schema": 1, "experiment": "m1", "dag_hash": "a1", "order": ["s-1"],
         "steps": {"s-1": {"name": "s", "output_path": "/o"}}, "runs": [{"run_id": "r1", "status": "succeeded"}]},
        ["experiment  m1", "r1  succeeded", "s-1", "/o"]),
    "a step without start, no steps at the top": (
        {"schema": 1, "experiment": "m2", "dag_hash": "a2",
         "runs": [{"run_id": "r2", "status": "failed", "steps": {"s-2": {"status": "failed", "end": 5.0}}}]},
        ["r2  failed", "failed     s-2", "failed: s-2"]),
    "no runs": ({"schema": 1, "experiment": "m3", "dag_hash": "a3", "steps": {"s-3": {"output_path": "/p"}}},
                ["experiment  m3", "none recorded", "s-3"]),
    "nothing at all": ({}, ["experiment  ?", "none recorded"]),
}


@pytest.mark.parametrize("kind", list(MISSING))
def test_soda_log_shows_records_with_missing_fields(prefix, kind, capsys):
    data, shown = MISSING[kind]
    url = os.path.join(prefix, "experiments", "rec-0123abcd.json")
    os.makedirs(os.path.dirname(url))
    with open(url, "w") as f:
        json.dump(data, f)
    for target in (url, prefix):
        rc, out, err = soda_log(capsys, target)
        assert rc == 0, err
        for text in shown:
            assert text in out, (text, out)
    assert render_html(data).endswith("</html>\n") and render_markdown(data).startswith("# ")
    rc, out, err = soda_log(capsys, prefix, "--index")
    assert rc == (1 if "runs" not in data else 0) and not err.startswith("Traceback")


def _stop(proc):
    try:
        proc.communicate(timeout=30)
    finally:
        try:  # the process group: whatever the embedded Ray left behind
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_kill9_of_executor_mid_step_shows_the_run_as_died(prefix, ledger, capsys):
    env = dict(os.environ, SODA_TEST_LEDGER=ledger, SODA_TEST_SLEEP="60", PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, SCRIPT, "--prefix", prefix], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    plan = build_plan(build(ledger), prefix)
    url = record_path(prefix, "executor_dag", plan.dag_hash())
    try:
        def step_running():
            data = read_record(url) if os.path.exists(url) else None
            return bool(data) and any(s.get("status") == "running" for s in data["runs"][-1]["steps"].values())

        wait_for(step_running, 180, "a step running in the record")
        rc, out, _ = soda_log(capsys, prefix)
        assert rc == 0 and "running" in out and "died" not in out  # alive: its lease is held
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _stop(proc)

    rc, out, err = soda_log(capsys, prefix)
    assert rc == 0, err
    run_line = [line for line in out.splitlines() if line.startswith("run ")][0]
    assert " died " in run_line and "its executor died" in out
    assert any(line.startswith("died ") and "raw/" in line for line in out.splitlines()), out
    page = open(url[: -len(".json")] + ".html").read()
    assert "class='died'" in page and "(died)" in page
    assert "died" in open(url[: -len(".json")] + ".md").read()
    assert read_record(url)["runs"][-1]["status"] == "running"  # soda log only reads the record

    opened = ExperimentRecord(prefix, "executor_dag", plan, "d", new_owner_id())  # as the rerun's executor
    assert opened.data["runs"][0]["status"] == "died"
    assert not os.path.exists(os.path.join(prefix, "experiments", ".runs", opened.data["runs"][0]["run_id"]))
    opened.save()
    assert [r["status"] for r in read_record(url)["runs"]] == ["died", "running"]
    opened.finish("succeeded")


BETWEEN_STEPS = """
import sys, time
sys.path.insert(0, {repo!r})
from tests.executor_dag import build
from pipeline.experiment_log import ExperimentRecord
from pipeline.lease import new_owner_id
from pipeline.plan import build_plan
record = ExperimentRecord({prefix!r}, "between", build_plan(build({ledger!r}), {prefix!r}), "d", new_owner_id())
record.update_step(record.data["order"][0], status="succeeded", start=time.time(), end=time.time())
record.save()
print("saved", flush=True)
time.sleep(600)
"""


def test_kill9_between_steps_shows_the_run_as_died(prefix, ledger, capsys):
    code = BETWEEN_STEPS.format(repo=REPO, prefix=prefix, ledger=ledger)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "saved"
        rc, out, _ = soda_log(capsys, prefix)
        assert rc == 0 and "running" in out and "died" not in out
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _stop(proc)
    rc, out, _ = soda_log(capsys, prefix)
    assert rc == 0 and " died " in [line for line in out.splitlines() if line.startswith("run ")][0]
    assert "succeeded" in out and "pending" in out  # the steps keep their states: none was running
    rc, out, _ = soda_log(capsys, prefix, "--index")
    assert rc == 0 and "died" in out
    assert "class='died'" in open(os.path.join(prefix, "experiments", "index.html")).read()


def test_records_written_before_run_leases_use_step_leases_and_the_pid(prefix):
    """No run lease (an older record): a running step's lease decides; with none running, the pid on this host."""
    output = os.path.join(prefix, "raw", "a-1")
    steps = {"raw/a-1": {"name": "raw/a", "output_path": output}}
    record = os.path.join(prefix, "experiments", "x-0123abcd.json")
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()

    def run(run_id, running, host=host):
        return {"run_id": run_id, "status": "running", "host": host, "started": time.time() - 5,
                "steps": {"raw/a-1": {"status": "running" if running else "pending"}}}

    assert executor_gone(run(f"{host}-{dead.pid}-0123abcd", running=False), steps, record)
    assert not executor_gone(run(f"{host}-{os.getpid()}-0123abcd", running=False), steps, record)
    assert not executor_gone(run(f"{host}-{dead.pid}-0123abcd", running=False, host="elsewhere"), steps, record)
    lease = LocalLease(output, "elsewhere-7-0123abcd")
    assert lease.try_acquire()
    try:  # held by the run: alive, whatever this host says of the pid
        assert not executor_gone(run("elsewhere-7-0123abcd", running=True, host="elsewhere"), steps, record)
        assert executor_gone(run("elsewhere-8-0123abcd", running=True, host="elsewhere"), steps, record)
    finally:
        lease.release()
    assert executor_gone(run("elsewhere-7-0123abcd", running=True, host="elsewhere"), steps, record)
