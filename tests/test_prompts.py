"""Task prompts, exactly as shared/reference.md section 3 writes them."""

import numpy as np
import pytest

from tokenizer.audio import codes_to_chars
from tokenizer.prompts import asr_prompt, continuation_prompt, tts_prompt, voice_tts_prompt

A = codes_to_chars(np.random.default_rng(0).integers(0, 2048, size=(8, 3)))
AP = codes_to_chars(np.random.default_rng(1).integers(0, 2048, size=(8, 2)))


def test_continuation():
    text, stop = continuation_prompt(A)
    assert text == "<|audio_start|>" + A and stop is None


def test_tts():
    assert tts_prompt("Hello world.") == ("<|text_start|>Hello world.<|text_end|><|audio_start|>", "<|audio_end|>")


def test_voice_conditioned_tts():
    prompt = voice_tts_prompt("Prompt words.", AP, "Target words.")
    assert prompt.text == (
        "<|text_start|>Prompt words.<|text_end|><|audio_start|>" + AP + "<|audio_end|>"
        "<|text_start|>Target words.<|text_end|><|audio_start|>"
    )
    assert prompt.stop == "<|audio_end|>"


def test_asr():
    text, stop = asr_prompt(A)
    assert text == "<|audio_start|>" + A + "<|audio_end|><|text_start|>" and stop == "<|text_end|>"


def test_text_is_sanitised_like_training_transcripts():
    assert tts_prompt(" say <|audio_end|>this\ue000 ").text == "<|text_start|>say this<|text_end|><|audio_start|>"
    raw = tts_prompt(" x ", sanitize=False).text
    assert raw == "<|text_start|> x <|text_end|><|audio_start|>"


def test_bad_audio_is_rejected():
    with pytest.raises(ValueError, match="prompt_audio: .*multiple of 8"):
        voice_tts_prompt("a", AP[:-1], "b")
    with pytest.raises(ValueError, match="audio: character 0"):
        asr_prompt("hello!!!")


def test_s2st_prompt_and_answer_make_the_fine_tune_document():
    from tokenizer.prompts import s2st_answer, s2st_prompt

    prompt = s2st_prompt(A, "Le chat dort.")
    assert prompt.text == ("<|audio_start|>" + A + "<|audio_end|><|text_start|>Le chat dort.<|text_end|>"
                           "<|text_start|>")
    assert prompt.stop == "<|audio_end|>"
    answer = s2st_answer("The cat sleeps.", AP)
    assert answer == "The cat sleeps.<|text_end|><|audio_start|>" + AP + "<|audio_end|>"
    # the document reads: source audio, source text, target text, target audio
    doc = prompt.text + answer
    assert doc.index(A) < doc.index("Le chat") < doc.index("The cat") < doc.index(AP)
    assert doc.endswith(prompt.stop)


def test_s2st_texts_are_sanitised_and_audio_checked():
    from tokenizer.prompts import s2st_answer, s2st_prompt

    assert s2st_prompt(A, " a<|text_end|>b ").text.endswith("<|audio_end|><|text_start|>ab<|text_end|><|text_start|>")
    assert s2st_answer(" Hi <|audio_start|>there ", AP).startswith("Hi there<|text_end|>")
    with pytest.raises(ValueError, match="source_audio"):
        s2st_prompt(A[:-1], "x")
    with pytest.raises(ValueError, match="target_audio"):
        s2st_answer("x", "not audio")
