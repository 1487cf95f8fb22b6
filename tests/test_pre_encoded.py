"""The released mm-pretrain parquet (id, split, text) -> documents (id, recording_id, format, text)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steps.pre_encoded import PreEncodedConfig, convert_pre_encoded, parse_id
from tokenizer.audio import codes_to_chars


def _release_file(path, recordings=("abcDEF12345", "xyz-_98765")):
    rng = np.random.default_rng(0)
    rows = []
    for rec in recordings:
        audio = codes_to_chars(rng.integers(0, 2048, size=(8, 5)))
        t1 = f"<|begin_of_text|><|text_start|> Hello there. <|text_end|><|audio_start|>{audio}<|audio_end|><|end_of_text|>"
        t2 = f"<|begin_of_text|><|audio_start|>{audio}<|audio_end|><|text_start|> Hello there. <|text_end|><|end_of_text|>"
        rows += [(f"{rec}_type1", "en000/00000000", t1), (f"{rec}_type2", "en000/00000000", t2)]
    table = pa.table({"id": [r[0] for r in rows], "split": [r[1] for r in rows], "text": [r[2] for r in rows]})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return audio


def test_converts_released_schema(tmp_path):
    audio = _release_file(tmp_path / "release" / "en000" / "00000000.parquet")
    _release_file(tmp_path / "release" / "en001" / "00000000.parquet", recordings=("other",))
    out = tmp_path / "out"
    summary = convert_pre_encoded(PreEncodedConfig(input_paths=(str(tmp_path / "release" / "*" / "*.parquet"),),
                                                   output_path=str(out)))
    assert summary["documents"] == 6 and summary["formats"] == {"audio_first": 3, "text_first": 3}
    docs = pq.read_table(out / "documents" / "en000-00000000.parquet")
    assert docs.column_names == ["id", "recording_id", "format", "text"]
    first = docs.to_pylist()[0]
    assert first["recording_id"] == "abcDEF12345" and first["format"] == "text_first"
    assert first["text"].startswith("<|begin_of_text|><|text_start|>Hello there.<|text_end|><|audio_start|>")
    assert all(r["text"].endswith("<|audio_end|><|end_of_text|>") or r["text"].endswith("<|text_end|><|end_of_text|>")
               for r in docs.to_pylist())  # released EOS kept: the interleave step's documents end so too
    assert audio in docs.to_pylist()[-1]["text"]
    assert json.loads((out / "summary.json").read_text()) == summary
    # rerun: done files are skipped
    mtime = (out / "documents" / "en000-00000000.parquet").stat().st_mtime_ns
    convert_pre_encoded(PreEncodedConfig(input_paths=(str(tmp_path / "release" / "*" / "*.parquet"),),
                                         output_path=str(out)))
    assert (out / "documents" / "en000-00000000.parquet").stat().st_mtime_ns == mtime


def test_options_and_errors(tmp_path):
    _release_file(tmp_path / "en000" / "00000001.parquet")
    out = tmp_path / "o"
    convert_pre_encoded(PreEncodedConfig(input_paths=(str(tmp_path / "en000" / "*.parquet"),), output_path=str(out),
                                         fix_whitespace=False, drop_end_of_text=True))
    text = pq.read_table(out / "documents" / "en000-00000001.parquet").column("text")[0].as_py()
    assert "<|text_start|> Hello" in text and not text.endswith("<|end_of_text|>")
    assert parse_id("a_b_type2") == ("a_b", "audio_first")
    with pytest.raises(ValueError, match="_type1"):
        parse_id("no-suffix")
    bad = tmp_path / "bad" / "x.parquet"
    bad.parent.mkdir()
    pq.write_table(pa.table({"doc": ["x"]}), bad)
    with pytest.raises(ValueError, match="id and text"):
        convert_pre_encoded(PreEncodedConfig(input_paths=(str(bad),), output_path=str(tmp_path / "b")))
