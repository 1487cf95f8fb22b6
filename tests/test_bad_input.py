"""Bad and hostile input through the real stage entry points (issue 9).

Each case ends one of two ways, as the stage's issue promises: a clear error naming the file, row or
field before the bad part is used, or skipped and counted in the step's summary.json. Finished
shards are never lost and nothing silently becomes garbage tokens. The README's table of these
cases is built from the assertions here.
"""

import gzip
import io
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from steps.audio_io import TARGET_SAMPLE_RATE, Utterance, iter_raw_items, prepare
from tests.test_audio_io import write_tar
from tokenizer.audio import CODEBOOK_SIZE, UNICODE_OFFSET, chars_to_codes, codes_to_chars

SR = TARGET_SAMPLE_RATE


# ---- helpers --------------------------------------------------------------------------------------


def tone(seconds, sr, freq=440.0, amp=0.3):
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encoded(audio, sr, fmt="WAV", subtype="PCM_16"):
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def meta(uid, text="A clean sentence."):
    return json.dumps({"id": uid, "text": text}).encode()


def audio_str(frames, seed=0, codebooks=8):
    return codes_to_chars(np.random.default_rng(seed).integers(0, CODEBOOK_SIZE, size=(codebooks, frames)))


def dominant_hz(audio, sr):
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / sr)[int(np.argmax(spectrum))])


def small_encode_config(out, inputs, **kw):
    from steps.encode import EncodeConfig
    from tests.test_mimi import SMALL

    return EncodeConfig(input_paths=tuple(str(i) for i in inputs), output_path=str(out), mimi_model="random",
                        device="cpu", batch_size=4, mimi_config_overrides=SMALL, **kw)


# ---- audio: sample rates, channels, non-finite, long -------------------------------------------


@pytest.mark.parametrize("sr,channels", [(8_000, 1), (44_100, 1), (48_000, 2)])
def test_other_rates_and_stereo_are_resampled_and_downmixed(tmp_path, sr, channels):
    left = tone(1.5, sr)
    audio = np.stack([left, 0.5 * left], axis=1) if channels == 2 else left
    tar = write_tar(tmp_path / "rates.tar", [("EN_B1_S1_W000001.wav", encoded(audio, sr, subtype="FLOAT")),
                                             ("EN_B1_S1_W000001.json", meta("EN_B1_S1_W000001"))])
    (item,) = [prepare(r) for r in iter_raw_items(tar)]
    assert isinstance(item, Utterance) and item.audio.dtype == np.float32 and item.audio.ndim == 1
    assert abs(len(item.audio) - int(1.5 * SR)) <= 2 and abs(item.duration - 1.5) < 1e-4
    assert abs(dominant_hz(item.audio, SR) - 440.0) < 2.0  # pitch survives resampling
    peak = 0.3 * (0.75 if channels == 2 else 1.0)  # stereo is averaged: (x + 0.5x) / 2
    middle = item.audio[SR // 4 : -SR // 4]
    assert abs(np.abs(middle).max() - peak) < 0.01


def test_encode_step_bad_audio_is_skipped_and_counted_good_shard_kept(tmp_path):
    """Inf, NaN, random bytes, 0-sample audio, empty transcript, a 10-minute utterance (over
    max_utterance_seconds: never decoded by Mimi) and an empty tar: the good utterances are encoded
    with the right durations and every bad one is counted by reason."""
    from steps.encode import encode_speech

    inf = tone(1.0, 16_000)
    inf[5] = np.inf
    nan = tone(1.0, 16_000)
    nan[7] = np.nan
    long_wav = encoded(tone(600.0, 8_000, amp=0.1), 8_000)  # 10 minutes
    members = [
        ("EN_B1_S1_W000000.wav", encoded(tone(1.5, 48_000), 48_000)), ("EN_B1_S1_W000000.json", meta("EN_B1_S1_W000000")),
        ("EN_B1_S1_W000001.wav", encoded(np.stack([tone(2.0, 44_100)] * 2, 1), 44_100)),
        ("EN_B1_S1_W000001.json", meta("EN_B1_S1_W000001")),
        ("EN_B1_S1_W000002.wav", encoded(inf, 16_000, subtype="FLOAT")), ("EN_B1_S1_W000002.json", meta("EN_B1_S1_W000002")),
        ("EN_B1_S1_W000003.wav", encoded(nan, 16_000, subtype="FLOAT")), ("EN_B1_S1_W000003.json", meta("EN_B1_S1_W000003")),
        ("EN_B1_S1_W000004.flac", np.random.default_rng(0).bytes(4000)), ("EN_B1_S1_W000004.json", meta("EN_B1_S1_W000004")),
        ("EN_B1_S1_W000005.wav", encoded(np.zeros(0, np.float32), 16_000)), ("EN_B1_S1_W000005.json", meta("EN_B1_S1_W000005")),
        ("EN_B1_S1_W000006.wav", encoded(tone(1.0, 8_000), 8_000)), ("EN_B1_S1_W000006.json", meta("EN_B1_S1_W000006", "")),
        ("EN_B1_S1_W000007.wav", long_wav), ("EN_B1_S1_W000007.json", meta("EN_B1_S1_W000007")),
    ]
    bad_tar = write_tar(tmp_path / "EN-B1.tar", members)
    empty_tar = write_tar(tmp_path / "EN-B2.tar", [])
    out = tmp_path / "enc"
    summary = encode_speech(small_encode_config(out, [bad_tar, empty_tar], max_bad_fraction=1.0))
    assert summary["skipped"] == {"unreadable_format": 1, "missing_transcript": 1, "non_finite": 2, "too_long": 1,
                                  "zero_length": 1}
    assert (summary["utterances"], summary["skipped_total"], summary["shards"]) == (2, 6, 2)
    stats = json.loads((out / "stats.json").read_text())
    too_long = [b for b in stats["bad_inputs"] if b["reason"] == "too_long"]
    assert too_long[0]["source"].endswith("EN-B1.tar::EN_B1_S1_W000007") and "600.0 s" in too_long[0]["detail"]
    rows = [r for f in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert {r["utterance_id"]: round(r["duration"], 4) for r in rows} == {"EN_B1_S1_W000000": 1.5,
                                                                         "EN_B1_S1_W000001": 2.0}
    for r in rows:
        assert chars_to_codes(r["audio"]).shape == (8, math.ceil(r["duration"] * SR / 1920))


def test_encode_step_bad_parquet_inputs(tmp_path):
    from steps.encode import encode_speech

    good = pa.table({"id": ["EN_B3_S1_W000000", "EN_B3_S1_W000001", "EN_B3_S1_W000002"],
                     "text": ["One.", "Two.", "Three."],
                     "audio": [encoded(tone(1.0, 16_000), 16_000), None, encoded(tone(1.0, 16_000), 16_000)]})
    pq.write_table(good, tmp_path / "good.parquet")
    int_audio = pa.table({"id": ["EN_B4_S1_W000000"], "text": ["x"], "audio": [123]})
    pq.write_table(int_audio, tmp_path / "int_audio.parquet")
    whole = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "truncated.parquet").write_bytes(whole[: len(whole) // 2])
    inputs = [tmp_path / "good.parquet", tmp_path / "int_audio.parquet", tmp_path / "truncated.parquet"]
    out = tmp_path / "enc"
    summary = encode_speech(small_encode_config(out, inputs, max_bad_fraction=1.0))
    assert summary["utterances"] == 2
    assert summary["skipped"] == {"corrupt": 1, "missing_audio": 1, "unreadable_format": 1}
    details = {b["reason"]: b for b in json.loads((out / "stats.json").read_text())["bad_inputs"]}
    assert details["corrupt"]["source"].endswith("truncated.parquet") and "truncated" in details["corrupt"]["detail"]
    assert "int" in details["unreadable_format"]["detail"]

    # a parquet file of the wrong dataset (no audio column) stops the step before any shard is encoded
    pq.write_table(pa.table({"id": ["a"], "text": ["b"]}), tmp_path / "no_audio.parquet")
    out2 = tmp_path / "enc2"
    with pytest.raises(ValueError, match=r"no_audio\.parquet: columns \['id', 'text'\]"):
        encode_speech(small_encode_config(out2, [tmp_path / "good.parquet", tmp_path / "no_audio.parquet"]))
    assert not list(out2.glob("shards/*.parquet"))


@pytest.mark.parametrize("field,value,match", [
    ("num_codebooks", 9, "exactly 8 codebooks"), ("num_codebooks", 4, "exactly 8 codebooks"),
    ("batch_size", 0, "batch_size"), ("max_bad_fraction", 1.5, "max_bad_fraction"),
    ("input_format", "mp4", "input_format"), ("max_utterance_seconds", 0, "max_utterance_seconds"),
])
def test_encode_config_is_checked_when_declared(field, value, match):
    from pipeline import versioned
    from steps.encode import EncodeConfig

    with pytest.raises(ValueError, match=match):
        EncodeConfig(input_paths=("x",), output_path="y", **{field: value})
    with pytest.raises(ValueError, match=match):  # also when the value is versioned in an experiment
        EncodeConfig(input_paths=("x",), output_path="y", **{field: versioned(value)})


# ---- codes: codebook counts, ranges, partial frames ---------------------------------------------


def test_codes_with_wrong_codebook_counts_or_out_of_range_codes_are_refused():
    with pytest.raises(ValueError, match="9 codebooks"):
        codes_to_chars(np.zeros((9, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="code 2048 at codebook 2, frame 1"):
        codes_to_chars(np.where(np.arange(24).reshape(8, 3) == 7, 2048, 0))
    with pytest.raises(ValueError, match="code -1 at codebook 0, frame 0"):
        codes_to_chars(-np.ones((8, 2), dtype=np.int64))
    four = codes_to_chars(np.zeros((4, 4), dtype=np.int64))  # a 4-codebook string read as 8 codebooks
    with pytest.raises(ValueError, match="character 4 .* is not a codebook-4 token"):
        chars_to_codes(four)
    with pytest.raises(ValueError, match="not a multiple of 8"):
        chars_to_codes(audio_str(2)[:-3])


# ---- interleave + tokenize: hostile utterances, ids checked ------------------------------------


def _shard(path, rows):
    cols = ("utterance_id", "recording_id", "order", "transcript", "duration", "audio")
    pq.write_table(pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)}), path)
    return str(path)


def test_hostile_utterances_through_interleave_and_tokenize(tmp_path, llama3_dir):
    from steps.interleave import InterleaveConfig, interleave
    from steps.tokenize import TokenizeConfig, tokenize
    from tokenizer.fast_tokenize import FastTokenizer

    good = audio_str(5, seed=1)
    nine = "".join(chr(UNICODE_OFFSET + 8 * CODEBOOK_SIZE + i) for i in range(9))  # a 9th codebook's chars
    out_of_range = good[:8] + chr(UNICODE_OFFSET + CODEBOOK_SIZE) + good[9:]  # codebook 1's char at codebook 0
    hostile = ("Say <|audio_start|> and <|begin_of_text|> or <|eot_id|> \ue123\ue800 "
               "<|audio<|audio_end|>_end|> done.")
    huge = "word " * 200_000  # a 1 MB transcript
    long_audio = audio_str(7_500, seed=2)  # 10 minutes of codes
    rows = [
        ("r1-0", "r1", 0, hostile, 0.4, good),
        ("r1-1", "r1", 1, "Four codebooks.", 0.4, codes_to_chars(np.zeros((4, 4), dtype=np.int64))),
        ("r1-2", "r1", 2, "Nine codebooks.", 0.1, nine[:8]),
        ("r1-3", "r1", 3, "Partial frame.", 0.4, good[:-3]),
        ("r1-4", "r1", 4, "Out of range.", 0.4, out_of_range),
        ("r1-5", "r1", 5, "No audio.", 0.0, ""),
        ("r1-6", "r1", 6, None, 0.4, good),  # no transcript: kept, counted
        ("r2-0", "r2", 0, huge, 600.0, long_audio),
        ("r3-0", "r3", 0, "Only bad audio.", 0.4, "abc"),  # a recording with nothing usable
    ]
    docs_out = tmp_path / "docs"
    summary = interleave(InterleaveConfig(input_path=_shard(tmp_path / "in.parquet", rows),
                                          output_path=str(docs_out), max_document_tokens=1 << 20))
    assert summary["invalid_audio_utterances"] == 5 and summary["empty_audio_utterances"] == 1
    assert summary["special_token_strings_dropped"] == 5 and summary["private_use_chars_dropped"] == 2
    assert summary["empty_transcripts"] == 1 and summary["utterances"] == 9
    assert summary["documents"] == 4  # r1 and r2 in two formats; r3 has no usable utterance
    docs = pq.read_table(docs_out / "documents" / "part-00000.parquet").to_pylist()
    assert all(doc["text"].count("<|begin_of_text|>") == 1 for doc in docs)

    tok_out = tmp_path / "tok"
    tsum = tokenize(TokenizeConfig(input_path=str(docs_out / "documents"), tokenizer=llama3_dir,
                                   output_path=str(tok_out)))
    tok = FastTokenizer.from_pretrained(llama3_dir)
    specials = tok.special_ids
    by_id = {doc["id"]: tok.encode_batch([doc["text"]])[0] for doc in docs}
    for doc_id, ids in by_id.items():
        counts = Counter(ids.tolist())
        utterances = 2 if doc_id.startswith("r1") else 1  # r1 keeps r1-0 and r1-6
        assert counts[specials["<|begin_of_text|>"]] == 1 and counts[specials["<|end_of_text|>"]] == 1
        assert counts[specials["<|eot_id|>"]] == 0
        for name in ("<|text_start|>", "<|text_end|>", "<|audio_start|>", "<|audio_end|>"):
            assert counts[specials[name]] == utterances, (doc_id, name)
        audio_ids = int(((ids >= tok.audio_base_id) & (ids < tok.audio_base_id + 16384)).sum())
        assert audio_ids == (2 * len(good) if utterances == 2 else len(long_audio))
    assert tsum["audio_tokens"] == 2 * (2 * len(good) + len(long_audio))
    assert tsum["documents"] == 4

    # a small document limit splits the 10-minute recording? no: one utterance is never cut, it is
    # kept alone and counted
    small = interleave(InterleaveConfig(input_path=str(tmp_path / "in.parquet"), output_path=str(tmp_path / "d2"),
                                        max_document_tokens=1000))
    assert small["overlong_utterances"] == 1 and small["recordings_split"] == 0


def test_interleave_bad_files_are_clear_errors(tmp_path):
    from steps.interleave import InterleaveConfig, interleave

    good = _shard(tmp_path / "a.parquet", [("u", "r", 0, "Hi.", 0.1, audio_str(1))])
    whole = Path(good).read_bytes()
    (tmp_path / "b.parquet").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"b\.parquet: not a readable parquet file \(truncated"):
        interleave(InterleaveConfig(input_path=str(tmp_path), output_path=str(tmp_path / "o1")))
    assert (tmp_path / "o1" / "stats" / "part-00000.json").exists()  # the good shard stays done
    (tmp_path / "b.parquet").unlink()

    typed = tmp_path / "typed"
    typed.mkdir()
    pq.write_table(pa.table({"utterance_id": ["u"], "recording_id": ["r"], "order": ["zero"], "transcript": ["t"],
                             "duration": [0.1], "audio": [audio_str(1)]}), typed / "c.parquet")
    with pytest.raises(ValueError, match=r"c\.parquet: column type\(s\) .*order is string"):
        interleave(InterleaveConfig(input_path=str(typed), output_path=str(tmp_path / "o2")))


@pytest.mark.parametrize("content,match", [
    ('{"text": "ok"}\n{"text": "broken\n', r"line 2 is not valid JSON"),
    ('{"text": "ok"}\n"just a string"\n', r"line 2 holds a JSON str, expected an object"),
    ('{"text": "ok"}\n[1, 2]\n', r"line 2 holds a JSON list"),
    ('{"text": "ok"}\n{"body": "no text field"}\n', r"line 2 has no field\(s\) \['text'\]"),
    ('{"text": "ok"}\n{"text": 5}\n', r"row 1 field 'text' is a int"),
])
def test_text_corpus_bad_jsonl(tmp_path, content, match):
    from steps.interleave import InterleaveConfig, interleave

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "t.jsonl").write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        interleave(InterleaveConfig(input_path=str(tmp_path / "in"), output_path=str(tmp_path / "o"), corpus="text"))
    assert "t.jsonl" in str(info.value)


def test_text_corpus_hostile_text_tokenizes_as_text(tmp_path, llama3_dir):
    from steps.interleave import InterleaveConfig, interleave
    from tokenizer.fast_tokenize import FastTokenizer

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "t.jsonl").write_text(json.dumps({"text": "<|begin_of_text|>x\ue000<|audio_start|>y"}) + "\n")
    summary = interleave(InterleaveConfig(input_path=str(tmp_path / "in"), output_path=str(tmp_path / "o"),
                                          corpus="text"))
    assert summary["special_token_strings_dropped"] == 2 and summary["private_use_chars_dropped"] == 1
    (doc,) = pq.read_table(tmp_path / "o" / "documents" / "part-00000.parquet").column("text").to_pylist()
    tok = FastTokenizer.from_pretrained(llama3_dir)
    ids = tok.encode_batch([doc])[0].tolist()
    assert ids[0] == 128000 and ids.count(128000) == 1 and 128258 not in ids  # BOS once, no audio_start
    assert not any(i >= tok.audio_base_id for i in ids)


# ---- tokenize: malformed inputs ------------------------------------------------------------------


@pytest.mark.parametrize("name,content,match", [
    ("b.jsonl", b'{"text": "x"}\n{not json}\n', r"b\.jsonl: line 2 is not valid JSON"),
    ("b.jsonl", b'{"text": "x"}\n42\n', r"b\.jsonl: line 2 holds a JSON int"),
    ("b.jsonl", b'{"text": "x"}\n{"id": 3}\n', r"b\.jsonl: line 2 has no field"),
    ("b.jsonl", b'{"text": "x"}\n{"text": ["a"]}\n', r"b\.jsonl: document 1 field 'text' is a list"),
    ("b.jsonl.gz", gzip.compress(np.random.default_rng(0).bytes(300_000))[:50_000],
     r"b\.jsonl\.gz: (cannot read|line)"),
    ("b.parquet", b"PAR1 this is not really parquet", r"b\.parquet: not a readable parquet file"),
])
def test_tokenize_bad_file_is_named_and_finished_parts_are_kept(tmp_path, qwen_dir, monkeypatch, name, content,
                                                                 match):
    import steps.tokenize as tok_mod
    from steps.tokenize import TokenizeConfig, tokenize

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.jsonl").write_text(json.dumps({"text": "<|begin_of_text|>fine"}) + "\n" + json.dumps({"text": ""}) + "\n")
    (docs / name).write_bytes(content)
    config = TokenizeConfig(input_path=str(docs), tokenizer=qwen_dir, output_path=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=match):
        tokenize(config)
    assert (tmp_path / "out" / "stats" / "part-00000.json").exists()  # a.jsonl is done and stays done

    (docs / name).unlink()
    (docs / "b.jsonl").write_text(json.dumps({"text": "<|begin_of_text|>fixed"}) + "\n")
    calls = []
    real = tok_mod.tokenize_shard
    monkeypatch.setattr(tok_mod, "tokenize_shard", lambda *a: calls.append(a[2]) or real(*a))
    summary = tokenize(config)
    assert [Path(c).name for c in calls] == ["b.jsonl"]  # only the fixed file is redone
    assert summary["documents"] == 2 and summary["empty_documents_skipped"] == 1


# ---- pre-encoded released documents ------------------------------------------------------------


def test_pre_encoded_bad_rows_and_files(tmp_path):
    from steps.pre_encoded import PreEncodedConfig, convert_pre_encoded

    a = audio_str(3)
    doc = "<|begin_of_text|><|text_start|>Hi.<|text_end|><|audio_start|>{}<|audio_end|><|end_of_text|>"
    src = tmp_path / "en000"
    src.mkdir()
    pq.write_table(pa.table({"id": ["r1_type1", "r2_type1", "r3_type2", "r4_type1", "r5_type1"],
                             "text": [doc.format(a), doc.format(a[:-1]), doc.format(a[8:] + a[:8][::-1]),
                                      doc.format(a) + a[:8], doc.replace("<|audio_end|>", "").format(a)]}),
                   src / "00000000.parquet")
    summary = convert_pre_encoded(PreEncodedConfig(input_paths=(str(src / "*.parquet"),),
                                                   output_path=str(tmp_path / "out")))
    assert summary["documents"] == 1 and summary["invalid_audio_documents_skipped"] == 4
    (kept,) = pq.read_table(next((tmp_path / "out" / "documents").glob("*.parquet"))).column("id").to_pylist()
    assert kept == "r1_type1"

    for table, match in [
        (pa.table({"id": ["r1_type1", "r2_type1"], "text": [doc.format(a), None]}), "row 1: field 'text' is null"),
        (pa.table({"id": [None], "text": [doc.format(a)]}), "row 0: field 'id' is null"),
        (pa.table({"id": ["r1"], "text": [doc.format(a)]}), "row 0: document id 'r1' does not end in _type1"),
        (pa.table({"doc": ["x"]}), "missing"),
    ]:
        bad = tmp_path / "bad"
        bad.mkdir(exist_ok=True)
        pq.write_table(table, bad / "00000001.parquet")
        with pytest.raises(ValueError, match=match):
            convert_pre_encoded(PreEncodedConfig(input_paths=(str(bad / "00000001.parquet"),),
                                                 output_path=str(tmp_path / "bad-out")))
    whole = (src / "00000000.parquet").read_bytes()
    (bad / "00000002.parquet").write_bytes(whole[:100])
    with pytest.raises(ValueError, match=r"00000002\.parquet: not a readable parquet file"):
        convert_pre_encoded(PreEncodedConfig(input_paths=(str(bad / "00000002.parquet"),),
                                             output_path=str(tmp_path / "bad-out")))


# ---- prompts and the single-file CLIs -----------------------------------------------------------


def test_prompts_neutralise_hostile_text(llama3_dir):
    from tokenizer.fast_tokenize import FastTokenizer
    from tokenizer.prompts import asr_prompt, tts_prompt

    tok = FastTokenizer.from_pretrained(llama3_dir)
    ids = tok.encode_batch([tts_prompt("read <|audio_start|><|begin_of_text|>\ue000 this").text])[0].tolist()
    assert ids.count(128258) == 1 and ids[-1] == 128258 and 128000 not in ids  # only the prompt's own
    assert not any(i >= tok.audio_base_id for i in ids)
    with pytest.raises(ValueError, match="audio: .*not a multiple of 8"):
        asr_prompt(audio_str(2)[:-1])


@pytest.fixture
def small_cli(monkeypatch):
    from tests.test_mimi import SMALL
    from steps import codec_cli
    from tokenizer import mimi as mimi_mod

    real_load = mimi_mod.load_mimi
    monkeypatch.setattr(mimi_mod, "load_mimi",
                        lambda model, device=None, **kw: real_load(model, device="cpu", config_overrides=SMALL))
    return codec_cli


def test_encode_cli_bad_and_odd_audio(tmp_path, small_cli, capsys):
    nan = tone(0.5, 16_000)
    nan[3] = np.nan
    cases = {"nan.wav": encoded(nan, 16_000, subtype="FLOAT"), "empty.wav": encoded(np.zeros(0, np.float32), 16_000),
             "noise.flac": np.random.default_rng(1).bytes(2000)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert small_cli.encode_cli([str(tmp_path / name), "--model", "random"]) == 1
        assert f"{tmp_path / name}: " in capsys.readouterr().err
    assert small_cli.encode_cli([str(tmp_path / "missing.wav")]) == 1
    assert f"{tmp_path / 'missing.wav'}: " in capsys.readouterr().err
    (tmp_path / "st48.wav").write_bytes(encoded(np.stack([tone(1.2, 48_000)] * 2, 1), 48_000))
    assert small_cli.encode_cli([str(tmp_path / "st48.wav"), "--out", str(tmp_path / "c.txt"), "--model", "random"]) == 0
    assert "1.20 s" in capsys.readouterr().out
    assert chars_to_codes((tmp_path / "c.txt").read_text(encoding="utf-8")).shape == (8, math.ceil(1.2 * SR / 1920))


@pytest.mark.parametrize("text,match", [
    (codes_to_chars(np.zeros((4, 4), dtype=np.int64)), "not a codebook-4 token"),
    (audio_str(2) + chr(UNICODE_OFFSET + 8 * CODEBOOK_SIZE) * 8, r"character 16 \(U\+12000\)"),
    (audio_str(3)[:-2], "not a multiple of 8"),
    (audio_str(1)[:7] + "A", r"character 7 \(U\+0041\)"),
])
def test_decode_cli_bad_codes(tmp_path, small_cli, capsys, text, match):
    import re

    (tmp_path / "c.txt").write_text(text, encoding="utf-8")
    assert small_cli.decode_cli([str(tmp_path / "c.txt"), "--out", str(tmp_path / "o.wav")]) == 1
    err = capsys.readouterr().err
    assert "c.txt: " in err and re.search(match, err), err
    assert not (tmp_path / "o.wav").exists()


def test_encode_refuses_stray_or_colliding_shards_before_work(tmp_path):
    from steps.encode import encode_speech

    good = write_tar(tmp_path / "EN-B5.tar", [("EN_B5_S1_W000000.wav", encoded(tone(0.5, 24_000), 24_000)),
                                              ("EN_B5_S1_W000000.json", meta("EN_B5_S1_W000000"))])
    out = tmp_path / "enc"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "EN-B0-deadbeef.parquet").write_bytes(b"PAR1 from another run")
    with pytest.raises(ValueError, match=r"holds 1 shard\(s\) that none of the inputs makes"):
        encode_speech(small_encode_config(out, [good]))
    assert not list((out / "shards").glob("*.done.json"))
    for d in ("x/a/b", "y/a/b"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "EN-B6.tar").write_bytes(Path(good).read_bytes())
    with pytest.raises(ValueError, match="would share an output shard"):
        encode_speech(small_encode_config(tmp_path / "enc2", [tmp_path / "x/a/b/EN-B6.tar", tmp_path / "y/a/b/EN-B6.tar"]))


def test_empty_recordings_shard_flows_through_as_zero_documents(tmp_path, qwen_dir):
    from steps.encode import schema
    from steps.interleave import InterleaveConfig, interleave
    from steps.tokenize import TokenizeConfig, tokenize

    (tmp_path / "enc").mkdir()
    pq.write_table(schema().empty_table(), tmp_path / "enc" / "empty.parquet")
    _shard(tmp_path / "enc" / "one.parquet", [("u", "r", 0, "", 0.1, audio_str(2))])  # empty transcript: kept
    summary = interleave(InterleaveConfig(input_path=str(tmp_path / "enc"), output_path=str(tmp_path / "docs")))
    assert (summary["input_files"], summary["recordings"], summary["documents"]) == (2, 1, 2)
    assert summary["empty_transcripts"] == 1
    tsum = tokenize(TokenizeConfig(input_path=str(tmp_path / "docs" / "documents"), tokenizer=qwen_dir,
                                   output_path=str(tmp_path / "tok")))
    assert (tsum["input_files"], tsum["documents"], tsum["audio_tokens"]) == (2, 2, 2 * 16)
