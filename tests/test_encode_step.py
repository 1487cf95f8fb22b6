"""The Mimi encode step on the shipped corpus and on broken inputs; crash-then-rerun resumes."""

import glob
import json
import math
import os
from pathlib import Path

import pytest

pytest.importorskip("torch")
import pyarrow.parquet as pq

import steps.encode as encode_mod
from steps.encode import EncodeConfig, encode_speech, shard_name
from tests.test_audio_io import bad_members, write_tar
from tests.test_mimi import SMALL

CORPUS = Path(__file__).resolve().parent.parent / "steps" / "local_corpus" / "emilia_like"
SHARDS = [str(CORPUS / "EN-B000000.tar"), str(CORPUS / "EN-B000001.tar")]


def _config(out, inputs=(str(CORPUS / "*.tar"),), **kw):
    kw.setdefault("mimi_config_overrides", SMALL)
    return EncodeConfig(input_paths=tuple(inputs), output_path=str(out), mimi_model="random", device="cpu",
                        batch_size=8, **kw)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    out = tmp_path_factory.mktemp("encoded")
    summary = encode_speech(_config(out))
    return out, summary


def test_schema_rows_and_summary(encoded):
    out, summary = encoded
    files = sorted(glob.glob(f"{out}/shards/*.parquet"))
    assert [os.path.basename(f) for f in files] == sorted(f"{shard_name(s)}.parquet" for s in SHARDS)
    table = pq.read_table(files[0])
    assert [(f.name, str(f.type), f.nullable) for f in table.schema] == [
        ("utterance_id", "string", False), ("recording_id", "string", False), ("order", "int64", False),
        ("transcript", "string", True), ("duration", "double", False), ("audio", "string", False)]
    rows = table.to_pylist()
    assert rows == sorted(rows, key=lambda r: (r["recording_id"], r["order"], r["utterance_id"]))
    for r in rows:
        assert r["recording_id"] == r["utterance_id"].rsplit("_W", 1)[0]
        assert r["transcript"] == r["transcript"].strip() and r["transcript"][-1] in ".!?"
        frames = math.ceil(round(r["duration"] * 24_000) / 1920)
        assert len(r["audio"]) == 8 * frames
        assert all(0xE000 <= ord(c) < 0xE000 + 8 * 2048 for c in r["audio"])
    assert summary["plumbing_run"] is True and summary["mimi_model"] == "random"
    assert (summary["utterances"], summary["recordings"], summary["skipped_total"]) == (33, 8, 0)
    durations = [d for f in files for d in pq.read_table(f, columns=["duration"]).column("duration").to_pylist()]
    assert abs(summary["hours"] * 3600 - sum(durations)) < 1e-6 and 95 < sum(durations) < 110
    total_chars = sum(len(a) for f in files for a in pq.read_table(f, columns=["audio"]).column("audio").to_pylist())
    assert summary["audio_tokens"] == total_chars
    assert json.loads((out / "summary.json").read_text()) == summary
    stats = json.loads((out / "stats.json").read_text())
    assert len(stats["shards"]) == 2 and stats["bad_inputs"] == []


def test_rerun_is_byte_identical(encoded, tmp_path):
    out, _ = encoded
    encode_speech(_config(tmp_path))
    for f in glob.glob(f"{out}/shards/*.parquet"):
        assert Path(f).read_bytes() == (tmp_path / "shards" / os.path.basename(f)).read_bytes()


def test_crash_then_rerun_redoes_only_unfinished_shards(tmp_path, monkeypatch):
    config = _config(tmp_path, inputs=SHARDS)
    first, second = (shard_name(s) for s in SHARDS)
    real_write = encode_mod._write_parquet_atomic
    calls = []

    def crash_on_second(fs, path, rows, row_group_size):
        calls.append(os.path.basename(path))
        if second in path:  # leave a half-written temp file behind, like a killed worker would
            (tmp_path / "shards" / f".{second}.parquet.tmp-dead").write_bytes(b"PAR1 half")
            raise RuntimeError("simulated crash while writing")
        real_write(fs, path, rows, row_group_size)

    monkeypatch.setattr(encode_mod, "_write_parquet_atomic", crash_on_second)
    with pytest.raises(RuntimeError, match="simulated crash"):
        encode_speech(config)
    shard_dir = tmp_path / "shards"
    assert (shard_dir / f"{first}.done.json").exists() and not (shard_dir / f"{second}.done.json").exists()
    assert not (shard_dir / f"{second}.parquet").exists()
    first_mtime = (shard_dir / f"{first}.parquet").stat().st_mtime_ns
    marker_mtime = (shard_dir / f"{first}.done.json").stat().st_mtime_ns

    calls.clear()
    monkeypatch.setattr(encode_mod, "_write_parquet_atomic", lambda *a: (calls.append(os.path.basename(a[1])), real_write(*a)))
    summary = encode_speech(config)
    assert calls == [f"{second}.parquet"]  # only the unfinished shard was encoded again
    assert (shard_dir / f"{first}.parquet").stat().st_mtime_ns == first_mtime
    assert (shard_dir / f"{first}.done.json").stat().st_mtime_ns == marker_mtime
    assert not list(shard_dir.glob(".*tmp-*"))  # the dead temp file was cleaned up
    assert summary["utterances"] == 33

    calls.clear()
    encode_speech(config)  # everything done: nothing is encoded
    assert calls == []


def test_bad_inputs_are_counted_and_too_many_fail_the_step(tmp_path):
    bad_tar = write_tar(tmp_path / "EN-BAD.tar", bad_members())
    with pytest.raises(RuntimeError) as info:
        encode_speech(_config(tmp_path / "strict", inputs=[bad_tar, SHARDS[1]]))
    message = str(info.value)
    assert "max_bad_fraction" in message and "EN-BAD.tar::EN_B00009_S00001_W000000: truncated" in message
    for reason in ("zero_length", "non_finite", "missing_transcript", "malformed_metadata", "unreadable_format"):
        assert reason in message
    stats = json.loads((tmp_path / "strict" / "stats.json").read_text())
    assert stats["skipped"] == {"malformed_metadata": 1, "missing_transcript": 1, "non_finite": 1,
                                "truncated": 1, "unreadable_format": 1, "zero_length": 2}
    assert len(stats["bad_inputs"]) == 7

    summary = encode_speech(_config(tmp_path / "lenient", inputs=[bad_tar, SHARDS[1]], max_bad_fraction=0.5))
    assert summary["utterances"] == 11 + 2 and summary["skipped_total"] == 7
    assert abs(summary["bad_fraction"] - 7 / 20) < 1e-9


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="matches no files"):
        encode_speech(_config(tmp_path, inputs=[str(tmp_path / "nothing-*.tar")]))


@pytest.mark.slow
def test_full_size_mimi_on_local_corpus(tmp_path):
    summary = encode_speech(_config(tmp_path, inputs=[SHARDS[1]], mimi_config_overrides=None))
    assert summary["utterances"] == 11 and summary["plumbing_run"]


@pytest.mark.slow
def test_ray_runs_one_task_per_shard(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = encode_speech(_config(tmp_path, inputs=SHARDS))
    finally:
        ray.shutdown()
    assert summary["utterances"] == 33 and summary["shards"] == 2
