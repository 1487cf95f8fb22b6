"""The task registry: name -> what runs it, what data it reads, and the results-table columns it
fills. steps.evaluate looks tasks up here (no if-chain) and the experiment log's report
(steps.report) builds its model x metric table from the columns; adding a task is one entry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class PaperScaleRule:
    """When a column's number is on the paper's scale: the eval summary's `field` (dotted) starts with
    `prefix`, i.e. the run used `what`, as the paper did."""
    field: str
    prefix: str
    what: str


@dataclass(frozen=True)
class ResultColumn:
    """One column of the results table, read from the task's summary["metrics"][metric]."""
    label: str
    metric: str
    scale: float  # 100 for a percentage
    protocol: str  # the paper's protocol (shared/reference.md section 8)
    convention_key: str  # our convention text: the eval summary's convention[convention_key]
    paper_scale: Optional[PaperScaleRule] = None  # None: on the paper's scale whenever it is run
    not_comparable: Optional[str] = None  # why the column can never be set beside the paper's (then marked ?)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    run: str  # "module:function" under eval.tasks, imported on use
    fixture: str  # the eval.fixtures kind that stands in for its data offline
    data: str  # the real dataset it reads
    kind: str  # likelihood | generation | nll | multiple_choice
    columns: tuple[ResultColumn, ...] = ()  # what it adds to the results table, in table order

    def fn(self) -> Callable:
        import importlib

        module, func = self.run.split(":")
        return getattr(importlib.import_module(f"eval.tasks.{module}"), func)


_PAIRS = "accuracy %, mean audio-token log-prob, strict positive > negative, pooled"
_NO_SODA_NUMBER = "no published SODA number"

# In the results table's order: a task's columns come in the order of this registry.
TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("sblimp", "pairs:sblimp", "sblimp", "speed/sBLIMP", "likelihood",
             (ResultColumn("sBLIMP", "acc", 100.0, _PAIRS, "accuracy"),)),
    TaskSpec("swuggy", "pairs:swuggy", "swuggy", "speed/sWUGGY", "likelihood",
             (ResultColumn("sWUGGY", "acc", 100.0, "accuracy %, as sBLIMP", "accuracy"),)),
    TaskSpec("salmon", "pairs:salmon", "salmon", "slprl/SALMon (all parts)", "likelihood",
             (ResultColumn("SALMon", "acc", 100.0, "accuracy %, all parts", "accuracy"),)),
    TaskSpec("tblimp", "pairs:tblimp", "sblimp", "speed/sBLIMP transcripts", "likelihood",
             (ResultColumn("tBLIMP", "acc", 100.0, "accuracy %, mean text-token log-prob on lowercased transcripts",
                           "accuracy"),)),
    TaskSpec("twuggy", "pairs:twuggy", "swuggy", "speed/sWUGGY transcripts", "likelihood",
             (ResultColumn("tWUGGY", "acc", 100.0, "accuracy %, as tBLIMP", "accuracy"),)),
    TaskSpec("hellaswag", "hellaswag:hellaswag", "hellaswag", "Rowan/hellaswag validation", "multiple_choice",
             (ResultColumn("HellaSwag", "acc_norm", 100.0,
                           "accuracy %, plain text, 0-shot (paper: acc or acc_norm not stated)", "acc_norm",
                           not_comparable="unknown: the paper does not say acc or acc_norm"),)),
    TaskSpec("asr", "asr:asr", "librispeech", "LibriSpeech test-clean", "generation",
             (ResultColumn("ASR WER", "wer", 100.0, "corpus WER %, T=0.5 top-p 0.8, punctuation stripped, lowercased",
                           "wer"),)),
    TaskSpec("tts", "tts:tts", "seed-tts-eval", "seed-tts-eval English", "generation",
             (ResultColumn("TTS WER", "wer", 100.0, "mean per-utterance WER %, Whisper-large-v3 judge", "wer",
                           PaperScaleRule("config.tts_asr_judge", "openai/whisper-large-v3",
                                          "the Whisper-large-v3 ASR judge")),
              ResultColumn("TTS SIM", "sim", 1.0, "cosine of WavLM speaker embeddings vs the prompt clip", "sim",
                           PaperScaleRule("sim_judge", "wavlm-large-ecapa-tdnn",
                                          "seed-tts-eval's WavLM-large + ECAPA-TDNN judge")))),
    TaskSpec("storycloze_spoken", "pairs:storycloze_spoken", "storycloze-spoken", "slp-rl SpokenStoryCloze (sSC/tSC)",
             "likelihood", (ResultColumn("sSC", "acc", 100.0, "accuracy %, spoken StoryCloze (no published SODA number)",
                                         "accuracy", not_comparable=_NO_SODA_NUMBER),)),
    TaskSpec("storycloze_text", "pairs:storycloze_text", "storycloze-text", "StoryCloze 2016 test", "likelihood",
             (ResultColumn("tSC", "acc", 100.0, "accuracy %, text StoryCloze (no published SODA number)", "accuracy",
                           not_comparable=_NO_SODA_NUMBER),)),
    TaskSpec("validation_nll", "nll:validation_nll", "librispeech", "LibriSpeech dev-clean", "nll",
             (ResultColumn("val. NLL", "nll_asr_all", 1.0, "all-token NLL (NLL_1), LibriSpeech dev-clean", "headline",
                           not_comparable=_NO_SODA_NUMBER),)),
    TaskSpec("s2st", "s2st:s2st", "cvss", "CVSS-T test (Common Voice 4 sources), for S2ST fine-tunes", "generation"),
)}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise KeyError(f"unknown eval task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]
