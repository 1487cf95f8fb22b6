"""The encode step's memory on YODAS2's raw layout does not grow with the video's length: a 60-minute
video peaks within 10% (+32 MiB) of a 10-minute one. Each video is one archive, written and encoded
in processes of their own (benchmarks/yodas2_encode_bench.py), with the small Mimi stand-in.

The margin is kept below what a reader holding the whole recording would add (the 60-minute float32
recording less the 10-minute one: 288 MB), and below even holding only the utterances (70% of it), so
either would fail. The child runs with LEAN_ALLOCATOR_ENV: oneDNN's per-shape primitive cache and
glibc's fragmented free lists otherwise grow with the number of distinct batch shapes, which is not
what this test is about (the benchmark reports both ways)."""

import pytest

from benchmarks.yodas2_encode_bench import SMALL_MIMI, SPEECH_FRACTION, run_encode, write_in_child

SR = 24_000
MIB = 1 << 20


def _recording_bytes(minutes: float) -> int:
    return int(minutes * 60 * SR * 4)  # float32, 24 kHz mono


@pytest.mark.slow
def test_peak_rss_is_flat_from_a_10_to_a_60_minute_video(tmp_path):
    peaks = {}
    for minutes in (10, 60):
        root = str(tmp_path / f"yodas2-{minutes}min")
        write_in_child(root, minutes)
        r = run_encode(root, str(tmp_path / f"encoded-{minutes}min"), SMALL_MIMI, limit_bytes=8 << 30, lean=True)
        assert r["ok"], f"{minutes}-minute encode failed: {r['last_line']}"
        assert r["skipped_total"] == 0 and r["recordings"] == 1
        assert r["hours"] * 3600 > 0.95 * SPEECH_FRACTION * minutes * 60  # every utterance was encoded
        peaks[minutes] = r["peak_rss"]
    margin = 0.10 * peaks[10] + 32 * MIB
    whole_recording = _recording_bytes(60) - _recording_bytes(10)
    assert margin < SPEECH_FRACTION * whole_recording, (
        f"the margin ({margin / MIB:.0f} MiB, from a 10-minute peak of {peaks[10] / MIB:.0f} MiB) could hide "
        "a reader that held the recording; lower it")
    assert peaks[60] <= peaks[10] + margin, (
        f"peak RSS grew from {peaks[10] / MIB:.0f} MiB (10 min) to {peaks[60] / MIB:.0f} MiB (60 min), "
        f"more than {margin / MIB:.0f} MiB: something holds audio in proportion to the video's length")
