"""YODAS2's published raw layout (steps.raw_yodas2): cut points exact to the sample, bad segments
counted with reasons, bounded memory, and the encode step over the mirror fixture: one Ray-able
shard per archive, resumed per archive, one document per recording in time order."""

import dataclasses
import glob
import json
import math
import os
import tracemalloc
from collections import Counter

import numpy as np
import pytest

from steps.audio_io import Skipped, Utterance
from steps.mirror_fixtures import Yodas2Recording, write_yodas2_shard, yodas2_recording
from steps.raw_yodas2 import iter_yodas2_archive, sidecar_paths, utterance_id

SR = 24_000
GAP_VALUE = 0.5  # the audio between utterances; speech clips stay within +-0.3


def _clip(seed: int, seconds: float) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * SR)).astype(np.float32)


def _gap(n: int) -> np.ndarray:
    return np.full(n, GAP_VALUE, dtype=np.float32)


def _whole_member(archive: str, name: str) -> np.ndarray:
    import io
    import tarfile

    import soundfile as sf

    with tarfile.open(archive) as tar:
        data = tar.extractfile(name).read()
    return sf.read(io.BytesIO(data), dtype="float32")[0]


def _utterances(items):
    return [i for i in items if isinstance(i, Utterance)]


def _cut_at(uid: str) -> tuple[int, int]:
    start, end = uid.rsplit("-", 2)[1:]
    return int(start) * 240, int(end) * 240


def test_cut_points_are_exact_to_the_sample_and_gaps_are_not_kept(tmp_path):
    # a 130 s video (over the old 120 s limit), clips not whole centiseconds long (padded by the writer)
    clips = [(f"utterance {k}", _clip(k, 1.0 + 0.37 * k)) for k in range(5)]
    rec = yodas2_recording("a-b_c123456", clips, gap_seconds=25.0, gap_fill=_gap)
    assert len(rec.audio) / SR > 120
    archive = write_yodas2_shard(str(tmp_path), "en000", 0, [rec])
    items = list(iter_yodas2_archive(archive))
    utts = _utterances(items)
    assert len(utts) == len(items) == 5
    assert [u.utterance_id for u in utts] == list(rec.utterances)
    assert [u.order for u in utts] == sorted(u.order for u in utts)
    whole = _whole_member(archive, "a-b_c123456.wav")  # the file decoded at once, for reference
    assert len(whole) == len(rec.audio)
    for u, (text, clip) in zip(utts, clips):
        start, end = _cut_at(u.utterance_id)
        assert u.recording_id == "a-b_c123456" and u.transcript == text
        assert len(u.audio) == end - start and u.duration == (end - start) / SR
        np.testing.assert_array_equal(u.audio, whole[start:end])  # streamed cut == slice of the whole file
        # and it is the clip itself (16-bit wav: within one step), not shifted by even one sample
        assert np.abs(u.audio[: len(clip)] - clip).max() <= 1 / 32767
        assert np.abs(u.audio[1: len(clip)] - clip[:-1]).max() > 0.01
        assert not np.any(u.audio[len(clip):])  # the writer's zero padding to whole centiseconds
        assert not np.any(np.isclose(u.audio, GAP_VALUE, atol=0.01))  # nothing of the gaps before or after


def test_bad_segments_are_counted_with_reasons(tmp_path):
    good = yodas2_recording("goodvideo01", [("one", _clip(1, 1.0)), ("two", _clip(2, 1.0))], gap_fill=_gap)
    first, second = list(good.utterances)
    s1, e1 = (int(x) for x in first.rsplit("-", 2)[1:])
    duration = len(good.audio) / SR
    bad = dict(good.utterances)
    bad[utterance_id("goodvideo01", 7, s1 + 10, e1 + 20)] = "overlaps the first"
    bad[utterance_id("goodvideo01", 8, 300, 300)] = "empty span"
    bad[utterance_id("goodvideo01", 9, 100, int(duration * 100) + 500)] = "past the end"
    bad["goodvideo01-not-an-id"] = "malformed"
    bad[utterance_id("goodvideo01", 10, int(duration * 100) - 10, int(duration * 100) - 5)] = "   "
    good.utterances = bad
    no_text = Yodas2Recording("notextvideo", _clip(3, 2.0), {})
    short = yodas2_recording("shortaudio1", [("a", _clip(4, 1.0))], gap_fill=_gap)
    s, e = _cut_at(list(short.utterances)[0])
    # the duration line says 60 s, but the audio ends sooner: caught when the stream ends
    short.utterances[utterance_id("shortaudio1", 1, 3000, 3100)] = "beyond the audio"
    short.duration = 60.0
    archive = write_yodas2_shard(str(tmp_path), "en000", 3, [good, no_text, short])
    text_path, _ = sidecar_paths(archive)
    with open(text_path) as f:  # a video in the text file whose audio is not in the archive
        entries = json.load(f) + [{"audio_id": "lostvideo00", "text": {utterance_id("lostvideo00", 0, 0, 100): "x"}}]
    with open(text_path, "w") as f:
        json.dump(entries, f)

    items = list(iter_yodas2_archive(archive))
    skipped = [i for i in items if isinstance(i, Skipped)]
    assert Counter(s.reason for s in skipped) == {
        "overlapping_segment": 1, "segment_out_of_range": 3, "malformed_metadata": 1,
        "missing_transcript": 2, "missing_audio": 1}
    by_id = {s.utterance_id: s for s in skipped}
    assert "before the previous utterance ends" in by_id[utterance_id("goodvideo01", 7, s1 + 10, e1 + 20)].detail
    assert "past the end of the audio" in by_id[utterance_id("shortaudio1", 1, 3000, 3100)].detail
    assert by_id["notextvideo"].reason == "missing_transcript"
    assert [u.utterance_id for u in _utterances(items)] == [first, second, list(short.utterances)[0]]


def _peak_reading(tmp_path, minutes: float) -> tuple[int, int]:
    """(peak traced bytes while cutting a video of `minutes`, the video's size as float32)."""
    clips = [(f"u{k}", _clip(k, 2.0)) for k in range(3)]
    rec = yodas2_recording("longvideo01", clips, gap_seconds=minutes * 60 / 4,
                           gap_fill=lambda n: np.random.default_rng(n).uniform(-1e-3, 1e-3, n).astype(np.float32))
    whole = len(rec.audio) * 4
    archive = write_yodas2_shard(str(tmp_path / f"{minutes}"), "en000", 0, [rec])
    del rec
    tracemalloc.start()
    try:
        utts = _utterances(iter_yodas2_archive(archive))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(utts) == 3
    return peak, whole


def test_a_long_recording_is_read_in_bounded_memory(tmp_path):
    short_peak, _ = _peak_reading(tmp_path, 3)
    long_peak, whole = _peak_reading(tmp_path, 12)  # 70 MB as float32
    assert long_peak < whole / 4, f"peak {long_peak / 1e6:.1f} MB for a {whole / 1e6:.1f} MB recording"
    assert long_peak < 1.2 * short_peak + 2e6, (short_peak, long_peak)  # 4x the audio, the same memory


# ---- the encode step over the mirror fixture ----------------------------------------------------


pytest.importorskip("torch")


@pytest.fixture(scope="module")
def mirrored_yodas2(tmp_path_factory):
    """The YODAS2 raw fixture laid out in a mirror at the preset's pin, downloaded by the preset."""
    from eval.fixtures import corpus_utterances
    from steps.download import download_dataset
    from steps.download_presets import YODAS2_REVISION, yodas2_en_raw
    from steps.mirror import MIRROR_ENV, mirrored_url
    from steps.mirror_fixtures import BuildContext, write_yodas2_raw

    root = tmp_path_factory.mktemp("y2")
    write_yodas2_raw(mirrored_url(f"hf://datasets/espnet/yodas2@{YODAS2_REVISION}", str(root / "mirror")),
                     BuildContext(corpus_utterances(), ""))
    config = dataclasses.replace(yodas2_en_raw(revision=YODAS2_REVISION), output_path=str(root / "raw"),
                                 revision=YODAS2_REVISION)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MIRROR_ENV, str(root / "mirror"))
        mp.delenv("SODA_DATASETS_LOCK", raising=False)
        summary = download_dataset(config)
    assert summary["files"] == 6
    return root / "raw"


def _config(out, raw, **kw):
    from steps.encode import EncodeConfig
    from tests.test_mimi import SMALL

    return EncodeConfig(input_paths=(f"{raw}/data/en*/audio/*.tar.gz",), output_path=str(out), mimi_model="random",
                        device="cpu", batch_size=8, mimi_config_overrides=SMALL, **kw)


def test_encode_and_interleave_one_document_per_recording_in_time_order(mirrored_yodas2, tmp_path):
    import pyarrow.parquet as pq

    from steps.encode import encode_speech
    from steps.interleave import InterleaveConfig, interleave

    # 0.96 s chunks (12 frames): every utterance is encoded in several chunks, codes concatenated
    summary = encode_speech(_config(tmp_path / "enc", mirrored_yodas2, max_chunk_seconds=0.96))
    assert (summary["shards"], summary["recordings"], summary["utterances"], summary["skipped_total"]) == (2, 4, 16, 0)
    rows = [r for f in sorted(glob.glob(f"{tmp_path}/enc/shards/*.parquet")) for r in pq.read_table(f).to_pylist()]
    texts = {}
    for name in sorted(glob.glob(f"{mirrored_yodas2}/data/en000/text/*.json")):
        with open(name) as f:
            texts.update({u: t for e in json.load(f) for u, t in e["text"].items()})
    assert sorted(r["utterance_id"] for r in rows) == sorted(texts)
    for r in rows:
        start, end = _cut_at(r["utterance_id"])
        assert r["recording_id"] == r["utterance_id"][:11] and r["order"] == start // 240
        assert r["duration"] == (end - start) / SR and r["transcript"] == texts[r["utterance_id"]]
        assert len(r["audio"]) == 8 * math.ceil((end - start) / 1920)
    assert max(r["order"] for r in rows) / 100 > 120  # the long video is encoded, not skipped

    docs = interleave(InterleaveConfig(input_path=str(tmp_path / "enc" / "shards"), output_path=str(tmp_path / "docs")))
    assert docs["documents"] == 2 * 4
    table = [d for f in sorted(glob.glob(f"{tmp_path}/docs/documents/*.parquet")) for d in pq.read_table(f).to_pylist()]
    assert Counter(d["recording_id"] for d in table) == {rec: 2 for rec in {r["recording_id"] for r in rows}}
    for d in table:
        own = sorted((r for r in rows if r["recording_id"] == d["recording_id"]), key=lambda r: r["order"])
        at = [d["text"].index(r["transcript"]) for r in own]
        assert at == sorted(at), d["id"]  # utterances in time order


def test_rerun_resumes_per_archive(mirrored_yodas2, tmp_path, monkeypatch):
    import steps.encode as encode_mod
    from steps.encode import encode_speech, shard_name

    config = _config(tmp_path, mirrored_yodas2)
    archives = sorted(glob.glob(f"{mirrored_yodas2}/data/en000/audio/*.tar.gz"))
    first, second = (shard_name(a) for a in archives)
    real_write = encode_mod._write_parquet_atomic
    calls = []

    def crash_on_second(fs, path, rows, row_group_size):
        calls.append(os.path.basename(path))
        if second in path:
            raise RuntimeError("simulated crash while writing")
        real_write(fs, path, rows, row_group_size)

    monkeypatch.setattr(encode_mod, "_write_parquet_atomic", crash_on_second)
    with pytest.raises(RuntimeError, match="simulated crash"):
        encode_speech(config)
    assert (tmp_path / "shards" / f"{first}.done.json").exists()
    assert not (tmp_path / "shards" / f"{second}.done.json").exists()
    calls.clear()
    monkeypatch.setattr(encode_mod, "_write_parquet_atomic", lambda *a: (calls.append(os.path.basename(a[1])), real_write(*a)))
    summary = encode_speech(config)
    assert calls == [f"{second}.parquet"] and summary["utterances"] == 16


def test_missing_sidecar_and_bad_chunk_setting_are_clear_errors(tmp_path):
    from steps.encode import EncodeConfig, encode_speech

    with pytest.raises(ValueError, match="max_chunk_seconds"):
        EncodeConfig(input_paths=("x",), output_path="y", max_chunk_seconds=0.05)
    archive = write_yodas2_shard(str(tmp_path / "raw"), "en000", 0,
                                 [yodas2_recording("video000001", [("a", _clip(0, 1.0))])])
    os.remove(sidecar_paths(archive)[1])
    with pytest.raises(FileNotFoundError, match="duration/00000000.txt beside it"):
        encode_speech(_config(tmp_path / "out", tmp_path / "raw"))


def _released_documents(raw: str, out: str) -> str:
    """SODA's released form of the fixture's videos, built without the reader or the encode step: cut
    each utterance at the times its id publishes (read straight from the archive's wav), encode it
    alone with the same random Mimi, and write `{video}_type1` / `_type2` rows as the release has them."""
    import io
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    from tests.test_mimi import SMALL
    from tokenizer.audio import codes_to_chars
    from tokenizer.mimi import encode, load_mimi
    from tokenizer.vocab import AUDIO_END, AUDIO_START, BOS, EOS, TEXT_END, TEXT_START

    mimi = load_mimi("random", seed=0, device="cpu", config_overrides=SMALL)
    rows = []
    for archive in sorted(glob.glob(f"{raw}/data/en000/audio/*.tar.gz")):
        text_file = archive.replace("/audio/", "/text/").replace(".tar.gz", ".json")
        with open(text_file) as f:
            entries = json.load(f)
        with tarfile.open(archive) as tar:
            waves = {os.path.splitext(os.path.basename(m.name))[0]: sf.read(io.BytesIO(tar.extractfile(m).read()),
                                                                            dtype="float32")[0]
                     for m in tar.getmembers() if m.isfile()}
        for entry in entries:
            utts = sorted(entry["text"].items(), key=lambda kv: _cut_at(kv[0])[0])
            audio = [codes_to_chars(encode(mimi, [waves[entry["audio_id"]][slice(*_cut_at(u))]])[0]) for u, _ in utts]
            text_first = BOS + "".join(f"{TEXT_START}{t}{TEXT_END}{AUDIO_START}{a}{AUDIO_END}"
                                       for (_, t), a in zip(utts, audio)) + EOS
            audio_first = BOS + "".join(f"{AUDIO_START}{a}{AUDIO_END}{TEXT_START}{t}{TEXT_END}"
                                        for (_, t), a in zip(utts, audio)) + EOS
            rows += [{"id": f"{entry['audio_id']}_type1", "split": "en000/00000000", "text": text_first},
                     {"id": f"{entry['audio_id']}_type2", "split": "en000/00000000", "text": audio_first}]
    os.makedirs(out, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(out, "00000000.parquet"))
    return out


def test_the_raw_path_gives_the_released_document_of_each_recording(mirrored_yodas2, tmp_path):
    """The same recording, raw (reader -> encode step -> interleave) or released (pre-encoded step):
    the same document, up to the codec (here one random Mimi on one device: token for token)."""
    from steps.compare_documents import CompareDocumentsConfig, compare_documents
    from steps.encode import encode_speech
    from steps.interleave import InterleaveConfig, interleave
    from steps.pre_encoded import PreEncodedConfig, convert_pre_encoded

    encode_speech(_config(tmp_path / "enc", mirrored_yodas2))
    interleave(InterleaveConfig(input_path=str(tmp_path / "enc" / "shards"), output_path=str(tmp_path / "ours")))
    released = _released_documents(mirrored_yodas2, str(tmp_path / "release" / "en000"))
    convert_pre_encoded(PreEncodedConfig(input_paths=(f"{released}/*.parquet",), output_path=str(tmp_path / "rel")))
    summary = compare_documents(CompareDocumentsConfig(ours=str(tmp_path / "ours" / "documents"),
                                                       released=str(tmp_path / "rel" / "documents"),
                                                       output_path=str(tmp_path / "cmp")))
    assert (summary["matched"], summary["only_ours"], summary["only_released"]) == (8, 0, 0)  # 4 videos x 2 formats
    assert summary["skeleton_equal"] == 8, summary["examples"]  # same utterances, cuts, order, BOS/EOS, format
    assert summary["identical"] == 8 and summary["audio_token_agreement"] == 1.0  # one Mimi, one device
    assert summary["audio_tokens_compared"] > 1000


def test_a_changed_transcript_or_audio_token_is_found(tmp_path):
    from steps.compare_documents import compare_pair
    from tokenizer.vocab import AUDIO_END, AUDIO_START, BOS, EOS, TEXT_END, TEXT_START

    def doc(text, codes):
        audio = "".join(chr(0xE000 + 2048 * (i % 8) + c) for i, c in enumerate(codes))
        return f"{BOS}{TEXT_START}{text}{TEXT_END}{AUDIO_START}{audio}{AUDIO_END}{EOS}"

    same = compare_pair(doc("hello", range(16)), doc("hello", range(16)))
    assert same["skeleton_equal"] and same["audio_equal"] == same["audio_tokens"] == 16
    token = compare_pair(doc("hello", range(16)), doc("hello", [*range(15), 0]))
    assert token["audio_equal"] == 15 and token["first_difference"] == {"kind": "audio tokens", "audio_position": 15}
    text = compare_pair(doc("hello", range(16)), doc("hallo", range(16)))
    assert not text["skeleton_equal"] and text["first_difference"]["kind"] == "text"
    shorter = compare_pair(doc("hello", range(16)), doc("hello", range(8)))
    assert not shorter["skeleton_equal"] and shorter["first_difference"]["kind"] == "audio span lengths"
