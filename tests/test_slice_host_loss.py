"""Losing a slice host's whole Ray node mid-run (its raylet and workers gone, as when a TPU VM of a
slice is preempted alone): the supervisor ends the attempt, waits while the slice has hosts
missing, and runs the slice again once it is whole. Its own cluster, since it removes a node."""

from __future__ import annotations

import os
import threading
import time

import pytest

from steps.training.launch import run_on_slice
from tests.test_launch import _wait_for_files, record_host


def test_a_lost_host_node_is_waited_for_and_the_slice_restarts_when_whole(tmp_path):
    """A host's whole Ray node is lost mid-run: the attempt ends, the supervisor waits (a slice with
    1 of its 2 hosts is not launched on), and runs again once the host is back."""
    ray = pytest.importorskip("ray")
    from infra.local_cluster import LocalTpuCluster, fake_tpu_slice

    with LocalTpuCluster("v5p-16", slice_prefix="lossy") as c:
        ray.init(address=c.address, log_to_driver=False)
        try:
            name = c.slice_names[0]
            host1_spec, host1 = c.started[1]
            hold = tmp_path / "go"
            events, outcome = [], {}

            def supervise():
                try:
                    outcome["results"] = run_on_slice(record_host, (str(tmp_path / "run"), -1, -1, 1, -1, str(hold)),
                                                      "v5p-16", max_failures=0, retry_wait_s=0.5,
                                                      max_retry_wait_s=1,
                                                      on_event=events.append)
                except BaseException as e:  # noqa: BLE001 - reported by the assertion below
                    outcome["error"] = e

            thread = threading.Thread(target=supervise)
            thread.start()
            os.makedirs(tmp_path / "run", exist_ok=True)
            _wait_for_files(str(tmp_path / "run"), "started-", 2)
            c._cluster.remove_node(host1, allow_graceful=False)  # the host's raylet and workers are gone
            deadline = time.time() + 120
            while not any("1 of its 2 hosts alive" in e.message for e in events) and time.time() < deadline:
                time.sleep(0.2)
            assert any("1 of its 2 hosts alive" in e.message for e in events), [e.message for e in events]
            (replacement,) = fake_tpu_slice("v5p-16", name)[1:]
            c._cluster.add_node(num_cpus=replacement.num_cpus, resources=dict(replacement.resources),
                                env_vars=dict(replacement.env), labels=dict(replacement.labels),
                                object_store_memory=c.object_store_bytes, temp_dir=c.temp_dir)
            hold.touch()
            thread.join(timeout=180)
            assert not thread.is_alive() and "error" not in outcome, outcome
            assert [r["settings"]["process_id"] for r in outcome["results"]] == [0, 1]
            assert events[0].kind == "preempted" and "host 1" in events[0].message
            assert {e.kind for e in events[1:]} <= {"preempted", "waiting"}  # no failure budget spent
            assert all(e.kind == "waiting" for e in events if "hosts alive" in e.message)
        finally:
            ray.shutdown()
