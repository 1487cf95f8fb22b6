"""Readers and checks for the encode step's three input forms, on good and deliberately bad files."""

import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf

from steps.audio_io import (
    TARGET_SAMPLE_RATE,
    Skipped,
    Utterance,
    iter_raw_items,
    load_audio_file,
    prepare,
    recording_of,
)


def _tone(seconds, sr, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def _encoded(audio, sr, fmt="FLAC", subtype="PCM_16"):
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _meta(uid, text="Hello there."):
    return json.dumps({"id": uid, "text": text, "speaker": uid.rsplit("_W", 1)[0], "language": "en"}).encode()


def bad_members():
    """(name, bytes) members of a webdataset tar: good items and one of each kind of bad item."""
    good = _encoded(_tone(1.0, 24_000), 24_000)
    nan_audio = _tone(0.5, 16_000)
    nan_audio[100:110] = np.nan
    return [
        ("EN_B00009_S00000_W000000.flac", good), ("EN_B00009_S00000_W000000.json", _meta("EN_B00009_S00000_W000000")),
        ("EN_B00009_S00000_W000001.wav", _encoded(_tone(1.0, 44_100, channels=2), 44_100, "WAV")),
        ("EN_B00009_S00000_W000001.json", _meta("EN_B00009_S00000_W000001", "Stereo, at 44.1 kHz.")),
        ("EN_B00009_S00001_W000000.flac", good[: len(good) // 2]),  # truncated
        ("EN_B00009_S00001_W000000.json", _meta("EN_B00009_S00001_W000000")),
        ("EN_B00009_S00001_W000001.flac", b""),  # zero-length file
        ("EN_B00009_S00001_W000001.json", _meta("EN_B00009_S00001_W000001")),
        ("EN_B00009_S00001_W000002.wav", _encoded(nan_audio, 16_000, "WAV", "FLOAT")),  # NaN samples
        ("EN_B00009_S00001_W000002.json", _meta("EN_B00009_S00001_W000002")),
        ("EN_B00009_S00001_W000003.flac", good),
        ("EN_B00009_S00001_W000003.json", _meta("EN_B00009_S00001_W000003", "   ")),  # no transcript
        ("EN_B00009_S00001_W000004.flac", good),
        ("EN_B00009_S00001_W000004.json", b'{"id": "EN_B00009_S00001_W000004", "text": '),  # malformed json
        ("EN_B00009_S00001_W000005.mp3", b"\x00not audio\x00" * 50),  # unreadable
        ("EN_B00009_S00001_W000005.json", _meta("EN_B00009_S00001_W000005")),
        ("EN_B00009_S00001_W000006.flac", _encoded(np.zeros(0, np.float32), 24_000)),  # 0 frames
        ("EN_B00009_S00001_W000006.json", _meta("EN_B00009_S00001_W000006")),
    ]


EXPECTED = {
    "EN_B00009_S00000_W000000": "ok",
    "EN_B00009_S00000_W000001": "ok",
    "EN_B00009_S00001_W000000": "truncated",
    "EN_B00009_S00001_W000001": "zero_length",
    "EN_B00009_S00001_W000002": "non_finite",
    "EN_B00009_S00001_W000003": "missing_transcript",
    "EN_B00009_S00001_W000004": "malformed_metadata",
    "EN_B00009_S00001_W000005": "unreadable_format",
    "EN_B00009_S00001_W000006": "zero_length",
}


def write_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def _outcomes(items):
    return {(i.utterance_id): ("ok" if isinstance(i, Utterance) else i.reason) for i in items}


def test_webdataset_bad_inputs_are_classified(tmp_path):
    items = [prepare(r) for r in iter_raw_items(write_tar(tmp_path / "bad.tar", bad_members()))]
    assert _outcomes(items) == EXPECTED
    stereo = next(i for i in items if i.utterance_id == "EN_B00009_S00000_W000001")
    assert stereo.audio.ndim == 1 and stereo.audio.dtype == np.float32
    assert abs(len(stereo.audio) - TARGET_SAMPLE_RATE) <= 2  # 1 s at 44.1 kHz -> 24 kHz
    assert stereo.transcript == "Stereo, at 44.1 kHz."
    for s in items:
        if isinstance(s, Skipped):
            assert "bad.tar::" in s.source and s.detail


def test_gzipped_tar_and_a_tar_that_breaks_midway(tmp_path):
    members = bad_members()[:4]
    gz = tmp_path / "ok.tar.gz"
    with tarfile.open(gz, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert _outcomes(prepare(r) for r in iter_raw_items(str(gz))) == {
        "EN_B00009_S00000_W000000": "ok", "EN_B00009_S00000_W000001": "ok"}
    whole = (tmp_path / "x.tar")
    write_tar(whole, members)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[: 512 * 3 + 700])  # inside the second member
    outcomes = [prepare(r) for r in iter_raw_items(str(cut))]
    assert [getattr(o, "reason", "ok") for o in outcomes][-1] == "corrupt"


def test_parquet_with_audio_bytes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = _encoded(_tone(0.5, 16_000), 16_000)
    table = pa.table({
        "id": ["1272-128104-0000", "1272-128104-0001", "x"],
        "audio": [{"bytes": good, "path": "a.flac"}, {"bytes": good, "path": "b.flac"}, {"bytes": b"", "path": "c.flac"}],
        "text": ["MISTER QUILTER IS THE APOSTLE", None, "T"],
    })
    path = tmp_path / "part.parquet"
    pq.write_table(table, path)
    items = [prepare(r) for r in iter_raw_items(str(path))]
    assert _outcomes(items) == {"1272-128104-0000": "ok", "1272-128104-0001": "missing_transcript", "x": "zero_length"}
    assert abs(items[0].duration - 0.5) < 1e-3
    kept = [prepare(r, require_transcript=False) for r in iter_raw_items(str(path))]
    assert kept[1].transcript is None and isinstance(kept[1], Utterance)


def test_audio_dir_with_sidecars_and_manifest(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    sf.write(d / "a.wav", _tone(0.3, 22_050), 22_050)
    (d / "a.txt").write_text("A plain transcript.\n")
    sf.write(d / "b.flac", _tone(0.3, 24_000), 24_000)
    (d / "b.json").write_text(json.dumps({"text": "Sidecar json.", "recording_id": "rec1", "order": 7}))
    sf.write(d / "c.flac", _tone(0.3, 24_000), 24_000)  # no transcript at all
    items = {i.utterance_id: i for i in (prepare(r) for r in iter_raw_items(str(d)))}
    assert items["a"].transcript == "A plain transcript."
    assert (items["b"].recording_id, items["b"].order) == ("rec1", 7)
    assert items["c"].reason == "missing_transcript"

    m = tmp_path / "man"
    (m / "wavs").mkdir(parents=True)
    sf.write(m / "wavs" / "u1.flac", _tone(0.3, 24_000), 24_000)
    (m / "manifest.jsonl").write_text(
        json.dumps({"id": "u1", "audio": "wavs/u1.flac", "text": "From the manifest."}) + "\n"
        + json.dumps({"id": "u2", "audio": "wavs/missing.flac", "text": "No file."}) + "\n{broken\n")
    outcomes = _outcomes(prepare(r) for r in iter_raw_items(str(m)))
    assert outcomes == {"u1": "ok", "u2": "missing_audio", "line3": "malformed_metadata"}


@pytest.mark.parametrize("uid, expected", [
    ("EN_B00000_S00012_W000003", ("EN_B00000_S00012", 3)),  # Emilia
    ("EN_-x_Y9ab_W000012", ("EN_-x_Y9ab", 12)),  # Emilia-YODAS (YouTube ids may hold '_' and '-')
    ("abcdEFGH123-00012345-00013000", ("abcdEFGH123", 12345)),  # ESPnet/YODAS segment
    ("1272-128104-0012", ("1272-128104", 12)),  # LibriSpeech: the chapter
    ("some_clip", ("some_clip", 0)),  # anything else: its own recording
])
def test_recording_rule(uid, expected):
    assert recording_of(uid) == expected
    assert recording_of(uid, {"recording_id": "r", "order": 4}) == ("r", 4)


def test_load_audio_file_resamples_to_mono_24k(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, _tone(0.5, 8_000, channels=2), 8_000)
    audio = load_audio_file(str(path))
    assert audio.ndim == 1 and abs(len(audio) - 12_000) <= 2
