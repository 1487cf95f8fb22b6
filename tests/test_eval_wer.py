"""The paper's WER normalisations, corpus vs mean-of-utterances WER, Whisper's normaliser."""

import json
from pathlib import Path

import pytest

from eval.wer import (
    corpus_wer,
    mean_utterance_wer,
    normalize_asr,
    normalize_tts,
    packaged_spelling_table,
    utterance_wers,
    whisper_normalizer,
)


def test_asr_normalisation_strips_all_punctuation_including_apostrophes():
    assert normalize_asr("Don't STOP, Mr. Smith!  “Now”…") == "dont stop mr smith now"
    assert normalize_asr("well-known") == "wellknown"


def test_tts_normalisation_keeps_apostrophes():
    assert normalize_tts("Don't STOP, Mr. Smith!") == "don't stop mr smith"
    assert normalize_tts("It’s fine.") == "it's fine"  # typographic apostrophe kept as '


def test_corpus_wer_weights_by_reference_words_mean_does_not():
    refs = ["a b c d e f g h i j", "k"]  # 10 words and 1 word
    hyps = ["a b c d e f g h i j", "x"]  # 0 errors, 1 error
    c = corpus_wer(refs, hyps)
    assert c["wer"] == pytest.approx(1 / 11) and c["errors"] == 1 and c["ref_words"] == 11
    m = mean_utterance_wer(refs, hyps)
    assert m["wer"] == pytest.approx(0.5)


def test_wer_counts_insertions_deletions_and_empty_hypotheses():
    assert utterance_wers(["a b c"], ["a x b c d"]) == [pytest.approx(2 / 3)]  # 2 insertions
    assert utterance_wers(["a b c"], [""]) == [1.0]
    assert corpus_wer(["a b", ""], ["a b", "extra words"])["errors"] == 2
    with pytest.raises(ValueError, match="empty after normalisation"):
        utterance_wers(["..."], ["a"], normalize_asr)
    with pytest.raises(ValueError, match="2 references but 1"):
        corpus_wer(["a", "b"], ["a"])


def test_normalisation_changes_the_wer():
    refs, hyps = ["Don't go, Bob."], ["dont go bob"]
    assert corpus_wer(refs, hyps, normalize_asr)["wer"] == 0.0
    assert corpus_wer(refs, hyps, normalize_tts)["wer"] == pytest.approx(1 / 3)  # don't != dont


def test_whisper_normaliser_uses_the_packaged_spelling_table_offline(tmp_path):
    # No normalizer.json anywhere: the table comes from the installed whisper-normalizer package.
    w = whisper_normalizer(str(tmp_path / "nowhere"))
    assert w.spelling_table.startswith("whisper-normalizer 0.1.15 package, whisper_normalizer/normalizers/english.json")
    assert whisper_normalizer(None).spelling_table == w.spelling_table
    assert w("Mr. Smith won't pay $5!") == "mister smith will not pay $5"
    assert (w("The colour of the centre; we organise, they travelled.")
            == "the color of the center we organize they traveled")


def test_packaged_spelling_table_is_whispers_and_read_from_the_package():
    from importlib import resources

    mapping, where = packaged_spelling_table()
    assert len(mapping) == 1739 and "(1739 entries)" in where  # openai-whisper's english.json
    assert mapping["colour"] == "color" and mapping["organise"] == "organize"
    packaged = resources.files("whisper_normalizer").joinpath("normalizers/english.json")
    assert json.loads(packaged.read_text(encoding="utf-8")) == mapping
    repo = Path(__file__).resolve().parents[1]
    assert not Path(str(packaged)).resolve().is_relative_to(repo / "eval")  # the package's file, no copy of ours
    assert not list(repo.glob("eval/**/english.json")) and not list(repo.glob("eval/**/normalizer.json"))


def test_spelling_pairs_through_the_wer_path(tmp_path):
    w = whisper_normalizer(None)
    refs = ["The colour of the centre", "We organise what they travelled"]
    hyps = ["the color of the center", "we organize what they traveled"]
    assert corpus_wer(refs, hyps, w)["wer"] == 0.0
    assert corpus_wer(refs, hyps, normalize_asr)["errors"] == 4  # the paper's normaliser keeps spellings


def test_an_explicit_normalizer_json_takes_precedence(tmp_path):
    (tmp_path / "normalizer.json").write_text(json.dumps({"colour": "color"}))
    full = whisper_normalizer(str(tmp_path))
    assert full("The colour.") == "the color" and full.spelling_table.endswith("normalizer.json")
    assert full("the centre") == "the centre"  # only the named table is used
