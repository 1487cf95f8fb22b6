"""Careless and hostile input to the audio readers and the `soda` tools (issue 16).

- audio cut short in every container we read is skipped as 'truncated', never encoded as a good,
  shorter utterance (libsndfile shrinks a WAV's frame count to the bytes present);
- long files are read and encoded a window at a time, in bounded memory;
- no tool overwrites its input; bad input files and out-of-range numbers end with one line on
  stderr and the tool's error code, before any model loads.
"""

import io
import json
import math
import os
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SR = 24_000


def speechy(seconds, sr, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.5 * t)
    x = np.sin(2 * np.pi * np.cumsum(f0) / sr) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    return (0.2 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def encoded(audio, sr, fmt, subtype):
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


# every container libsndfile writes here, as (format, subtype, sample rate)
CONTAINERS = [("WAV", "PCM_16", 16_000), ("WAV", "FLOAT", 44_100), ("WAVEX", "PCM_24", 48_000),
              ("RF64", "PCM_16", 16_000), ("W64", "PCM_16", 16_000), ("AIFF", "PCM_16", 22_050),
              ("AU", "PCM_16", 8_000), ("FLAC", "PCM_16", 16_000), ("OGG", "VORBIS", 16_000),
              ("OGG", "OPUS", 48_000), ("MP3", "MPEG_LAYER_III", 16_000)]


def _prepare(data, ext="wav", max_seconds=None):
    from steps.audio_io import RawItem, prepare

    return prepare(RawItem(key="EN_B1_S1_W000001", source=f"x.{ext}", audio=data, audio_ext=ext,
                           meta={"id": "EN_B1_S1_W000001", "text": "A sentence."}), max_seconds=max_seconds)


# ---- truncated audio ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt,subtype,sr", CONTAINERS, ids=[f"{f}-{s}" for f, s, _ in CONTAINERS])
def test_a_file_cut_in_half_is_truncated_in_every_container(fmt, subtype, sr):
    """Before: WAV/RF64/W64/AIFF/AU and Ogg cut in half were encoded as a good, shorter utterance
    (bad_fraction 0.0); FLAC and MP3 were 'corrupt'."""
    channels = 2 if fmt in ("WAVEX", "OGG") else 1
    audio = speechy(8.0, sr)
    whole = encoded(np.stack([audio, 0.5 * audio], 1) if channels == 2 else audio, sr, fmt, subtype)
    ok = _prepare(whole)
    assert ok.__class__.__name__ == "Utterance" and abs(ok.duration - 8.0) < 0.1, ok
    for cut in (0.5, 0.9):
        skipped = _prepare(whole[: int(len(whole) * cut)])
        assert skipped.__class__.__name__ == "Skipped" and skipped.reason == "truncated", (cut, skipped)
        assert "cut short" in skipped.detail


def test_ogg_cut_on_a_page_boundary_and_streamed_wav_sizes():
    """An Ogg cut exactly between pages lacks its end-of-stream page; a WAV whose data size is a
    streaming writer's placeholder (0x7FFFFFFF, 0xFFFFFFFF) reads to the end of the file, not
    'truncated', while a real size larger than the bytes present is."""
    ogg = encoded(speechy(12.0, 16_000), 16_000, "OGG", "VORBIS")
    last_page = ogg.rfind(b"OggS")
    cut = _prepare(ogg[:last_page], "ogg")
    assert cut.reason == "truncated" and "end-of-stream" in cut.detail

    wav = bytearray(encoded(speechy(2.0, 16_000), 16_000, "WAV", "PCM_16"))
    at = wav.index(b"data") + 4
    for placeholder in (0xFFFFFFFF, 0x7FFFFFFF):
        streamed = bytearray(wav)
        streamed[at:at + 4] = struct.pack("<I", placeholder)
        item = _prepare(bytes(streamed))
        assert item.__class__.__name__ == "Utterance" and abs(item.duration - 2.0) < 1e-3
    assert _prepare(bytes(wav[:-1000])).reason == "truncated"


def test_truncated_audio_is_counted_by_the_encode_step(tmp_path):
    from steps.encode import encode_speech
    from tests.test_audio_io import write_tar
    from tests.test_bad_input import meta, small_encode_config

    members = []
    for i, (fmt, subtype, sr, ext) in enumerate([("WAV", "PCM_16", 16_000, "wav"), ("OGG", "VORBIS", 16_000, "ogg"),
                                                 ("FLAC", "PCM_16", 16_000, "flac"), ("WAV", "PCM_16", 48_000, "wav")]):
        data = encoded(speechy(6.0, sr, seed=i), sr, fmt, subtype)
        uid = f"EN_B1_S1_W{i:06d}"
        members += [(f"{uid}.{ext}", data if i == 3 else data[: len(data) // 2]), (f"{uid}.json", meta(uid))]
    out = tmp_path / "enc"
    summary = encode_speech(small_encode_config(out, [write_tar(tmp_path / "EN-B1.tar", members)], max_bad_fraction=1.0))
    assert summary["skipped"] == {"truncated": 3} and summary["utterances"] == 1
    stats = json.loads((out / "stats.json").read_text())
    assert sorted(b["source"].rsplit("::", 1)[1] for b in stats["bad_inputs"]) == [
        "EN_B1_S1_W000000", "EN_B1_S1_W000001", "EN_B1_S1_W000002"]
    assert all(b["reason"] == "truncated" for b in stats["bad_inputs"])


# ---- streaming: bounded memory ------------------------------------------------------------------


def test_streaming_reader_equals_whole_decode_in_bounded_memory(tmp_path):
    """`iter_audio_chunks` gives exactly what decoding and resampling the whole file gives, in
    chunks of the asked size, while holding a few seconds of audio: a 10-minute file is read with a
    peak of a few MB of numpy memory (the whole file at 24 kHz is 58 MB)."""
    from steps.audio_io import iter_audio_chunks, to_mono_24k

    short = encoded(np.stack([speechy(5.0, 44_100)] * 2, 1), 44_100, "WAV", "PCM_16")
    samples, sr = sf.read(io.BytesIO(short), dtype="float32", always_2d=True)
    chunks = list(iter_audio_chunks(short, chunk_samples=1920 * 10))
    assert all(len(c) == 1920 * 10 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 1920 * 10
    assert np.array_equal(np.concatenate(chunks), to_mono_24k(samples, sr))

    long = tmp_path / "long.wav"
    with sf.SoundFile(long, "w", 16_000, 1, subtype="PCM_16") as f:
        for minute in range(10):
            f.write(speechy(60.0, 16_000, seed=minute))
    tracemalloc.start()
    try:
        total = sum(len(c) for c in iter_audio_chunks(str(long), chunk_samples=SR))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 600 * SR
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("fmt, subtype", [("MP3", "MPEG_LAYER_III"), ("OGG", "VORBIS"), ("FLAC", "PCM_16")])
def test_streaming_reader_equals_whole_decode_for_compressed_formats(fmt, subtype, monkeypatch):
    """libsndfile's MP3 decoder loses its bit reservoir between read calls (the frames after each block
    boundary decode wrong, up to 0.4 off): the reader must still give what one whole decode gives."""
    from steps import audio_io
    from steps.audio_io import iter_audio_chunks, to_mono_24k

    monkeypatch.setattr(audio_io, "STREAM_BLOCK_FRAMES", 4096)  # many block boundaries in 6 s

    data = encoded(speechy(6.0, 24_000), 24_000, fmt, subtype)
    samples, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    streamed = np.concatenate(list(iter_audio_chunks(data, fmt.lower(), chunk_samples=1000)))
    whole = to_mono_24k(samples, sr)
    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


def test_too_long_is_found_without_decoding_the_file():
    """The encode step (sharing the reader) skips a 10-minute utterance as 'too_long' from its
    header, never holding the decoded 10 minutes."""
    data = encoded(speechy(600.0, 8_000), 8_000, "WAV", "PCM_16")
    tracemalloc.start()
    try:
        item = _prepare(data, max_seconds=120)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert item.reason == "too_long" and "600.0 s" in item.detail
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB"


@pytest.fixture(scope="module")
def small_mimi():
    import torch

    from tests.test_mimi import SMALL
    from tokenizer.mimi import load_mimi

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small calls: a second thread only waits on a busy machine
    try:
        yield load_mimi("random", seed=0, device="cpu", config_overrides=SMALL)
    finally:
        torch.set_num_threads(threads)


def _recording_calls(model):
    lengths = []
    real = model.encode

    def encode(input_values, *a, **k):
        lengths.append(input_values.shape[-1])
        return real(input_values, *a, **k)

    model.encode = encode
    return lengths


def test_encode_stream_matches_one_call_and_never_sees_more_than_a_window(small_mimi):
    """Windows chained through transformers' streaming caches give the codes of one whole-file
    call (on this stand-in, whose transformer barely mixes time; independent windows differ at
    every boundary), trimmed to ceil(samples / 1920) frames; audio within one window gets exactly
    `encode`'s codes; no Mimi call sees more than one window."""
    from tokenizer.mimi import encode, encode_stream

    audio = speechy(20.0, SR)[:-777]
    (whole,) = encode(small_mimi, [audio])
    lengths = _recording_calls(small_mimi)
    try:
        for window, chunk in ((7, 5000), (25, 1920 * 25), (60, 100_000)):
            lengths.clear()
            pieces = [audio[i:i + chunk] for i in range(0, len(audio), chunk)]
            codes = np.concatenate(list(encode_stream(small_mimi, pieces, window_frames=window)), axis=1)
            assert codes.shape == (8, math.ceil(len(audio) / 1920)) and np.array_equal(codes, whole), window
            assert max(lengths) == window * 1920 and len(lengths) == math.ceil(len(audio) / (window * 1920))
        independent = np.concatenate([encode(small_mimi, [audio[i:i + 25 * 1920]])[0]
                                      for i in range(0, len(audio), 25 * 1920)], axis=1)
        assert not np.array_equal(independent, whole)  # what carrying the caches prevents
        short = audio[: 25 * 1920]
        assert np.array_equal(next(encode_stream(small_mimi, [short], window_frames=25)),
                              encode(small_mimi, [short])[0])
    finally:
        del small_mimi.encode


def test_soda_encode_streams_a_long_file(tmp_path, small_mimi, monkeypatch, capsys):
    from steps import codec_cli
    from tokenizer import mimi as mimi_mod
    from tokenizer.audio import chars_to_codes

    monkeypatch.setattr(mimi_mod, "load_mimi", lambda *a, **k: small_mimi)
    monkeypatch.setattr(mimi_mod, "STREAM_WINDOW_FRAMES", 25)  # 2 s windows over a 12 s file
    wav = tmp_path / "long.wav"
    sf.write(wav, speechy(12.0, 16_000), 16_000)
    lengths = _recording_calls(small_mimi)
    try:
        assert codec_cli.encode_cli([str(wav), "--out", str(tmp_path / "c.txt"), "--model", "random"]) == 0
    finally:
        del small_mimi.encode
    assert max(lengths) == 25 * 1920 and len(lengths) == 6
    from steps.audio_io import load_audio_file

    codes = chars_to_codes((tmp_path / "c.txt").read_text(encoding="utf-8"))
    assert np.array_equal(codes, mimi_mod.encode(small_mimi, [load_audio_file(str(wav))])[0])
    assert "12.00 s" in capsys.readouterr().out


# ---- the command-line tools ---------------------------------------------------------------------

# a `soda` whose model loaders announce themselves and stop, so a test sees whether one was reached
RUNNER = """
import sys
def no_model(*a, **k):
    print("MODEL LOADED", file=sys.stderr)
    sys.exit(99)
import eval.model, tokenizer.build, tokenizer.mimi
eval.model.load_scoring_model = tokenizer.mimi.load_mimi = tokenizer.build.build_extended_tokenizer = no_model
from infra.cli import main
sys.exit(main(sys.argv[1:]))
"""


def soda(*argv, cwd):
    proc = subprocess.run([sys.executable, "-c", RUNNER, *map(str, argv)], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    return proc.returncode, proc.stderr


@pytest.fixture
def files(tmp_path):
    from tokenizer.audio import codes_to_chars

    wav = tmp_path / "a.wav"
    wav.write_bytes(encoded(speechy(1.0, 16_000), 16_000, "WAV", "PCM_16"))
    (tmp_path / "half.wav").write_bytes(wav.read_bytes()[:20_000])
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text(" \n\n")
    (tmp_path / "binary.dat").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "dir").mkdir()
    (tmp_path / "codes.txt").write_text(codes_to_chars(np.zeros((8, 3), dtype=np.int64)), encoding="utf-8")
    os.symlink(wav, tmp_path / "link.wav")
    os.link(wav, tmp_path / "hard.wav")
    return tmp_path


# (argv, exit code, what the one stderr line must hold); each was a traceback, a model load, or an
# overwritten input before
CASES = [
    (["encode", "half.wav", "--model", "random"], 1, ["half.wav", "truncated", "cut short"]),
    (["encode", "dir", "--model", "random"], 1, ["dir", "is a directory"]),
    (["encode", "a.wav", "--out", "a.wav"], 1, ["a.wav", "would overwrite the input"]),
    (["encode", "a.wav", "--out", "link.wav"], 1, ["link.wav", "would overwrite the input", "a.wav"]),
    (["encode", "a.wav", "--out", "hard.wav"], 1, ["hard.wav", "would overwrite the input"]),
    (["decode", "missing.txt", "--out", "o.wav"], 1, ["missing.txt", "no such file"]),
    (["decode", "empty.txt", "--out", "o.wav"], 1, ["empty.txt", "empty (0 bytes)"]),
    (["decode", "blank.txt", "--out", "o.wav"], 1, ["blank.txt", "no audio codes"]),
    (["decode", "binary.dat", "--out", "o.wav"], 1, ["binary.dat", "not UTF-8 text"]),
    (["decode", "codes.txt", "--out", "codes.txt"], 1, ["codes.txt", "would overwrite the input"]),
    (["generate", "--checkpoint", ".", "--task", "asr", "--audio", "a.wav", "--out", "a.wav"], 2,
     ["--out a.wav", "would overwrite the input --audio"]),
    (["generate", "--checkpoint", ".", "--task", "tts", "--text", "hi", "--out", "o", "--temperature", "nan"], 2,
     ["--temperature", "finite"]),
    (["generate", "--checkpoint", ".", "--task", "tts", "--text", "hi", "--out", "a.wav"], 2, ["--out", "is a file"]),
    (["evaluate", "sblimp", "--model", "missing", "--data", "dir", "--out", "e"], 2, ["--model missing", "no such"]),
    (["evaluate", "sblimp", "--model", "dir", "--data", "missing", "--out", "e"], 2, ["--data missing", "no such"]),
    (["evaluate", "sblimp", "--model", "dir", "--data", "dir", "--out", "e", "--batch-size", "0"], 2,
     ["--batch-size", ">= 1"]),
    (["build-tokenizer", "--base", "./missing", "--out", "t"], 2, ["--base ./missing", "no such directory"]),
    (["build-tokenizer", "--base", "a.wav", "--out", "t"], 2, ["--base a.wav", "is a file"]),
    (["build-tokenizer", "--num-codebooks", "0", "--out", "t"], 2, ["--num-codebooks", ">= 1"]),
    (["fit-scaling", "binary.dat"], 2, ["binary.dat", "not UTF-8 text"]),
    (["fit-scaling", "dir"], 2, ["dir", "is a directory"]),
    (["isoflop-grid", "--budgets", "inf"], 2, ["--budgets", "finite"]),
    (["isoflop-grid", "--budgets", "3e18", "--extra", "3e18:-5"], 2, ["--extra width", ">= 1"]),
]


@pytest.mark.parametrize("argv,code,says", CASES, ids=[" ".join(c[0][:2]) + f"-{i}" for i, c in enumerate(CASES)])
def test_bad_cli_input_is_one_line_before_any_model_loads(files, argv, code, says):
    before = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    rc, stderr = soda(*argv, cwd=files)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == code and len(lines) == 1, stderr
    assert lines[0].startswith(f"soda {argv[0]}: ") and all(s in lines[0] for s in says), lines[0]
    assert "Traceback" not in stderr and "MODEL LOADED" not in stderr
    after = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    assert after == before  # nothing written, no input overwritten


def test_generate_refuses_an_out_dir_whose_files_are_inputs(files, capsys, monkeypatch):
    """`--out DIR` writes DIR/output.wav: refused when that is the --audio file."""
    import eval.model
    from infra.cli import main

    monkeypatch.setattr(eval.model, "load_scoring_model", lambda *a, **k: pytest.fail("a model was loaded"))
    (files / "out").mkdir()
    clip = files / "out" / "output.wav"
    clip.write_bytes((files / "a.wav").read_bytes())
    argv = ["generate", "--checkpoint", str(files), "--task", "asr", "--audio", str(clip), "--out", str(files / "out")]
    assert main(argv) == 2
    assert "--out's output.wav" in capsys.readouterr().err and clip.read_bytes() == (files / "a.wav").read_bytes()
    assert main(argv[:-1] + [str(files / "out2"), "--seed", "-1"]) == 2
    assert "--seed must be >= 0" in capsys.readouterr().err
