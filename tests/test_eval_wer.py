"""The paper's WER normalisations, corpus vs mean-of-utterances WER, Whisper's normaliser."""

import json

import pytest

from eval.wer import (
    corpus_wer,
    mean_utterance_wer,
    normalize_asr,
    normalize_tts,
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


def test_whisper_normaliser_offline_and_with_a_spelling_table(tmp_path):
    bare = whisper_normalizer(str(tmp_path / "nowhere"))
    assert bare.spelling_table.startswith("none")
    assert bare("Mr. Smith won't pay $5!") == "mister smith will not pay $5"
    (tmp_path / "normalizer.json").write_text(json.dumps({"colour": "color"}))
    full = whisper_normalizer(str(tmp_path))
    assert full("The colour.") == "the color" and full.spelling_table.endswith("normalizer.json")
