"""One document format on both paths: documents the interleave step builds from encoded utterances
and the released pre-encoded documents (steps/pre_encoded.py) are the same strings and, through
the tokenize step, the same ids: one <|begin_of_text|> first, one <|end_of_text|> last.

The released rows are written here literally from reference.md (section 3's templates inside
section 10's `<|begin_of_text|>` ... `<|end_of_text|>`, with the first Emilia release's stray
spaces inside the text spans), not with the code under test.
"""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokenizer.audio import codes_to_chars

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
TS, TE, AS, AE = "<|text_start|>", "<|text_end|>", "<|audio_start|>", "<|audio_end|>"
RECORDING = "vid0001"
UTTERANCES = [("Good morning.", 3), ("It rained all night", 2), ("and the river rose.", 4)]


def _utterances():
    rng = np.random.default_rng(7)
    return [(text, codes_to_chars(rng.integers(0, 2048, size=(8, frames)))) for text, frames in UTTERANCES]


def _released_rows(utts):
    """One recording as the released parquet holds it: `{rec}_type1` text-first, `_type2` audio-first."""
    text_first = BOS + "".join(f"{TS} {t} {TE}{AS}{a}{AE}" for t, a in utts) + EOS
    audio_first = BOS + "".join(f"{AS}{a}{AE}{TS} {t} {TE}" for t, a in utts) + EOS
    return {"id": [f"{RECORDING}_type1", f"{RECORDING}_type2"], "split": ["en000/00000000"] * 2,
            "text": [text_first, audio_first]}


def _both_paths(tmp_path):
    """(raw-built documents, converted released documents) as lists of (format, text)."""
    from steps.interleave import InterleaveConfig, interleave
    from steps.pre_encoded import PreEncodedConfig, convert_pre_encoded

    utts = _utterances()
    enc = tmp_path / "encoded"
    enc.mkdir()
    rows = [(f"{RECORDING}-{i}", RECORDING, i, t, len(a) / 8 / 12.5, a) for i, (t, a) in enumerate(utts)]
    cols = ("utterance_id", "recording_id", "order", "transcript", "duration", "audio")
    pq.write_table(pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)}), enc / "part-0.parquet")
    interleave(InterleaveConfig(input_path=str(enc), output_path=str(tmp_path / "raw")))

    rel = tmp_path / "release" / "en000"
    rel.mkdir(parents=True)
    pq.write_table(pa.table(_released_rows(utts)), rel / "00000000.parquet")
    convert_pre_encoded(PreEncodedConfig(input_paths=(str(rel / "*.parquet"),), output_path=str(tmp_path / "pre")))

    def read(d):
        return sorted((r["format"], r["text"]) for p in sorted(d.glob("*.parquet")) for r in pq.read_table(p).to_pylist())

    return read(tmp_path / "raw" / "documents"), read(tmp_path / "pre" / "documents")


def test_raw_and_released_documents_are_the_same_strings(tmp_path):
    raw, released = _both_paths(tmp_path)
    assert [f for f, _ in raw] == [f for f, _ in released] == ["audio_first", "text_first"]
    assert raw == released
    for _, text in raw:
        assert text.startswith(BOS) and text.endswith(EOS)
        assert text.count(BOS) == 1 and text.count(EOS) == 1


@pytest.mark.parametrize("which", ["llama3", "qwen"])
def test_both_paths_tokenize_to_the_same_ids_with_one_bos_and_one_eos(tmp_path, which, llama3_dir, qwen_dir):
    from levanter.store.cache import TreeCache
    from transformers import AutoTokenizer

    from steps.tokenize import TokenizeConfig, tokenize

    tokenizer = llama3_dir if which == "llama3" else qwen_dir
    _both_paths(tmp_path)
    caches = {}
    for name in ("raw", "pre"):
        out = str(tmp_path / f"tok-{name}")
        tokenize(TokenizeConfig(input_path=str(tmp_path / name / "documents"), tokenizer=tokenizer, output_path=out))
        cache = TreeCache.load(os.path.join(out, "train"), {"input_ids": np.zeros(0, dtype=np.int32)})
        caches[name] = [r["input_ids"].tolist() for r in cache]
    assert len(caches["raw"]) == len(caches["pre"]) == 2
    assert sorted(caches["raw"]) == sorted(caches["pre"])

    hf = AutoTokenizer.from_pretrained(tokenizer)
    bos, eos = hf.convert_tokens_to_ids([BOS, EOS])
    if which == "llama3":
        assert (bos, eos) == (128000, 128001)
    for ids in caches["raw"]:
        assert ids[0] == bos and ids.count(bos) == 1  # the tokenize step adds no second BOS
        assert ids[-1] == eos and ids.count(eos) == 1
        assert ids[1] in hf.convert_tokens_to_ids([TS, AS])


def test_tokenize_refuses_a_tokenizer_that_splits_bos(tmp_path):
    """A Qwen3-style tokenizer extended without <|begin_of_text|>/<|end_of_text|> (as this
    project's build did before) would spell every document's BOS as several text tokens."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    from steps.tokenize import TokenizeConfig, tokenize
    from tokenizer.audio import UNICODE_OFFSET
    from tokenizer.testing import make_tiny_qwen_style_tokenizer_dir
    from tokenizer.vocab import SODA_SPECIAL_TOKENS

    tok = AutoTokenizer.from_pretrained(make_tiny_qwen_style_tokenizer_dir(str(tmp_path / "base")))
    tok.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True, normalized=False)
                                                          for t in SODA_SPECIAL_TOKENS]})
    tok.add_tokens([AddedToken(chr(UNICODE_OFFSET + i), normalized=False) for i in range(16384)])
    tok.save_pretrained(str(tmp_path / "old-style"))
    docs = tmp_path / "docs"
    docs.mkdir()
    pq.write_table(pa.table({"text": [BOS + TS + "hi" + TE + EOS]}), docs / "d.parquet")
    with pytest.raises(ValueError, match=r"<\|begin_of_text\|> and <\|end_of_text\|> are not single tokens"):
        tokenize(TokenizeConfig(input_path=str(docs), tokenizer=str(tmp_path / "old-style"),
                                output_path=str(tmp_path / "out")))
