"""Fast tokenization == the HF tokenizer, and the tokenize step's Levanter cache."""

import gzip
import json
import os
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokenizer.audio import codes_to_chars

SPECIALS = ["<|begin_of_text|>", "<|text_start|>", "<|text_end|>", "<|audio_start|>", "<|audio_end|>"]
TEXTS = [
    "", " ", "  ", "\n", "\r\n", "\n\n", " \t\n ", "Hello", " hello", "world ", "  two  spaces  ",
    "naïve café", "Zürich", "数字123456", "1234567", "🎉🙂", "❤", "e\u0301", "'s", "I'm", "don't",
    "<|", "|>", "<|text", "_start|>", "<|eot_id|>", "<|reserved_special_token_3|>", "<think>",
    "<|im_end|>", "ﬁ", "?!", " .", "ß", "\u00a0", "A" * 30,
]


def random_docs(n, seed=0):
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        pieces = []
        for _ in range(rng.randint(1, 30)):
            kind = rng.random()
            if kind < 0.3:
                pieces.append(rng.choice(SPECIALS))
            elif kind < 0.55:  # an audio run, any of the 16,384 characters
                pieces.append("".join(chr(0xE000 + int(i)) for i in nrng.integers(0, 16384, rng.randint(1, 40))))
            else:
                pieces.append(rng.choice(TEXTS))
        docs.append("".join(pieces))
    return docs


def interleaved_docs():
    a = codes_to_chars(np.random.default_rng(3).integers(0, 2048, size=(8, 20)))
    return [
        "<|begin_of_text|><|text_start|>Hello there.<|text_end|><|audio_start|>" + a + "<|audio_end|>",
        "<|begin_of_text|><|audio_start|>" + a + "<|audio_end|><|text_start|><|text_end|>",
        "<|begin_of_text|><|text_start|> Leading and trailing  <|text_end|><|audio_start|>" + a[:8] + "<|audio_end|>",
        "<|begin_of_text|>Plain text document, naïve 🎉 数字.\n\nSecond paragraph.",
        "",
        a,
        "<|begin_of_text|><|text_start|>Ünïcödé ❤️ 😀<|text_end|><|audio_start|>" + a[8:24] + "<|audio_end|>",
    ]


def hf_ids(tokenizer_dir, docs):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    return tok(docs, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("which", ["llama3", "qwen"])
def test_fast_tokenize_matches_hf(which, llama3_dir, qwen_dir):
    from tokenizer.fast_tokenize import FastTokenizer

    path = llama3_dir if which == "llama3" else qwen_dir
    docs = interleaved_docs() + random_docs(300, seed=1)
    fast = FastTokenizer(path)
    assert fast.exact_fast_path, fast.fallback_reason
    expected = hf_ids(path, docs)
    got = fast.encode_batch(docs)
    for doc, e, g in zip(docs, expected, got):
        assert g.dtype == np.int32
        assert g.tolist() == e, repr(doc[:80])
    assert fast.encode(docs[0]).tolist() == expected[0]
    if which == "llama3":
        assert fast.audio_base_id == 128260 and fast.special_ids["<|audio_end|>"] == 128259


def test_unsupported_added_token_falls_back_to_whole_documents(qwen_dir):
    from tokenizers import AddedToken, Tokenizer

    from tokenizer.fast_tokenize import FastTokenizer

    tok = Tokenizer.from_file(os.path.join(qwen_dir, "tokenizer.json"))
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    fast = FastTokenizer(tok)
    assert not fast.exact_fast_path and "<mask>" in fast.fallback_reason
    docs = ["a  <mask>b\ue000", "<|text_start|> x <mask>"]
    assert [g.tolist() for g in fast.encode_batch(docs)] == [e.ids for e in tok.encode_batch(docs, add_special_tokens=False)]


# ---- the tokenize step -----------------------------------------------------------------------


@pytest.fixture
def documents_dir(tmp_path):
    d = tmp_path / "docs"
    (d / "documents").mkdir(parents=True)
    docs = interleaved_docs()
    pq.write_table(
        pa.table({"id": [f"d{i}" for i in range(4)], "text": docs[:4]}), d / "documents" / "part-00000.parquet"
    )
    with open(d / "documents" / "part-00001.jsonl", "w") as f:
        for text in docs[4:6]:
            f.write(json.dumps({"text": text}) + "\n")
    with gzip.open(d / "documents" / "part-00002.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": docs[6]}) + "\n")
    (d / "summary.json").write_text("{}")  # ignored: not a document file
    return str(d), docs


def test_tokenize_step_writes_a_cache_levanter_reads(llama3_dir, documents_dir, tmp_path):
    import jax
    from levanter.data.text import DatasetComponent, LmDataConfig

    from steps.tokenize import TokenizeConfig, tokenize

    src, docs = documents_dir
    out = str(tmp_path / "tokenized")
    summary = tokenize(TokenizeConfig(src, llama3_dir, out, batch_size=2))
    expected = [e for e in hf_ids(llama3_dir, docs) if e]  # the empty document is skipped
    assert summary["documents"] == 6 and summary["empty_documents_skipped"] == 1
    assert summary["tokens"] == sum(map(len, expected))
    assert summary["audio_tokens"] == sum(1 for e in expected for i in e if 128260 <= i < 144644)
    assert summary["input_files"] == 3 and summary["vocab_size"] == 144644

    # Levanter's own loading path, as the trainer uses it: component -> <cache_dir>/train
    config = LmDataConfig(
        tokenizer=llama3_dir,
        components={"soda": DatasetComponent(cache_dir=out, source=None)},
        auto_build_caches=False,
        shuffle=False,
    )
    cache = config.build_caches("train")["soda"]
    assert len(cache) == 6
    rows = cache.get_batch_sync(list(range(6)))
    assert [r["input_ids"].tolist() for r in rows] == expected
    assert rows[0]["input_ids"].dtype == np.int32
    flat = np.concatenate([np.asarray(e) for e in expected])
    train = config.train_grug_sets(seq_len=32, key=jax.random.PRNGKey(0))["soda"].as_sync_dataset()
    assert np.asarray(train[0].tokens).tolist() == flat[:32].tolist()
    assert np.asarray(train[1].tokens).tolist() == flat[32:64].tolist()


def test_tokenize_step_resumes_per_part(qwen_dir, documents_dir, tmp_path, monkeypatch):
    import steps.tokenize as st
    from levanter.store.cache import TreeCache

    src, docs = documents_dir
    out = str(tmp_path / "tokenized")
    config = st.TokenizeConfig(src, qwen_dir, out)
    st.tokenize(config)
    exemplar = {"input_ids": np.zeros(0, dtype=np.int32)}
    before = [r["input_ids"].tolist() for r in TreeCache.load(os.path.join(out, "train"), exemplar)]

    redone = []
    real = st.tokenize_shard
    monkeypatch.setattr(st, "tokenize_shard", lambda c, i, *a: redone.append(i) or real(c, i, *a))
    st.tokenize(config)
    assert redone == []

    # a crash while writing part 1: its data is half there and it has no ledger yet
    os.remove(os.path.join(out, "train", "part-00001", "shard_ledger.json"))
    st.tokenize(config)
    assert redone == [1]
    after = [r["input_ids"].tolist() for r in TreeCache.load(os.path.join(out, "train"), exemplar)]
    assert after == before == [e for e in hf_ids(qwen_dir, docs) if e]


def test_missing_text_column_is_a_clear_error(qwen_dir, tmp_path):
    from steps.tokenize import TokenizeConfig, tokenize

    d = tmp_path / "bad"
    d.mkdir()
    pq.write_table(pa.table({"body": ["x"]}), d / "x.parquet")
    with pytest.raises(ValueError, match=r"x.parquet: missing column\(s\) \['text'\]"):
        tokenize(TokenizeConfig(str(d), qwen_dir, str(tmp_path / "out")))


def test_tokenize_retries_a_transient_read_error_and_a_permanent_one_fails_only_its_part(
        qwen_dir, documents_dir, tmp_path, monkeypatch):
    """A connection error mid-way through part 1 (after a batch was written) is retried from the
    part's start; a permission error is not retried, the other parts finish, and the error names
    the file; a rerun redoes only that part."""
    import steps.tokenize as st
    from levanter.store.cache import TreeCache

    src, docs = documents_dir
    monkeypatch.setattr(st, "RETRY_DELAY_S", 0.0)
    reads, fail = [], {"error": ConnectionError, "times": 2}
    real = st.iter_record_batches

    def flaky(path, columns, batch_size, *a):
        reads.append(os.path.basename(path))
        for n, batch in enumerate(real(path, columns, 1, *a)):  # one document per batch
            yield batch
            if path.endswith("part-00001.jsonl") and reads.count("part-00001.jsonl") <= fail["times"] and n == 1:
                raise fail["error"]("injected: connection reset by the store")

    monkeypatch.setattr(st, "iter_record_batches", flaky)
    out = str(tmp_path / "tokenized")
    config = st.TokenizeConfig(src, qwen_dir, out)
    st.tokenize(config)
    assert sorted(reads) == ["part-00000.parquet"] + ["part-00001.jsonl"] * 3 + ["part-00002.jsonl.gz"]
    exemplar = {"input_ids": np.zeros(0, dtype=np.int32)}
    cached = [r["input_ids"].tolist() for r in TreeCache.load(os.path.join(out, "train"), exemplar)]
    assert cached == [e for e in hf_ids(qwen_dir, docs) if e]  # the half-written try left nothing

    out2 = str(tmp_path / "tokenized2")
    reads.clear()
    fail.update(error=PermissionError, times=100)
    with pytest.raises(PermissionError, match=r"tokenize: 1 of 3 job\(s\) failed: .*part-00001\.jsonl"):
        st.tokenize(st.TokenizeConfig(src, qwen_dir, out2))
    assert reads.count("part-00001.jsonl") == 1
    assert sorted(os.listdir(os.path.join(out2, "stats"))) == ["part-00000.json", "part-00002.json"]
    reads.clear()
    fail["times"] = 0
    summary = st.tokenize(st.TokenizeConfig(src, qwen_dir, out2))
    assert reads == ["part-00001.jsonl"] and summary["documents"] == 6
