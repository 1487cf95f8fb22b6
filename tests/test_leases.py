"""Leases: one holder at a time, a dead holder's lease is free, probes never write."""

import os
import signal
import subprocess
import sys
import threading
import time

from pipeline.lease import HeartbeatLease, LocalLease

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_local_lease_excludes_and_is_freed_when_holder_is_killed(tmp_path):
    out = str(tmp_path / "step")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; sys.path.insert(0, %r); from pipeline.lease import LocalLease; "
         "assert LocalLease(%r, 'other').try_acquire(); print('held', flush=True); time.sleep(60)" % (REPO, out)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    mine = LocalLease(out, "me")
    assert not mine.try_acquire()
    seen = mine.probe()
    assert seen is not None and seen.pid == holder.pid and seen.holder == "other"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert mine.probe() is None
    assert mine.try_acquire()  # at once: no staleness timeout
    mine.release()


def test_local_lease_probe_writes_nothing(tmp_path):
    out = tmp_path / "never-created"
    assert LocalLease(str(out), "me").probe() is None
    assert not out.exists()


def test_heartbeat_lease_excludes_beats_and_goes_stale(tmp_path):
    url = "file://" + str(tmp_path / "step")
    first = HeartbeatLease(url, "first", ttl=1.5, interval=0.3, settle=0.05)
    second = HeartbeatLease(url, "second", ttl=1.5, interval=0.3, settle=0.05)
    assert first.try_acquire()
    time.sleep(2.0)  # longer than ttl: only the heartbeat keeps it alive
    assert second.probe() is not None and second.probe().holder == "first"
    assert not second.try_acquire()
    first._stop.set()  # the holder dies without releasing: its heartbeat stops
    first._thread.join()
    time.sleep(1.8)
    assert second.probe() is None
    assert second.try_acquire()
    second.release()
    assert not os.path.exists(tmp_path / "step" / ".executor_lease")


def test_heartbeat_lease_holder_notices_takeover(tmp_path):
    url = str(tmp_path / "step")
    holder = HeartbeatLease("file://" + url, "slow", ttl=0.5, interval=0.2, settle=0.01)
    assert holder.try_acquire()
    holder._stop.set()
    holder._thread.join()
    time.sleep(0.7)
    taker = HeartbeatLease("file://" + url, "taker", ttl=0.5, interval=0.2, settle=0.01)
    assert taker.try_acquire()
    holder._stop.clear()  # the slow holder wakes up and beats once more
    t = threading.Thread(target=holder._beat)
    t.start()
    t.join(timeout=2)
    assert holder.lost
    taker.release()
