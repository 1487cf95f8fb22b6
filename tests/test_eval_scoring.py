"""Scorers on hand-built log-prob arrays whose right answers are known."""

import math

import numpy as np
import pytest

from eval.scoring import (
    continuation_loglik,
    harness_choice_chars,
    mean_logprob,
    multiple_choice,
    pair_accuracy,
    per_part_accuracy,
    select_codebooks,
    span_mask,
    span_mean_logprob,
    span_positions,
)

BOS, TS, TE, AS, AE = 1, 10, 11, 12, 13
NAN = float("nan")


def test_span_excludes_delimiters_and_outside_tokens():
    ids = [BOS, AS, 100, 101, 102, AE, TS, 5, TE]
    lp = [NAN, -9.0, -1.0, -2.0, -3.0, -50.0, -7.0, -0.5, -60.0]
    assert span_mask(ids, AS, AE).tolist() == [False, False, True, True, True, False, False, False, False]
    assert span_mean_logprob(ids, lp, AS, AE) == pytest.approx(-2.0)  # not -9, not -50
    assert span_mean_logprob(ids, lp, TS, TE) == pytest.approx(-0.5)


def test_span_mask_several_spans_and_errors():
    ids = [BOS, AS, 100, AE, AS, 101, 102, AE]
    assert np.flatnonzero(span_mask(ids, AS, AE)).tolist() == [2, 5, 6]
    with pytest.raises(ValueError, match="never ends"):
        span_mask([BOS, AS, 100], AS, AE)
    with pytest.raises(ValueError, match="no start"):
        span_mask([BOS, 100, AE], AS, AE)
    with pytest.raises(ValueError, match="empty"):
        span_mean_logprob([BOS, AS, AE], [NAN, -1.0, -1.0], AS, AE)
    with pytest.raises(ValueError, match="NaN"):
        mean_logprob([NAN, -1.0], np.array([0, 1]))


def test_pair_accuracy_strict_and_ties_half():
    pos = [-1.0, -2.0, -3.0, -4.0]
    neg = [-2.0, -2.0, -1.0, -4.0]  # win, tie, loss, tie
    acc = pair_accuracy(pos, neg)
    assert acc["acc"] == 0.25 and acc["acc_ties_half"] == 0.5 and acc["ties"] == 2 and acc["n"] == 4


def test_per_part_pooling_differs_from_macro_mean():
    pos = [0, 0, 0, 0, 0, 0]
    neg = [-1, -1, -1, 1, 1, -1]  # part a: 3/3 correct; part b: 1/3 correct
    out = per_part_accuracy(pos, neg, ["a", "a", "a", "b", "b", "b"])
    assert out["parts"]["a"]["acc"] == 1.0 and out["parts"]["b"]["acc"] == pytest.approx(1 / 3)
    assert out["overall"]["acc"] == pytest.approx(4 / 6)
    unequal = per_part_accuracy([0, 0, 0, 0], [-1, -1, -1, 1], ["a", "a", "a", "b"])
    assert unequal["overall"]["acc"] == 0.75 and unequal["overall_macro"] == 0.5  # pooled != macro


def test_multiple_choice_acc_norm_by_characters():
    # choice 0 has the larger total log-lik but is long; per character, choice 1 wins
    out = multiple_choice([[-10.0, -12.0]], [[5, 20]], [1])
    assert out["acc"] == 0.0 and out["acc_norm"] == 1.0
    out = multiple_choice([[-10.0, -12.0], [-3.0, -1.0]], [[5, 20], [4, 4]], [0, 1])
    assert out["acc"] == 1.0 and out["acc_norm"] == 0.5
    with pytest.raises(ValueError, match="zero characters"):
        multiple_choice([[-1.0, -1.0]], [[0, 3]], [0])


def test_harness_choice_chars_drop_the_target_delimiter():
    assert harness_choice_chars(" He runs.") == 8  # lm-eval-harness: len(choice), no leading space
    assert harness_choice_chars("\nB", target_delimiter="\n") == 1
    with pytest.raises(ValueError, match="target delimiter"):
        harness_choice_chars("He runs.")


class _FakeTextContext:
    """Just enough of EvalContext for HellaSwag's scorer: one id per character, and fixed
    per-token log-probs that give each ending a chosen total log-likelihood."""

    def __init__(self, ending_logliks: dict):
        self.ending_logliks = ending_logliks

    def encode(self, text, bos=True):
        return ([0] if bos else []) + [ord(ch) for ch in text]

    def logprobs(self, seqs):
        out = []
        for seq in seqs:
            ending = "".join(chr(i) for i in seq).split(":", 1)[1][len(" It starts"):]
            n = len(ending)
            out.append(np.array([NAN] + [0.0] * (len(seq) - 1 - n) + [self.ending_logliks[ending] / n] * n))
        return out


def test_hellaswag_acc_norm_near_tie_follows_the_harness_not_the_leading_space():
    from eval.tasks.hellaswag import _score_chunk

    short, long = " He runs.", " He runs away fast."  # 8 and 18 characters without the space
    # per harness character: -10/8 = -1.250 < -22.4/18 = -1.244 -> the long ending (label 1) wins;
    # counting the leading space: -10/9 = -1.111 > -22.4/19 = -1.179 -> the short one would win.
    ctx = _FakeTextContext({short: -10.0, long: -22.4})
    rows = _score_chunk(ctx, [{"id": "0", "context": "Running: It starts", "choices": [short, long], "label": 1}])
    assert rows[0]["chars"] == [8, 18]
    assert rows[0]["loglik"] == [pytest.approx(-10.0), pytest.approx(-22.4)]
    out = multiple_choice([rows[0]["loglik"]], [rows[0]["chars"]], [1])
    assert out["acc"] == 0.0 and out["acc_norm"] == 1.0
    with_space = multiple_choice([rows[0]["loglik"]], [[len(short), len(long)]], [1])
    assert with_space["acc_norm"] == 0.0  # the old convention picks the other ending


def test_continuation_loglik_sums_after_context():
    assert continuation_loglik([NAN, -1.0, -2.0, -3.0], 2) == -5.0
    with pytest.raises(ValueError):
        continuation_loglik([NAN, -1.0], 2)


def test_frame_major_codebook_selection_catches_transposed_bug():
    # 3 frames x 8 codebooks, flat frame-major: value = 10 * frame + codebook
    frames, k = 3, 2
    flat = np.array([10 * t + c for t in range(frames) for c in range(8)])
    right = select_codebooks(flat, k)
    assert right.tolist() == [0, 1, 10, 11, 20, 21]  # codebooks 0..1 of every frame
    bug = flat.reshape(8, -1)[:k].reshape(-1)  # the public script's reshape(8, -1)[:k]
    assert bug.tolist() == [0, 1, 2, 3, 4, 5]  # the first 6 flat tokens: a prefix of time (frame 0)
    assert sorted(right.tolist()) != sorted(bug.tolist())
    with pytest.raises(ValueError, match="whole number"):
        select_codebooks(np.arange(12), 1)


def test_codebook_selection_inside_a_scored_span():
    audio = list(range(100, 116))  # 2 frames
    ids = [BOS, AS, *audio, AE]
    # log-prob -1 on codebook 0 tokens, -5 elsewhere
    lp = [NAN, -3.0] + [(-1.0 if i % 8 == 0 else -5.0) for i in range(16)] + [-9.0]
    assert span_mean_logprob(ids, lp, AS, AE, codebooks=1) == -1.0
    assert span_mean_logprob(ids, lp, AS, AE, codebooks=8) == pytest.approx((2 * -1 + 14 * -5) / 16)
    assert span_positions(ids, AS, AE, codebooks=2).tolist() == [2, 3, 10, 11]
    assert math.isclose(span_mean_logprob(ids, lp, AS, AE, codebooks=2), -3.0)
