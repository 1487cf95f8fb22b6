"""The encode step's memory on YODAS2's raw layout does not grow with the video's length: a 60-minute
video peaks within 10% (+32 MiB) of a 10-minute one. Each video is one archive, written and encoded
in processes of their own (benchmarks/yodas2_encode_bench.py), with the small Mimi stand-in.

The margin is kept below what a reader holding the whole recording would add (the 60-minute float32
recording less the 10-minute one: 288 MB), and below even holding only the utterances (70% of it), so
either would fail. The child runs the encode step's default path (no allocator settings passed): it
pads every batch to one of a few shapes (steps.encode.padded_batch) and turns oneDNN's primitive
cache off (steps.encode.ENCODE_ENV, set in-process before the first convolution), which together
keep it flat (small Mimi: 0.98-1.03 -> 1.02-1.07 GiB; with neither, 1.38 -> 1.76 GiB; with the padding
alone, 1.05-1.28 -> 1.17-1.33 GiB, varying from run to run). Also
here: the padding leaves the codes of the real frames unchanged, on the small and (slow) the
full-size Mimi."""

import numpy as np
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
        r = run_encode(root, str(tmp_path / f"encoded-{minutes}min"), SMALL_MIMI, limit_bytes=8 << 30)
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


def test_batches_take_a_bounded_set_of_shapes():
    from steps.encode import bucket_frames, padded_batch

    buckets = bucket_frames(750)  # 60 s chunks
    assert buckets[0] == 25 and buckets[-1] == 750 and len(buckets) == 16
    assert all(b / a <= 1.3 for a, b in zip(buckets, buckets[1:]))  # about 25% padding at most
    assert bucket_frames(12) == (12,)  # chunks shorter than 2 s: one shape
    rng = np.random.default_rng(0)
    shapes = set()
    for _ in range(300):
        waves = [np.ones(int(rng.integers(1, 750 * 1920)), np.float32) for _ in range(int(rng.integers(1, 9)))]
        batch = padded_batch(waves, buckets, 8)
        assert len({len(w) for w in batch}) == 1 and len(batch[0]) >= max(len(w) for w in waves)
        assert all(np.array_equal(p[:len(w)], w) and not p[len(w):].any() for p, w in zip(batch, waves))
        shapes.add((len(batch), len(batch[0])))
    assert len(shapes) <= len(buckets) * 4  # rows: a multiple of 2 (batch_size / 4)


def _padding_keeps_codes(model):
    from steps.encode import bucket_frames, padded_batch
    from tests.test_mimi import _speechy
    from tokenizer.mimi import encode, frames_for_samples

    buckets = bucket_frames(750)
    waves = [_speechy(s, seed=k % 3)[: int(s * 24_000) + 37 * k] for k, s in enumerate((0.3, 1.7, 2.6, 4.9, 7.7, 12.1))]
    waves.append(_speechy(47.3, seed=2))  # padded to 594 frames (47.52 s)
    alone = [encode(model, [w])[0] for w in waves]
    for lo in range(0, len(waves), 4):
        batch = waves[lo:lo + 4]
        for w, a, c in zip(batch, alone[lo:lo + 4], encode(model, padded_batch(batch, buckets, 8))):
            np.testing.assert_array_equal(c[:, :frames_for_samples(len(w))], a)


def test_end_padding_leaves_the_codes_of_the_real_frames_unchanged():
    pytest.importorskip("torch")
    from tests.test_mimi import SMALL
    from tokenizer.mimi import load_mimi

    _padding_keeps_codes(load_mimi("random", seed=0, device="cpu", config_overrides=SMALL))


@pytest.mark.slow
def test_end_padding_leaves_the_codes_unchanged_on_the_full_size_mimi():
    pytest.importorskip("torch")
    from tokenizer.mimi import load_mimi

    _padding_keeps_codes(load_mimi("random", seed=0, device="cpu"))
