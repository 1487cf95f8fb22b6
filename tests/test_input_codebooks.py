"""The S model of the token-composition ablation reads codebook-0 audio, as it was trained: with
`input_codebooks=1` its pair tasks feed it codebook 0 only and score every token of that audio."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from eval.tasks.pairs import _score_audio_chunk
from steps.evaluate import EvalConfig, check_codebooks
from tokenizer.audio import CODEBOOK_SIZE, UNICODE_OFFSET
from tokenizer.vocab import AUDIO_END, AUDIO_START

START, END = 1, 2


def frames(codes: list[list[int]]) -> str:
    """Frame-major audio string of frames of 8 codes."""
    return "".join(chr(UNICODE_OFFSET + cb * CODEBOOK_SIZE + c) for frame in codes for cb, c in enumerate(frame))


@dataclass
class StubContext:
    config: EvalConfig
    audio_start: int = START
    audio_end: int = END

    def audio_strings(self, waves):
        return [frames([[w, 7, 7, 7, 7, 7, 7, 7], [w + 1, 7, 7, 7, 7, 7, 7, 7]]) for w in waves]

    def encode(self, text: str) -> list[int]:
        self.seen = getattr(self, "seen", []) + [text]
        assert text.startswith(AUDIO_START) and text.endswith(AUDIO_END)
        return [START, *map(ord, text[len(AUDIO_START):-len(AUDIO_END)]), END]

    def logprobs(self, seqs):
        # codebook-0 tokens score -1, the others -5: a mean over the span shows which were scored
        return [np.array([-1.0 if (t - UNICODE_OFFSET) // CODEBOOK_SIZE == 0 else -5.0 for t in s]) for s in seqs]


def _config(**kw) -> EvalConfig:
    return EvalConfig(task="sblimp", model_path="/m", dataset_path="/d", output_path="/o", **kw)


def test_codebook0_input_is_all_the_model_reads_and_all_is_scored():
    chunk = [{"id": "a", "part": "p", "positive": 3, "negative": 5}]
    ctx = StubContext(_config(input_codebooks=1))
    (row,) = _score_audio_chunk(ctx, chunk)
    assert ctx.seen[0] == AUDIO_START + chr(UNICODE_OFFSET + 3) + chr(UNICODE_OFFSET + 4) + AUDIO_END
    assert row["pos_logp"] == -1.0 and row["pos_tokens"] == 2  # two frames, one token each
    full = StubContext(_config())
    (row8,) = _score_audio_chunk(full, chunk)
    assert len(full.seen[0]) == len(AUDIO_START + AUDIO_END) + 16 and row8["pos_logp"] == pytest.approx((2 * -1 + 14 * -5) / 16)


@pytest.mark.parametrize("kw, says", [(dict(codebooks=1, input_codebooks=1), "not both"),
                                      (dict(input_codebooks=0), "input_codebooks must be in 1..8"),
                                      (dict(codebooks=9), "codebooks must be in 1..8")])
def test_codebook_settings_that_mean_nothing_are_refused(kw, says):
    with pytest.raises(ValueError, match=says):
        check_codebooks(_config(**kw))


def test_the_s_model_is_evaluated_on_codebook0_inputs():
    import importlib

    from pipeline.plan import build_plan

    exp = importlib.import_module("experiments.exp8_token_composition")
    plan = build_plan(exp.STEPS, "/p")
    for composition, per_task in exp.evals.items():
        for step in per_task.values():
            config = plan.of(step).concrete_config(plan.paths)
            assert config.input_codebooks == (1 if composition == "S" else None)
            assert config.codebooks is None
