"""Prompts for SODA's tasks (shared/reference.md section 3, the paper's demo).

Each builder returns a `Prompt`: the prompt string and the token string that ends the model's
answer (None for open-ended continuation). Prompts carry no BOS: tokenize them with the
tokenizer's defaults (`add_special_tokens=True` prepends `<|begin_of_text|>` with the Llama 3
base) or add it yourself, whichever the evaluation protocol says. Audio arguments are audio
strings (`tokenizer.audio.codes_to_chars`); text arguments are sanitised like training
transcripts (`tokenizer.documents.sanitize_text`) unless `sanitize=False`.

    continuation:          <|audio_start|>A                                        -> more audio
    TTS:                   <|text_start|>T<|text_end|><|audio_start|>              -> A <|audio_end|>
    voice-conditioned TTS: <|text_start|>Tp<|text_end|><|audio_start|>Ap<|audio_end|>
                           <|text_start|>T<|text_end|><|audio_start|>              -> A <|audio_end|>
    ASR:                   <|audio_start|>A<|audio_end|><|text_start|>             -> T <|text_end|>
    S2ST (fine-tuned):     <|audio_start|>As<|audio_end|><|text_start|>Ts<|text_end|><|text_start|>
                                                             -> Tt <|text_end|><|audio_start|>At <|audio_end|>

The S2ST fine-tune's documents are `s2st_prompt(...).text + s2st_answer(...)`: source audio, source
text, target text, target audio; the loss is on the answer only.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple, Optional

from tokenizer.documents import audio_error, sanitize_text
from tokenizer.vocab import AUDIO_END, AUDIO_START, TEXT_END, TEXT_START


class Prompt(NamedTuple):
    """Unpacks as `text, stop = tts_prompt(...)`."""

    text: str
    stop: Optional[str]  # the token string that ends the answer; None: generate to a length


def _text(text: str, sanitize: bool) -> str:
    return sanitize_text(text, Counter()) if sanitize else text


def _audio(audio: str, what: str) -> str:
    err = audio_error(audio)
    if err is not None:
        raise ValueError(f"{what}: {err}")
    return audio


def continuation_prompt(context_audio: str) -> Prompt:
    """Continue `context_audio`; the answer is audio (text tokens, if any, are discarded)."""
    return Prompt(AUDIO_START + _audio(context_audio, "context_audio"), None)


def tts_prompt(text: str, *, sanitize: bool = True) -> Prompt:
    """Speak `text` in any voice; the answer is audio up to <|audio_end|>."""
    return Prompt(TEXT_START + _text(text, sanitize) + TEXT_END + AUDIO_START, AUDIO_END)


def voice_tts_prompt(
    prompt_text: str, prompt_audio: str, text: str, *, sanitize: bool = True
) -> Prompt:
    """Speak `text` in the voice of `prompt_audio` (whose transcript is `prompt_text`)."""
    return Prompt(
        TEXT_START
        + _text(prompt_text, sanitize)
        + TEXT_END
        + AUDIO_START
        + _audio(prompt_audio, "prompt_audio")
        + AUDIO_END
        + TEXT_START
        + _text(text, sanitize)
        + TEXT_END
        + AUDIO_START,
        AUDIO_END,
    )


def asr_prompt(audio: str) -> Prompt:
    """Transcribe `audio`; the answer is text up to <|text_end|>."""
    return Prompt(AUDIO_START + _audio(audio, "audio") + AUDIO_END + TEXT_START, TEXT_END)


def s2st_prompt(source_audio: str, source_text: str, *, sanitize: bool = True) -> Prompt:
    """Translate speech (with its transcript); the answer is the target-language text, then its
    speech in the source speaker's voice, up to the final <|audio_end|> (see `s2st_answer`)."""
    return Prompt(
        AUDIO_START + _audio(source_audio, "source_audio") + AUDIO_END
        + TEXT_START + _text(source_text, sanitize) + TEXT_END + TEXT_START,
        AUDIO_END,
    )


def s2st_answer(target_text: str, target_audio: str, *, sanitize: bool = True) -> str:
    """What follows `s2st_prompt` in an S2ST document: the part the fine-tune's loss is on."""
    return _text(target_text, sanitize) + TEXT_END + AUDIO_START + _audio(target_audio, "target_audio") + AUDIO_END
