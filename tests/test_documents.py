"""Documents (formats, sanitising, splitting) and the interleave step."""

import gzip
import json
import os
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokenizer.audio import codes_to_chars
from tokenizer.documents import (
    AUDIO_FIRST,
    TEXT_FIRST,
    Utterance,
    count_audio_tokens,
    estimate_document_tokens,
    recording_documents,
    sanitize_text,
    split_recording,
    text_document,
)

BOS, TS, TE, AS, AE = "<|begin_of_text|>", "<|text_start|>", "<|text_end|>", "<|audio_start|>", "<|audio_end|>"
EOS = "<|end_of_text|>"


def audio(frames, seed=0):
    return codes_to_chars(np.random.default_rng(seed).integers(0, 2048, size=(8, frames)))


def utt(i, text, frames=2, rec="rec", seed=None):
    return Utterance(f"u{i}", rec, i, text, frames / 12.5, audio(frames, i if seed is None else seed))


def test_both_formats_exactly_as_released():
    """reference.md section 3's templates, wrapped in BOS ... EOS as the released documents are
    (section 10)."""
    u0, u1 = utt(0, "Hello there."), utt(1, "Second one")
    docs = recording_documents("rec", [u1, u0], Counter())  # out of order on purpose
    assert [(d.id, d.format) for d in docs] == [("rec:0000:text_first", TEXT_FIRST), ("rec:0000:audio_first", AUDIO_FIRST)]
    assert docs[0].text == (BOS + TS + "Hello there." + TE + AS + u0.audio + AE + TS + "Second one" + TE + AS + u1.audio
                            + AE + EOS)
    assert docs[1].text == (BOS + AS + u0.audio + AE + TS + "Hello there." + TE + AS + u1.audio + AE + TS + "Second one"
                            + TE + EOS)


def test_empty_and_missing_transcripts_keep_the_audio():
    counts = Counter()
    u0, u1 = utt(0, None), utt(1, "   ")
    (doc,) = recording_documents("r", [u0, u1], counts, formats=[TEXT_FIRST])
    assert doc.text == BOS + TS + TE + AS + u0.audio + AE + TS + TE + AS + u1.audio + AE + EOS
    assert counts["empty_transcripts"] == 2


HOSTILE = [
    ("a<|text_start|>b", "ab", "special_token_strings_dropped", 1),
    ("<|begin_of_text|>x<|eot_id|>", "x", "special_token_strings_dropped", 2),
    ("y<|reserved_special_token_17|>", "y", "special_token_strings_dropped", 1),
    ("<|<|audio_end|>audio_end|>z", "z", "special_token_strings_dropped", 2),
    ("pua\ue000\uf8ffend", "puaend", "private_use_chars_dropped", 2),
    ("plane15 \U000f0001", "plane15", "private_use_chars_dropped", 1),
    ("wow！", "wow!", "audio_range_chars_normalized", 1),
    ("love ❤\ufe0f", "love ❤", "audio_range_chars_dropped", 1),
    ("＜｜eot_id｜＞ok", "ok", "special_token_strings_dropped", 1),
    ("\ufeffbom", "bom", "audio_range_chars_dropped", 1),
]


@pytest.mark.parametrize("text,expected,counter,n", HOSTILE)
def test_hostile_transcripts_are_neutralised_and_counted(text, expected, counter, n):
    counts = Counter()
    assert sanitize_text(text, counts) == expected
    assert counts[counter] == n
    assert counts["texts_sanitized"] == 1


def test_hostile_transcripts_never_become_audio_or_control_tokens():
    counts = Counter()
    utts = [utt(i, text) for i, (text, *_rest) in enumerate(HOSTILE)]
    (doc,) = recording_documents("r", utts, counts, formats=[AUDIO_FIRST])
    # every audio-range character in the document is one of the utterances' audio characters,
    assert count_audio_tokens(doc.text) == sum(len(u.audio) for u in utts)
    # and the only <|...|> strings are the document's own markers
    assert doc.text.count("<|") == 2 + 4 * len(utts)
    for marker, n in [(BOS, 1), (EOS, 1), (TS, len(utts)), (TE, len(utts)), (AS, len(utts)), (AE, len(utts))]:
        assert doc.text.count(marker) == n
    assert counts["texts_sanitized"] == len(HOSTILE)


def test_clean_text_is_untouched():
    counts = Counter()
    text = "Zürich 数字 🎉 <not a special> a|b <|> x"
    assert sanitize_text(text, counts) == text
    assert sum(counts.values()) == 0


def test_reserved_strings_are_removed():
    counts = Counter()
    assert sanitize_text("a<think>b</think>c", counts, reserved=("<think>", "</think>")) == "abc"
    assert counts["special_token_strings_dropped"] == 2


def test_split_at_utterance_boundaries():
    counts = Counter()
    utts = [utt(i, "word " * 3, frames=10) for i in range(5)]  # 80 audio + 4 text + 4 = 88 each
    parts = split_recording(utts, 1 + 2 * 88, counts)
    assert [[u.utterance_id for u in p] for p in parts] == [["u0", "u1"], ["u2", "u3"], ["u4"]]
    assert counts["recordings_split"] == 1 and counts["overlong_utterances"] == 0
    docs = recording_documents("r", utts, Counter(), max_tokens=2 + 2 * 88)  # BOS and EOS
    assert [d.id for d in docs][:3] == ["r:0000:text_first", "r:0000:audio_first", "r:0001:text_first"]
    assert all(estimate_document_tokens(d.text) <= 2 + 2 * 88 for d in docs)
    assert len(docs) == 6


def test_overlong_utterance_goes_alone():
    counts = Counter()
    utts = [utt(0, "a", 2), utt(1, "b", 100), utt(2, "c", 2)]
    parts = split_recording(utts, 50, counts)
    assert [[u.utterance_id for u in p] for p in parts] == [["u0"], ["u1"], ["u2"]]
    assert counts["overlong_utterances"] == 1


def test_invalid_audio_is_skipped_and_counted():
    counts = Counter()
    good = utt(0, "fine")
    bad_len = Utterance("u1", "r", 1, "x", 0.1, good.audio[:-1])
    bad_char = Utterance("u2", "r", 2, "y", 0.1, "a" * 8)
    empty = Utterance("u3", "r", 3, "z", 0.0, "")
    (doc,) = recording_documents("r", [good, bad_len, bad_char, empty], counts, formats=[TEXT_FIRST])
    assert doc.text == BOS + TS + "fine" + TE + AS + good.audio + AE + EOS
    assert counts["invalid_audio_utterances"] == 2 and counts["empty_audio_utterances"] == 1


def test_text_document():
    counts = Counter()
    d = text_document("t1", "Plain text <|eot_id|>here.", counts)
    assert (d.format, d.text) == ("text", BOS + "Plain text here." + EOS)
    assert text_document("t2", "x", counts, add_bos=False).text == "x" + EOS


# ---- the interleave step ---------------------------------------------------------------------


def write_encoded_shard(path, rows):
    schema = pa.schema(
        [
            ("utterance_id", pa.string()),
            ("recording_id", pa.string()),
            ("order", pa.int64()),
            ("transcript", pa.string()),
            ("duration", pa.float64()),
            ("audio", pa.string()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def encoded_rows(shard, recordings=3, utterances=4):
    rows = []
    for r in range(recordings):
        for o in reversed(range(utterances)):
            rows.append(
                dict(
                    utterance_id=f"s{shard}r{r}u{o}",
                    recording_id=f"rec-{shard}-{r}",
                    order=o,
                    transcript=None if o == 1 else f"Utterance {o} of <|eot_id|>recording {r}\ue001",
                    duration=0.8,
                    audio=audio(10, seed=100 * shard + 10 * r + o),
                )
            )
    return rows


@pytest.fixture
def encoded_dir(tmp_path):
    d = tmp_path / "encoded"
    d.mkdir()
    for s in range(3):
        write_encoded_shard(d / f"shard-{s}.parquet", encoded_rows(s))
    return str(d)


def read_docs(out):
    files = sorted(os.listdir(os.path.join(out, "documents")))
    return files, [pq.read_table(os.path.join(out, "documents", f)).to_pylist() for f in files]


def test_interleave_step(encoded_dir, tmp_path):
    from steps.interleave import InterleaveConfig, interleave

    out = str(tmp_path / "out")
    summary = interleave(InterleaveConfig(encoded_dir, out, max_document_tokens=200))
    files, shards = read_docs(out)
    assert files == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    rows = shards[0]
    assert set(rows[0]) == {"id", "recording_id", "format", "text"}
    # 4 utterances of 80 audio + ~8 text + 4 tokens, at most 200 per doc: 2 parts per recording
    assert [r["id"] for r in rows[:4]] == [
        "rec-0-0:0000:text_first",
        "rec-0-0:0000:audio_first",
        "rec-0-0:0001:text_first",
        "rec-0-0:0001:audio_first",
    ]
    first = rows[0]["text"]
    assert first.startswith(BOS + TS + TE + AS) is False  # utterance 0 comes first, with text
    assert first.startswith(BOS + TS + "Utterance 0 of recording 0" + TE + AS)
    assert summary["documents"] == 3 * 3 * 2 * 2 and summary["utterances"] == 36
    assert summary["recordings"] == 9 and summary["recordings_split"] == 9
    assert summary["special_token_strings_dropped"] == 27 and summary["private_use_chars_dropped"] == 27
    assert summary["empty_transcripts"] == 9
    assert summary["documents_by_format"] == {"audio_first": 18, "text_first": 18}
    assert summary["tokens_estimate"] > 2 * 36 * 80
    assert summary["audio_hours"] == pytest.approx(36 * 0.8 / 3600)
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f) == summary


def test_interleave_is_deterministic_and_resumable(encoded_dir, tmp_path, monkeypatch):
    import steps.interleave as il

    out = str(tmp_path / "out")
    il.interleave(il.InterleaveConfig(encoded_dir, out))
    first = {f: open(os.path.join(out, "documents", f), "rb").read() for f in os.listdir(os.path.join(out, "documents"))}

    # simulate a crash after shard 1: its outputs are gone; the others must not be redone
    os.remove(os.path.join(out, "stats", "part-00001.json"))
    redone = []
    real = il.process_shard
    monkeypatch.setattr(il, "process_shard", lambda c, i, *a: redone.append(i) or real(c, i, *a))
    il.interleave(il.InterleaveConfig(encoded_dir, out))
    assert redone == [1]

    out2 = str(tmp_path / "out2")
    il.interleave(il.InterleaveConfig(encoded_dir, out2))
    for f, data in first.items():
        assert open(os.path.join(out2, "documents", f), "rb").read() == data
        assert open(os.path.join(out, "documents", f), "rb").read() == data


def test_recordings_spread_over_files_are_counted(tmp_path):
    from steps.interleave import InterleaveConfig, interleave

    d = tmp_path / "enc"
    d.mkdir()
    rows = encoded_rows(0, recordings=1, utterances=2)
    write_encoded_shard(d / "a.parquet", rows[:1])
    write_encoded_shard(d / "b.parquet", rows[1:])
    summary = interleave(InterleaveConfig(str(d), str(tmp_path / "out")))
    assert summary["recordings_in_several_shards"] == 1


def test_missing_column_is_a_clear_error(tmp_path):
    from steps.interleave import InterleaveConfig, interleave

    d = tmp_path / "enc"
    d.mkdir()
    pq.write_table(pa.table({"recording_id": ["r"], "audio": [audio(1)]}), d / "x.parquet")
    with pytest.raises(ValueError, match=r"x.parquet: missing column\(s\) \['utterance_id', 'order'"):
        interleave(InterleaveConfig(str(d), str(tmp_path / "out")))


def test_text_corpus_passes_through(tmp_path):
    from steps.interleave import InterleaveConfig, interleave

    d = tmp_path / "text"
    d.mkdir()
    with gzip.open(d / "a.jsonl.gz", "wt") as f:
        f.write(json.dumps({"id": "doc-a", "text": "First <|eot_id|>document."}) + "\n")
        f.write(json.dumps({"text": "Second\ue000 one."}) + "\n")
    summary = interleave(InterleaveConfig(str(d), str(tmp_path / "out"), corpus="text"))
    rows = pq.read_table(tmp_path / "out" / "documents" / "part-00000.parquet").to_pylist()
    assert [(r["id"], r["format"], r["text"]) for r in rows] == [
        ("doc-a", "text", BOS + "First document.<|end_of_text|>"),  # the step ends documents with EOS
        ("a:1", "text", BOS + "Second one.<|end_of_text|>"),
    ]
    assert summary["documents"] == 2 and summary["special_token_strings_dropped"] == 1
    assert summary["private_use_chars_dropped"] == 1


def test_eos_by_default_and_the_literal_section_3_form_on_request():
    u0 = utt(0, "hi")
    (doc,) = recording_documents("r", [u0], Counter(), formats=[AUDIO_FIRST])
    assert doc.text == BOS + AS + u0.audio + AE + TS + "hi" + TE + "<|end_of_text|>"
    assert text_document("t", "x", Counter()).text == BOS + "x<|end_of_text|>"
    assert estimate_document_tokens(doc.text) == 16 + 2 + 4 + 1
    (bare,) = recording_documents("r", [u0], Counter(), formats=[AUDIO_FIRST], end_with_eos=False)
    assert bare.text == doc.text[: -len(EOS)]
    assert text_document("t", "x", Counter(), end_with_eos=False).text == BOS + "x"
