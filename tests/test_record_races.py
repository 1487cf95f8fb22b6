"""Executors racing on one experiment keep every run's entry in its record (pipeline.record_merge)."""

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from pipeline import storage
from pipeline.record_check import read_record
from pipeline.record_merge import merge_runs, save_merged
from tests.executor_dag import GOLDEN_NAMES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "soda-records"


def run_entry(run_id, status="running", started=None):
    return {"run_id": run_id, "status": status, "started": started or time.time(), "steps": {}}


def test_merge_replaces_only_our_run_and_never_kills_a_live_one():
    live = run_entry("live", started=1.0)
    dead_on_record = run_entry("dead", started=2.0)
    dead_here = dict(dead_on_record, status="died")
    finished = run_entry("finished", status="succeeded", started=3.0)
    ours_old, ours = run_entry("ours", started=4.0), run_entry("ours", status="succeeded", started=4.0)
    newcomer = run_entry("newcomer", started=5.0)
    merged = merge_runs([live, dead_on_record, finished, ours_old, newcomer], ours, [],
                        {"dead": dead_here, "finished": dict(finished, status="died")})
    assert [r["run_id"] for r in merged] == ["live", "dead", "finished", "ours", "newcomer"]
    assert [r["status"] for r in merged] == ["running", "died", "succeeded", "succeeded", "running"]
    assert merged[3] is ours
    gone = run_entry("gone", status="succeeded", started=0.5)  # on record when we opened it, since lost
    assert [r["run_id"] for r in merge_runs([live], ours, [gone], {})] == ["gone", "live", "ours"]


def racing_saves(url, n=8, saves=5):
    """`n` threads, each saving its own run `saves` times into the record at `url`."""
    barrier = threading.Barrier(n)
    errors = []

    def work(i):
        data = {"schema": 1, "experiment": "t", "runs": []}
        run = run_entry(f"run-{i}")
        data["runs"].append(run)
        barrier.wait()
        try:
            for k in range(saves):
                run["steps"][f"s{k}"] = {"status": "succeeded"}
                save_merged(url, data, run)
            run["status"] = "succeeded"
            save_merged(url, data, run)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    runs = read_record(url)["runs"]
    assert sorted(r["run_id"] for r in runs) == sorted(f"run-{i}" for i in range(n))
    assert all(r["status"] == "succeeded" and len(r["steps"]) == saves for r in runs)


def test_racing_saves_keep_every_run_locally(tmp_path):
    racing_saves(str(tmp_path / "experiments" / "t-0123abcd.json"))


def test_racing_saves_keep_every_run_on_gs(gcs):
    racing_saves(f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}/experiments/t-0123abcd.json", n=4, saves=3)


def test_a_conditional_write_that_loses_is_merged_and_retried(gcs, monkeypatch):
    url = f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}/experiments/t-0123abcd.json"
    old = run_entry("old", status="succeeded", started=1.0)
    storage.write_json_atomic(url, {"schema": 1, "runs": [old]})
    write_if = storage.gcs_write_if
    calls = []

    def rival_writes_first(target, text, generation):
        calls.append(generation)
        if len(calls) == 1:  # between our read and our write, another executor saves its run
            rival = {"schema": 1, "runs": [old, run_entry("rival", started=2.0)]}
            assert write_if(target, json.dumps(rival), generation) is not None
        return write_if(target, text, generation)  # the first: our stale generation, answered 412

    monkeypatch.setattr(storage, "gcs_write_if", rival_writes_first)
    ours = run_entry("ours", started=3.0)
    save_merged(url, {"schema": 1, "runs": [old, ours]}, ours)
    assert len(calls) == 2 and calls[0] != calls[1]
    assert [r["run_id"] for r in read_record(url)["runs"]] == ["old", "rival", "ours"]


def launch(prefix, ledger, cwd, env):
    full = dict(os.environ, **env, SODA_TEST_LEDGER=ledger, SODA_TEST_SLEEP="2", PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "executor_dag.py"), "--prefix", prefix],
                            env=full, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def race_executors(prefix, tmp_path, n, env):
    """`n` executors on one experiment at once; every one's run is on record with its outcome."""
    from pipeline.record_store import list_records
    from tests.test_executor_processes import finish

    ledger = str(tmp_path / "ledger.txt")
    open(ledger, "w").close()
    started = time.time()
    procs = [launch(prefix, ledger, str(tmp_path), env) for _ in range(n)]
    outputs = [finish(p, timeout=300) for p in procs]
    print(f"{n} executors on {'gs' if prefix.startswith('gs:') else 'local disk'} took {time.time() - started:.1f}s")
    assert [p.returncode for p in procs] == [0] * n, outputs
    (url,) = list_records(prefix)
    runs = read_record(url)["runs"]
    assert sorted(r["pid"] for r in runs) == sorted(p.pid for p in procs), runs
    assert all(r["status"] == "succeeded" for r in runs), runs
    for name in GOLDEN_NAMES.values():  # each step ran in exactly one run, and the others found it cached
        states = sorted(r["steps"][name]["status"] for r in runs)
        assert states == ["cached"] * (n - 1) + ["succeeded"], (name, states)


def test_racing_executors_keep_every_run_locally(tmp_path):
    race_executors(str(tmp_path / "out"), tmp_path, 3, {})


def test_racing_executors_keep_every_run_on_gs(gcs, tmp_path):
    race_executors(f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}", tmp_path, 2, gcs.environment())
