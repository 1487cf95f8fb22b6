"""gs:// leases on the GCS emulator: generation-match writes decide every race (pipeline.lease.GcsLease)."""

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from pipeline import fileio, storage
from pipeline.lease import GcsLease, lease_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "soda-leases"


@pytest.fixture
def where(gcs):
    return f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}/step"


def race(leases):
    """Call try_acquire of every lease at once; the list of results."""
    barrier = threading.Barrier(len(leases))
    results = [None] * len(leases)

    def take(i):
        barrier.wait()
        results[i] = leases[i].try_acquire()

    threads = [threading.Thread(target=take, args=(i,)) for i in range(len(leases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def write_holder(url, owner, heartbeat):
    record = {"holder": owner, "host": "elsewhere", "pid": 1, "since": heartbeat, "heartbeat": heartbeat,
              "nonce": uuid.uuid4().hex}
    assert storage.gcs_write_if(fileio.join(url, storage.LEASE_FILE), json.dumps(record), 0) is not None


def test_gs_prefix_gets_the_conditional_lease(where):
    assert isinstance(lease_for(where, "me"), GcsLease)


def test_ten_racing_acquirers_exactly_one_wins(where):
    leases = [GcsLease(where, f"owner-{i}", interval=60) for i in range(10)]
    results = race(leases)
    try:
        assert results.count(True) == 1, results
        winner = leases[results.index(True)]
        assert all(lease.probe().holder == winner.owner for lease in leases if lease is not winner)
    finally:
        for lease in leases:
            lease.release()
    assert storage.gcs_read(fileio.join(where, storage.LEASE_FILE)) == (None, 0)  # released: deleted
    assert GcsLease(where, "next").try_acquire()


def test_dead_holder_is_taken_over_and_one_of_two_takers_wins(where):
    write_holder(where, "dead", heartbeat=time.time() - 10)
    fresh = GcsLease(where, "late", ttl=60)
    assert fresh.probe().holder == "dead" and not fresh.try_acquire()  # with ttl 60 it is still live
    takers = [GcsLease(where, f"taker-{i}", ttl=2, interval=60) for i in range(2)]
    results = race(takers)
    try:
        assert sorted(results) == [False, True]
        winner = takers[results.index(True)]
        assert GcsLease(where, "reader", ttl=2).probe().holder == winner.owner
    finally:
        for lease in takers:
            lease.release()


def test_lost_create_response_is_recognised_as_ours(where, monkeypatch):
    from google.cloud.storage import Blob

    upload = Blob.upload_from_string
    lost = []

    def upload_then_drop_response(self, *args, **kwargs):
        upload(self, *args, **kwargs)
        if not lost:
            lost.append(self.name)
            raise ConnectionError("connection reset by peer (the response was lost)")

    monkeypatch.setattr(Blob, "upload_from_string", upload_then_drop_response)
    lease = GcsLease(where, "me", interval=60)
    try:
        assert lease.try_acquire()  # the retry's 412 finds our own nonce
        assert lost and lease._generation == storage.gcs_read(lease.url)[1]
        assert not GcsLease(where, "other").try_acquire()
    finally:
        lease.release()
    assert storage.gcs_read(lease.url) == (None, 0)  # it knew the generation: its release deleted the file


def test_heartbeat_after_a_takeover_reports_the_loss(where, caplog):
    holder = GcsLease(where, "slow", ttl=1.0, interval=0.3)
    assert holder.try_acquire()
    holder._stop.set()  # a holder that stalls (GC pause, suspended VM) stops beating ...
    holder._thread.join()
    time.sleep(1.2)
    taker = GcsLease(where, "taker", ttl=1.0, interval=60)
    assert taker.try_acquire()  # ... so its lease goes stale and is taken over
    holder._stop.clear()  # ... then it wakes up and beats again
    holder._thread = threading.Thread(target=holder._beat, daemon=True)
    holder._thread.start()
    deadline = time.time() + 10
    while not holder.lost and time.time() < deadline:
        time.sleep(0.1)
    assert holder.lost
    assert "was taken over by" in caplog.text
    holder.release()  # must not delete the taker's lease
    assert GcsLease(where, "reader", ttl=1.0).probe().holder == "taker"
    taker.release()


def launch(prefix, ledger, gcs, cwd):
    env = dict(os.environ, **gcs.environment(), SODA_TEST_LEDGER=ledger, SODA_TEST_SLEEP="2", PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "executor_dag.py"), "--prefix", prefix],
                            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def test_racing_executors_on_gs_run_each_step_once(gcs, tmp_path):
    from tests.executor_dag import GOLDEN_NAMES
    from tests.test_executor_processes import finish

    prefix = f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}"
    ledger = str(tmp_path / "ledger.txt")
    open(ledger, "w").close()
    started = time.time()
    procs = [launch(prefix, ledger, gcs, str(tmp_path)) for _ in range(2)]
    outputs = [finish(p, timeout=240) for p in procs]
    print(f"two executors on gs:// took {time.time() - started:.1f}s")
    assert [p.returncode for p in procs] == [0, 0], outputs
    lines = open(ledger).read().splitlines()
    ran = sorted(line.split()[1] for line in lines if line.startswith("start"))
    assert ran == sorted(name.split("/")[1] for name in GOLDEN_NAMES.values()), lines
    for name in GOLDEN_NAMES.values():
        assert storage.read_status(fileio.join(prefix, name)).status == "SUCCESS"
        assert storage.gcs_read(fileio.join(prefix, name, storage.LEASE_FILE)) == (None, 0)


def _slow_step(config) -> None:
    """Marks that it started, then works for 20 s unless stopped."""
    open(config["started"], "w").close()
    time.sleep(20)


def test_an_executor_whose_lease_is_taken_over_stops_its_step_and_waits_for_the_new_holder(gcs, tmp_path,
                                                                                           monkeypatch):
    """Another executor takes the lease of a step that runs here (as after a stall past the ttl): this
    executor cancels its own run of the step at its next refused heartbeat, never writes the step's
    status, and finds the step done by the new holder."""
    from pipeline import Executor, ExecutorStep, executor as executor_module

    monkeypatch.setattr(executor_module, "lease_for", lambda path, owner: GcsLease(path, owner, ttl=60, interval=0.3))
    prefix = f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}"
    started = tmp_path / "started"
    step = ExecutorStep(name="work/slow", fn=_slow_step, config={"started": str(started)})
    executor = Executor(prefix, experiment_name="lost_lease")
    output = executor.compute_versions([step]).steps[0].output_path
    lease_url = fileio.join(output, storage.LEASE_FILE)

    def take_over_when_started():
        deadline = time.time() + 120
        while not started.exists() and time.time() < deadline:
            time.sleep(0.1)
        record = {"holder": "rival", "host": "elsewhere", "pid": 1, "since": time.time(), "heartbeat": time.time(),
                  "nonce": uuid.uuid4().hex}
        for _ in range(50):  # the holder's heartbeat may rewrite the lease between our read and write
            _, generation = storage.gcs_read(lease_url)
            if storage.gcs_write_if(lease_url, json.dumps(record), generation) is not None:
                break
        else:
            raise AssertionError("the rival never took the lease over")
        time.sleep(2)  # the rival runs the step, finishes it and lets go
        storage.write_status(output, storage.SUCCESS, "rival")
        _, generation = storage.gcs_read(lease_url)
        storage.gcs_delete_if(lease_url, generation)

    rival = threading.Thread(target=take_over_when_started)
    rival.start()
    began = time.time()
    result = executor.run([step])
    rival.join()
    assert started.exists()
    assert result.states[step.name + "-" + output.rsplit("-", 1)[1]] == "cached"  # done by the rival
    assert time.time() - began < 20, "the executor waited for its own run of the step to finish"
    assert storage.read_status(output).run_id == "rival"  # this executor wrote no status after losing
