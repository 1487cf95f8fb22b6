"""Generation with a SODA checkpoint for one task: build the prompt, sample, split the answer.

    inputs = GenerateInputs(task="tts", text="Hello there.")
    result = run_generation(inputs, ctx, Sampling(0.9, 0.8, 1500), seed=0)
    result.audio        # 24 kHz float32 (empty when the answer held no whole frame)
    result.text         # the answer's text (asr, s2st), control tokens and audio removed
    result.info         # JSON-able: prompt/answer token counts, stop reached, stray tokens, seconds

`ctx` is an `eval.session.ModelSession` (the model, the tokenizer's SODA ids, Mimi on first use; an
eval step's EvalContext is one), so the CLI (`eval.generate_cli`) and the eval tasks share one
tokenization, one Mimi and one sampler.
Prompts come from tokenizer.prompts only.

What each task answers, and how the answer's ids are read (`split_answer`, a pure function):

| task | prompt | answer | stop |
|---|---|---|---|
| continue | `<\\|audio_start\\|>A` | more audio | `<\\|audio_end\\|>` or the token budget |
| tts | `tts_prompt(text)` | audio | `<\\|audio_end\\|>` |
| tts-voice | `voice_tts_prompt(prompt_text, prompt_audio, text)` | audio | `<\\|audio_end\\|>` |
| asr | `asr_prompt(audio)` | text | `<\\|text_end\\|>` |
| s2st | `s2st_prompt(audio, source_text)` | target text `<\\|text_end\\|><\\|audio_start\\|>` target audio | `<\\|audio_end\\|>` |

Tokens of the wrong modality inside an answer part (text or control tokens inside the audio, audio
tokens inside the text) are dropped and counted; an incomplete last audio frame is dropped and
counted. A generation that never reaches its stop token keeps what it produced
(`stop_reached: false`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from tokenizer.vocab import AUDIO_END, TEXT_END
from steps.evaluate import EvalConfig as C
from tokenizer import prompts as P

logger = logging.getLogger(__name__)

TASKS = ("continue", "tts", "tts-voice", "asr", "s2st")
# task -> the inputs it needs (GenerateInputs field names; the CLI flag is --field-with-dashes)
REQUIRED: dict[str, tuple[str, ...]] = {
    "continue": ("audio",),
    "tts": ("text",),
    "tts-voice": ("text", "prompt_audio", "prompt_text"),
    "asr": ("audio",),
    "s2st": ("audio", "source_text"),
}
AUDIO_INPUTS = ("audio", "prompt_audio")
ANSWERS = {"continue": "audio", "tts": "audio", "tts-voice": "audio", "asr": "text", "s2st": "text+audio"}


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    max_new_tokens: int


def default_sampling(task: str) -> Sampling:
    """Per-task defaults: the eval protocol's TTS (and S2ST) sampling for audio answers
    (steps.evaluate.EvalConfig), greedy decoding for ASR, about 5 s of audio for a continuation."""
    tts = Sampling(C.tts_temperature, C.tts_top_p, C.tts_max_new_tokens)
    return {"continue": Sampling(C.tts_temperature, C.tts_top_p, 500), "tts": tts, "tts-voice": tts,
            "asr": Sampling(0.0, 1.0, C.asr_max_new_tokens),
            "s2st": Sampling(C.s2st_temperature, C.s2st_top_p, C.s2st_max_new_tokens)}[task]


@dataclass
class GenerateInputs:
    """One task's inputs; audio arrays are 24 kHz mono float32 (steps.audio_io.load_audio_file)."""

    task: str
    text: Optional[str] = None
    audio: Optional[np.ndarray] = None
    prompt_audio: Optional[np.ndarray] = None
    prompt_text: Optional[str] = None
    source_text: Optional[str] = None

    def missing(self) -> list[str]:
        """The required inputs that are absent or empty, in REQUIRED's order."""
        if self.task not in REQUIRED:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        out = []
        for name in REQUIRED[self.task]:
            value = getattr(self, name)
            if value is None or (isinstance(value, str) and not value.strip()) or (
                    isinstance(value, np.ndarray) and value.size == 0):
                out.append(name)
        return out


@dataclass
class Answer:
    """A generated answer split into its text and audio ids, with what was dropped."""

    text_ids: list[int] = field(default_factory=list)
    audio_ids: list[int] = field(default_factory=list)
    stop_reached: bool = False
    stray_in_text: int = 0  # audio or control tokens inside the text part
    stray_in_audio: int = 0  # text or control tokens inside the audio part
    missing_audio_start: bool = False  # s2st: <|text_end|> not followed by <|audio_start|>


def _is_audio(i: int, audio_base: int) -> bool:
    return i >= audio_base


def split_answer(task: str, ids: list[int], *, text_end: int, audio_start: int, audio_end: int,
                 audio_base: int, text_start: int) -> Answer:
    """Read generated ids (the stop id included when produced) as the task's answer (module docstring)."""
    ids = [int(i) for i in ids]
    kind = ANSWERS[task]
    stop = text_end if kind == "text" else audio_end
    ans = Answer(stop_reached=stop in ids)
    if ans.stop_reached:
        ids = ids[: ids.index(stop)]
    text_part, audio_part = (ids, []) if kind == "text" else ([], ids)
    if kind == "text+audio":
        if text_end in ids:
            k = ids.index(text_end)
            text_part, audio_part = ids[:k], ids[k + 1 :]
            if audio_part[:1] == [audio_start]:
                audio_part = audio_part[1:]
            else:
                ans.missing_audio_start = True
        else:  # never left the text part
            text_part, audio_part = ids, []
    ans.text_ids = [i for i in text_part if i < text_start]
    ans.stray_in_text = len(text_part) - len(ans.text_ids)
    ans.audio_ids = [i for i in audio_part if _is_audio(i, audio_base)]
    ans.stray_in_audio = len(audio_part) - len(ans.audio_ids)
    return ans


@dataclass
class GenerationResult:
    audio: np.ndarray  # 24 kHz; empty when the answer held no audio frame
    text: Optional[str]  # the answer's text (asr, s2st), else None
    prompt_audio: Optional[np.ndarray]  # continue: the prompt's own Mimi reconstruction + the continuation
    info: dict


def build_prompt(inputs: GenerateInputs, ctx) -> tuple[str, dict]:
    """The task's prompt string (tokenizer.prompts) and the input audio durations."""
    missing = inputs.missing()
    if missing:
        raise ValueError(f"task {inputs.task} needs {', '.join(missing)}")
    names = [n for n in AUDIO_INPUTS if getattr(inputs, n) is not None and n in REQUIRED[inputs.task]]
    strings = dict(zip(names, ctx.audio_strings([getattr(inputs, n) for n in names])))
    seconds = {f"{n}_seconds": round(len(getattr(inputs, n)) / 24_000, 3) for n in names}
    t = inputs.task
    if t == "continue":
        prompt = P.continuation_prompt(strings["audio"])
    elif t == "tts":
        prompt = P.tts_prompt(inputs.text)
    elif t == "tts-voice":
        prompt = P.voice_tts_prompt(inputs.prompt_text, strings["prompt_audio"], inputs.text)
    elif t == "asr":
        prompt = P.asr_prompt(strings["audio"])
    else:
        prompt = P.s2st_prompt(strings["audio"], inputs.source_text)
    return prompt.text, seconds


def stop_id_of(task: str, ctx) -> int:
    return ctx.text_end if ANSWERS[task] == "text" else ctx.audio_end


def decode_answer(task: str, ids: list[int], ctx) -> tuple[Answer, np.ndarray, Optional[str], dict]:
    """Split generated ids (eval.model.Generation.ids) and decode them: (answer, 24 kHz audio, text, stats)."""
    ans = split_answer(task, ids, text_end=ctx.text_end, audio_start=ctx.audio_start, audio_end=ctx.audio_end,
                       audio_base=ctx.audio_base, text_start=ctx.text_start)
    audio, stats = (np.zeros(0, dtype=np.float32), {"frames": 0, "codebook_mismatches": 0})
    if ans.audio_ids:
        audio, stats = ctx.decode_audio_ids(ans.audio_ids)
    text = ctx.decode_text(ans.text_ids).strip() if ANSWERS[task] != "audio" else None
    stats = {"audio_tokens": len(ans.audio_ids), "frames": stats["frames"],
             "incomplete_frame_tokens": len(ans.audio_ids) - 8 * stats["frames"],
             "codebook_mismatches": stats["codebook_mismatches"],
             "stray_text_tokens_in_audio": ans.stray_in_audio, "stray_audio_tokens_in_text": ans.stray_in_text}
    if task == "s2st":
        stats["missing_audio_start"] = ans.missing_audio_start
    return ans, audio, text, stats


def _max_positions(model) -> Optional[int]:
    torch_model = getattr(model, "model", None)
    n = getattr(getattr(torch_model, "config", None), "max_position_embeddings", None)
    if n is None and getattr(model, "summary", None):
        n = model.summary.get("seq_len")
    return int(n) if n else None


def run_generation(inputs: GenerateInputs, ctx, sampling: Sampling, seed: int = 0) -> GenerationResult:
    """Prompt, sample (seeded), split and decode one answer (module docstring)."""
    started = time.time()
    prompt_text, seconds = build_prompt(inputs, ctx)
    prompt_ids = ctx.encode(prompt_text)
    longest = _max_positions(ctx.model)
    if longest is not None and prompt_ids.size + sampling.max_new_tokens > longest:
        logger.warning("prompt (%d tokens) + max_new_tokens (%d) exceed the model's %d positions: the tail is "
                       "generated past the trained context", prompt_ids.size, sampling.max_new_tokens, longest)
    stop = stop_id_of(inputs.task, ctx)
    (gen,) = ctx.model.generate([prompt_ids], temperature=sampling.temperature, top_p=sampling.top_p,
                                max_new_tokens=sampling.max_new_tokens, stop_id=stop, seed=seed, batch_size=1)
    ans, audio, text, stats = decode_answer(inputs.task, gen.ids, ctx)
    with_prompt = None
    if inputs.task == "continue":
        prompt_audio_ids = [int(i) for i in prompt_ids if i >= ctx.audio_base]
        with_prompt, _ = ctx.decode_audio_ids(prompt_audio_ids + ans.audio_ids)
    info = {"task": inputs.task, "answer": ANSWERS[inputs.task], "prompt_tokens": int(prompt_ids.size),
            "generated_tokens": len(gen.ids), "stop_token": TEXT_END if stop == ctx.text_end else AUDIO_END,
            "stop_reached": bool(ans.stop_reached), **seconds,
            "output_seconds": round(len(audio) / 24_000, 3), **stats,
            "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p,
                         "max_new_tokens": sampling.max_new_tokens, "seed": seed},
            "generate_seconds": round(time.time() - started, 3)}
    if text is not None:
        info["text"] = text
    return GenerationResult(audio, text, with_prompt, info)


__all__ = ["TASKS", "REQUIRED", "ANSWERS", "Sampling", "default_sampling", "GenerateInputs", "Answer",
           "split_answer", "build_prompt", "decode_answer", "stop_id_of", "run_generation", "GenerationResult"]
