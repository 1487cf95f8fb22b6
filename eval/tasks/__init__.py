"""The task registry: name -> what runs it and what data it reads. steps.evaluate looks tasks up
here (no if-chain); adding a task is one entry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class TaskSpec:
    name: str
    run: str  # "module:function" under eval.tasks, imported on use
    fixture: str  # the eval.fixtures kind that stands in for its data offline
    data: str  # the real dataset it reads
    kind: str  # likelihood | generation | nll | multiple_choice

    def fn(self) -> Callable:
        import importlib

        module, func = self.run.split(":")
        return getattr(importlib.import_module(f"eval.tasks.{module}"), func)


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("sblimp", "pairs:sblimp", "sblimp", "speed/sBLIMP", "likelihood"),
    TaskSpec("swuggy", "pairs:swuggy", "swuggy", "speed/sWUGGY", "likelihood"),
    TaskSpec("salmon", "pairs:salmon", "salmon", "slprl/SALMon (all parts)", "likelihood"),
    TaskSpec("tblimp", "pairs:tblimp", "sblimp", "speed/sBLIMP transcripts", "likelihood"),
    TaskSpec("twuggy", "pairs:twuggy", "swuggy", "speed/sWUGGY transcripts", "likelihood"),
    TaskSpec("storycloze_spoken", "pairs:storycloze_spoken", "storycloze-spoken", "slp-rl SpokenStoryCloze (sSC/tSC)", "likelihood"),
    TaskSpec("storycloze_text", "pairs:storycloze_text", "storycloze-text", "StoryCloze 2016 test", "likelihood"),
    TaskSpec("hellaswag", "hellaswag:hellaswag", "hellaswag", "Rowan/hellaswag validation", "multiple_choice"),
    TaskSpec("asr", "asr:asr", "librispeech", "LibriSpeech test-clean", "generation"),
    TaskSpec("tts", "tts:tts", "seed-tts-eval", "seed-tts-eval English", "generation"),
    TaskSpec("validation_nll", "nll:validation_nll", "librispeech", "LibriSpeech dev-clean", "nll"),
    TaskSpec("s2st", "s2st:s2st", "cvss", "CVSS-T test (Common Voice 4 sources), for S2ST fine-tunes", "generation"),
)}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise KeyError(f"unknown eval task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]
