"""MLS English's published layout (steps.raw_mls): ids from the row, unique across shards; transcript,
duration and skip reasons; one document per chunk through the encode step; auto-detection that picks
MLS's files and no other parquet."""

import glob
import io
import os

import numpy as np
import pytest

from steps.audio_io import Skipped, Utterance
from steps.raw_mls import is_mls_parquet, iter_mls_parquet, utterance_id_of

SR = 16_000  # MLS's own rate


def _flac(seconds: float, seed: int = 0) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    x = 0.2 * np.sin(2 * np.pi * (120 + 40 * seed) * t) + 0.01 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), SR, format="FLAC")
    return buf.getvalue()


def _row(mls_id, seconds=0.8, transcript="a chunk of a book", seed=0, path=None, original=None, **kw):
    speaker, book, _ = (mls_id or "1_2_000000").split("_")
    row = {"audio": {"bytes": _flac(seconds, seed), "path": path if path is not None else f"{mls_id}.flac"},
           "original_path": original if original is not None else f"mls_english/train/audio/{speaker}/{book}/{mls_id}.flac",
           "begin_time": 0.0, "end_time": seconds, "transcript": transcript, "audio_duration": seconds,
           "speaker_id": speaker, "book_id": book}
    row.update(kw)
    return row


def _write(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def _two_shards(root):
    """Two shards of MLS's layout whose second rows carry no MLS id anywhere (fallback ids)."""
    first = _write(f"{root}/data/train-00000-of-00002.parquet",
                   [_row("10214_10108_000000", seed=1), _row(None, path="audio.flac", original="", seed=2)])
    second = _write(f"{root}/data/train-00001-of-00002.parquet",
                    [_row("10214_10108_000001", seed=3), _row(None, path="audio.flac", original="", seed=4)])
    return first, second


def test_ids_are_unique_across_shards_where_the_generic_reader_repeats_them(tmp_path):
    from steps.audio_io import iter_parquet

    shards = _two_shards(tmp_path)
    generic = [item.key for s in shards for item in iter_parquet(s)]
    assert len(set(generic)) < len(generic)  # the problem: row00000000 in every file
    items = [item for s in shards for item in iter_mls_parquet(s)]
    assert all(isinstance(i, Utterance) for i in items)
    ids = [u.utterance_id for u in items]
    assert ids == ["10214_10108_000000", "train-00000-of-00002-row00000001",
                   "10214_10108_000001", "train-00001-of-00002-row00000001"]
    assert all(u.recording_id == u.utterance_id and u.order == 0 for u in items)  # one document per chunk


def test_the_id_comes_from_audio_path_then_original_path_then_the_row():
    audio = {"bytes": b"", "path": "10214_10108_000007.flac"}
    assert utterance_id_of({"audio": audio, "original_path": "a/b/9_9_000001.flac"}, "s", 3) == "10214_10108_000007"
    audio["path"] = "clip.flac"
    assert utterance_id_of({"audio": audio, "original_path": "http://x/9_9_000001.flac"}, "s", 3) == "9_9_000001"
    assert utterance_id_of({"audio": audio, "original_path": "http://x/book_64kb.mp3"}, "s", 3) == "s-row00000003"
    assert utterance_id_of({"audio": None, "original_path": None}, "train-00000-of-01416", 12) == \
        "train-00000-of-01416-row00000012"


def test_transcript_duration_and_skip_reasons(tmp_path):
    rows = [
        _row("1_2_000000", transcript="  the lowercased chunk  "),
        _row("1_2_000001", transcript=""),
        _row("1_2_000002", transcript=None),
        _row("1_2_000003", audio_duration=0.8 + 0.5),  # the row says 1.3 s, the audio is 0.8 s
        _row("1_2_000004", audio_duration=0.8 + 0.05),  # within the tolerance
        _row("1_2_000005", audio_duration=None),  # not checked
        dict(_row("1_2_000006"), audio={"bytes": None, "path": "1_2_000006.flac"}),
        dict(_row("1_2_000007"), audio={"bytes": b"not audio at all" * 10, "path": "1_2_000007.flac"}),
        _row("1_2_000008", seconds=2.5, audio_duration=2.5),
    ]
    path = _write(f"{tmp_path}/data/train-00000-of-00001.parquet", rows)
    items = {i.utterance_id: i for i in iter_mls_parquet(path, max_seconds=2.0)}
    assert len(items) == len(rows)
    kept = items["1_2_000000"]
    assert isinstance(kept, Utterance) and kept.transcript == "the lowercased chunk"
    assert abs(kept.duration - 0.8) < 1e-3 and len(kept.audio) == int(0.8 * 24_000)  # resampled to 24 kHz
    assert kept.source == f"{path}::row0"
    assert isinstance(items["1_2_000004"], Utterance) and isinstance(items["1_2_000005"], Utterance)
    reasons = {k: (v.reason, v.detail) for k, v in items.items() if isinstance(v, Skipped)}
    assert reasons["1_2_000001"][0] == reasons["1_2_000002"][0] == "missing_transcript"
    assert reasons["1_2_000003"] == ("duration_mismatch", "decoded 0.800 s, audio_duration says 1.300 s "
                                                          "(more than 0.1 s apart)")
    assert reasons["1_2_000006"][0] == "missing_audio"
    assert reasons["1_2_000007"][0] == "unreadable_format"
    assert reasons["1_2_000008"][0] == "too_long" and "max_utterance_seconds" in reasons["1_2_000008"][1]
    # without requiring transcripts, an empty one is kept (as None)
    lenient = {i.utterance_id: i for i in iter_mls_parquet(path, require_transcript=False)}
    assert isinstance(lenient["1_2_000001"], Utterance) and lenient["1_2_000001"].transcript is None


def test_a_broken_file_is_one_corrupt_item_and_a_wrong_one_an_error(tmp_path):
    good = _write(f"{tmp_path}/data/train-00000-of-00001.parquet", [_row("1_2_000000")])
    cut = tmp_path / "data" / "train-00001-of-00002.parquet"
    cut.write_bytes(open(good, "rb").read()[:200])
    (item,) = list(iter_mls_parquet(str(cut)))
    assert isinstance(item, Skipped) and item.reason == "corrupt" and str(cut) in item.detail
    no_text = _write(f"{tmp_path}/other/x.parquet", [{"audio": {"bytes": _flac(0.5), "path": "a.flac"}}])
    with pytest.raises(ValueError, match=r"x\.parquet: not MLS's layout .*no transcript column"):
        list(iter_mls_parquet(no_text))


def test_auto_detection_picks_mls_files_and_no_other_parquet(tmp_path):
    from steps.encode import EncodeConfig, input_format_of

    config = EncodeConfig(input_paths=("x",), output_path="y")
    mls, _ = _two_shards(tmp_path)
    assert is_mls_parquet(mls) and input_format_of(config, mls) == "mls"
    others = {
        "generic": [{"id": "u1", "audio": {"bytes": _flac(0.5), "path": "u1.flac"}, "text": "hi"}],
        # LibriSpeech's parquet conversion: speaker_id but no book_id / original_path / times
        "librispeech": [{"file": "a.flac", "audio": {"bytes": _flac(0.5), "path": "a.flac"}, "text": "HI",
                         "speaker_id": 1, "chapter_id": 2, "id": "1-2-0000"}],
        # a transcript and times, but not MLS's book and speaker columns
        "segments": [{"audio": {"bytes": _flac(0.5), "path": "a.flac"}, "transcript": "hi", "begin_time": 0.0,
                      "end_time": 0.5, "original_path": "a.flac"}],
    }
    for name, rows in others.items():
        path = _write(f"{tmp_path}/{name}/0000.parquet", rows)
        assert not is_mls_parquet(path) and input_format_of(config, path) == "parquet", name
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(open(mls, "rb").read()[:100])
    assert input_format_of(config, str(truncated)) == "parquet"  # left to the generic reader: 'corrupt'
    assert input_format_of(config, str(tmp_path / "a" / "audio" / "00000000.tar.gz")) == "yodas2"
    assert input_format_of(EncodeConfig(input_paths=("x",), output_path="y", input_format="parquet"), mls) == "parquet"


def test_the_mirror_fixture_is_read_with_unique_ids(tmp_path):
    from eval.fixtures import corpus_utterances
    from steps.mirror_fixtures import BuildContext, write_mls_eng

    write_mls_eng(str(tmp_path), BuildContext(corpus_utterances(), ""))
    shards = sorted(glob.glob(f"{tmp_path}/data/train-*-of-00002.parquet"))
    assert len(shards) == 2 and all(is_mls_parquet(s) for s in shards)
    items = [i for s in shards for i in iter_mls_parquet(s)]
    assert all(isinstance(i, Utterance) for i in items) and len(items) == 11 + 3
    ids = [i.utterance_id for i in items]
    assert len(set(ids)) == len(ids) and all(len(i.split("_")) == 3 for i in ids)
    assert all(i.transcript == i.transcript.lower() for i in items)


def test_encode_and_interleave_one_document_per_chunk(tmp_path):
    pytest.importorskip("torch")
    import pyarrow.parquet as pq

    from steps.encode import EncodeConfig, encode_speech
    from steps.interleave import InterleaveConfig, interleave
    from tests.test_mimi import SMALL
    from tokenizer.audio import codes_to_chars
    from tokenizer.mimi import encode, load_mimi

    _two_shards(tmp_path / "raw")
    # one book's consecutive chunks: still one document each
    _write(f"{tmp_path}/raw/data/train-00002-of-00003.parquet",
           [_row(f"7_8_{k:06d}", seconds=0.5 + 0.3 * k, seed=10 + k, transcript=f"chunk {k}") for k in range(3)]
           + [_row("7_8_000009", transcript="")])
    config = EncodeConfig(input_paths=(f"{tmp_path}/raw/data/train-*.parquet",), output_path=str(tmp_path / "enc"),
                          mimi_model="random", mimi_config_overrides=SMALL, device="cpu", batch_size=8,
                          max_bad_fraction=0.2)
    summary = encode_speech(config)
    assert (summary["shards"], summary["utterances"], summary["recordings"]) == (3, 7, 7)
    assert summary["skipped"] == {"missing_transcript": 1}
    rows = [r for f in sorted(glob.glob(f"{tmp_path}/enc/shards/*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert len({r["utterance_id"] for r in rows}) == 7
    assert all(r["recording_id"] == r["utterance_id"] and r["order"] == 0 for r in rows)
    mimi = load_mimi("random", seed=0, device="cpu", config_overrides=SMALL)
    chunks = {i.utterance_id: i for s in glob.glob(f"{tmp_path}/raw/data/*.parquet") for i in iter_mls_parquet(s)}
    for r in rows:  # the step's batched, padded codes are each chunk's own codes
        assert r["transcript"] == chunks[r["utterance_id"]].transcript
        assert r["audio"] == codes_to_chars(encode(mimi, [chunks[r["utterance_id"]].audio])[0])
    docs = interleave(InterleaveConfig(input_path=str(tmp_path / "enc" / "shards"), output_path=str(tmp_path / "docs")))
    assert docs["documents"] == 2 * 7  # text-first and audio-first of every chunk


def test_explicit_mls_input_without_a_transcript_column_stops_before_any_shard(tmp_path):
    pytest.importorskip("torch")
    from steps.encode import EncodeConfig, encode_speech

    path = _write(f"{tmp_path}/data/x.parquet", [{"audio": {"bytes": _flac(0.5), "path": "a.flac"}, "text": "hi"}])
    config = EncodeConfig(input_paths=(path,), output_path=str(tmp_path / "enc"), input_format="mls",
                          mimi_model="random", device="cpu")
    with pytest.raises(ValueError, match=r"x\.parquet: columns \['audio', 'text'\] \(MLS's reader needs audio, "
                                         r"transcript\)"):
        encode_speech(config)
    assert not glob.glob(f"{tmp_path}/enc/shards/*.parquet")
