"""Pure scorers on per-token log-prob arrays (shared/reference.md section 8). No model, no files.

Conventions used everywhere in `eval/`:

- A scored sequence is a 1-D id array `ids` and an aligned float array `logprobs` of the same
  length: `logprobs[i] = log p(ids[i] | ids[:i])`, and `logprobs[0]` is NaN (nothing predicts the
  first token). `eval.model` returns exactly this.
- A span is the tokens STRICTLY between a start delimiter and the next end delimiter
  (`<|audio_start|>` ... `<|audio_end|>` or `<|text_start|>` ... `<|text_end|>`); the delimiters
  themselves are never scored.
- Audio spans are flat and frame-major (c0[t], ..., c7[t], c0[t+1], ...). Keeping the first k
  codebooks is `values.reshape(-1, 8)[:, :k]`; `reshape(8, -1)[:k]` (a public script's bug)
  keeps a prefix of time instead.
- Pair tasks: correct iff score(positive) > score(negative), strictly (the paper's convention);
  `acc_ties_half` counts a tie as half correct (ZeroSpeech's convention).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

NUM_CODEBOOKS = 8


# ---- spans ---------------------------------------------------------------------------------


def span_mask(ids: Sequence[int], start_id: int, end_id: int) -> np.ndarray:
    """Boolean mask of the tokens strictly inside every `start_id ... end_id` span of `ids`.

    Raises ValueError for a start without a later end, or an end without a start (the sequence
    was truncated or built wrongly; scoring it would silently score the wrong tokens).
    """
    arr = np.asarray(ids)
    mask = np.zeros(arr.shape[0], dtype=bool)
    open_at: Optional[int] = None
    for pos in np.flatnonzero((arr == start_id) | (arr == end_id)):
        if arr[pos] == start_id:
            if open_at is not None:
                raise ValueError(f"span opened at position {open_at} is opened again at {pos} before it ends")
            open_at = int(pos)
        else:
            if open_at is None:
                raise ValueError(f"end delimiter {end_id} at position {pos} has no start delimiter before it")
            mask[open_at + 1 : pos] = True
            open_at = None
    if open_at is not None:
        raise ValueError(f"span opened at position {open_at} (id {start_id}) never ends (no id {end_id} after it)")
    return mask


def select_codebooks(values: np.ndarray, k: int, num_codebooks: int = NUM_CODEBOOKS) -> np.ndarray:
    """The entries of a flat frame-major audio span that belong to codebooks 0..k-1, in order.

    `values` may be token ids, log-probs or positions. Raises ValueError if its length is not a
    whole number of frames or k is out of range.
    """
    arr = np.asarray(values)
    if not 1 <= k <= num_codebooks:
        raise ValueError(f"k={k} codebooks: must be in 1..{num_codebooks}")
    if arr.ndim != 1 or arr.shape[0] % num_codebooks:
        raise ValueError(
            f"audio span of {arr.shape[0] if arr.ndim == 1 else arr.shape} entries is not a whole number "
            f"of {num_codebooks}-codebook frames"
        )
    return arr.reshape(-1, num_codebooks)[:, :k].reshape(-1)


def span_positions(ids: Sequence[int], start_id: int, end_id: int, codebooks: Optional[int] = None,
                   num_codebooks: int = NUM_CODEBOOKS) -> np.ndarray:
    """Positions scored for a span; with `codebooks=k`, only codebooks 0..k-1 of each audio span."""
    mask = span_mask(ids, start_id, end_id)
    if codebooks is None or codebooks == num_codebooks:
        return np.flatnonzero(mask)
    # each span separately: a frame never straddles two spans
    pos = np.flatnonzero(mask)
    if pos.size == 0:
        return pos
    breaks = np.flatnonzero(np.diff(pos) != 1) + 1
    return np.concatenate([select_codebooks(p, codebooks, num_codebooks) for p in np.split(pos, breaks)])


def mean_logprob(logprobs: Sequence[float], positions: np.ndarray) -> float:
    """Mean of `logprobs` at `positions`. Raises ValueError on an empty span or a NaN inside it."""
    lp = np.asarray(logprobs, dtype=np.float64)
    pos = np.asarray(positions)
    if pos.size == 0:
        raise ValueError("the span to score is empty (nothing between the delimiters)")
    vals = lp[pos]
    if np.isnan(vals).any():
        raise ValueError(f"NaN log-prob inside the scored span at position {int(pos[np.isnan(vals)][0])} "
                         "(position 0 has no prediction: prepend BOS)")
    return float(vals.mean())


def span_mean_logprob(ids: Sequence[int], logprobs: Sequence[float], start_id: int, end_id: int,
                      codebooks: Optional[int] = None) -> float:
    """Mean log-prob over the tokens strictly between the delimiters (the paper's pair score)."""
    return mean_logprob(logprobs, span_positions(ids, start_id, end_id, codebooks))


# ---- accuracies ----------------------------------------------------------------------------


def pair_outcomes(positive: Sequence[float], negative: Sequence[float]) -> np.ndarray:
    """Per pair: 1.0 if positive > negative, 0.5 on a tie, 0.0 otherwise."""
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    if pos.shape != neg.shape:
        raise ValueError(f"{pos.shape[0]} positive scores but {neg.shape[0]} negative scores")
    return np.where(pos > neg, 1.0, np.where(pos == neg, 0.5, 0.0))


def pair_accuracy(positive: Sequence[float], negative: Sequence[float]) -> dict:
    """{'acc': strict (ties wrong), 'acc_ties_half': ties count 1/2, 'n', 'ties'}, pooled over pairs."""
    out = pair_outcomes(positive, negative)
    if out.size == 0:
        raise ValueError("no pairs to score")
    return {
        "acc": float((out == 1.0).mean()),
        "acc_ties_half": float(out.mean()),
        "n": int(out.size),
        "ties": int((out == 0.5).sum()),
    }


def per_part_accuracy(positive: Sequence[float], negative: Sequence[float], parts: Sequence[str]) -> dict:
    """Pair accuracy per part, plus 'overall' pooled over all pairs and 'overall_macro' (the
    unweighted mean of the parts' strict accuracies). Returns {'parts': {part: pair_accuracy},
    'overall': pair_accuracy, 'overall_macro': float}."""
    parts = list(parts)
    if len(parts) != len(positive):
        raise ValueError(f"{len(parts)} part labels for {len(positive)} pairs")
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    labels = np.asarray(parts)
    by_part = {p: pair_accuracy(pos[labels == p], neg[labels == p]) for p in sorted(set(parts))}
    return {
        "parts": by_part,
        "overall": pair_accuracy(pos, neg),
        "overall_macro": float(np.mean([v["acc"] for v in by_part.values()])),
    }


HARNESS_TARGET_DELIMITER = " "  # lm-eval-harness TaskConfig.target_delimiter default


def harness_choice_chars(continuation: str, target_delimiter: str = HARNESS_TARGET_DELIMITER) -> int:
    """The character count lm-eval-harness divides by for acc_norm: that of the choice string,
    i.e. the scored continuation without the target delimiter the harness prepends.

    lm_eval/api/task.py, ConfigurableTask: `construct_requests` scores
    `(ctx, f"{target_delimiter}{cont}") for cont in choices`, while `process_results` computes
    `completion_len = np.array([float(len(i)) for i in choices])` with
    `choices = self.doc_to_choice(doc)`, the bare choices. For HellaSwag
    (lm_eval/tasks/hellaswag/hellaswag.yaml: `doc_to_choice: "choices"`; utils.py `process_docs`:
    `"choices": [preprocess(ending) ...]`, stripped) that is the cleaned ending, no leading space.
    """
    if not continuation.startswith(target_delimiter):
        raise ValueError(f"continuation {continuation!r} does not start with the target delimiter "
                         f"{target_delimiter!r}: pass the string that was scored")
    return len(continuation) - len(target_delimiter)


def multiple_choice(logliks: Sequence[Sequence[float]], choice_chars: Sequence[Sequence[int]],
                    labels: Sequence[int]) -> dict:
    """lm-eval-harness multiple choice: acc = argmax of summed log-likelihood of each choice's
    continuation; acc_norm = argmax of log-likelihood / the choice's length in characters
    (`choice_chars`: the harness counts the choice string without the leading target delimiter,
    see `harness_choice_chars`). Ties go to the first choice (numpy argmax), as in the harness."""
    if not (len(logliks) == len(choice_chars) == len(labels)):
        raise ValueError(f"{len(logliks)} examples of log-likelihoods, {len(choice_chars)} of lengths, "
                         f"{len(labels)} labels")
    if not logliks:
        raise ValueError("no examples to score")
    acc, acc_norm = [], []
    for ll, chars, label in zip(logliks, choice_chars, labels):
        ll = np.asarray(ll, dtype=np.float64)
        chars = np.asarray(chars, dtype=np.float64)
        if ll.shape != chars.shape:
            raise ValueError(f"{ll.shape[0]} choice log-likelihoods but {chars.shape[0]} choice lengths")
        if not 0 <= label < ll.shape[0]:
            raise ValueError(f"label {label} outside 0..{ll.shape[0] - 1}")
        if (chars <= 0).any():
            raise ValueError("a choice has zero characters: acc_norm is undefined")
        acc.append(float(np.argmax(ll) == label))
        acc_norm.append(float(np.argmax(ll / chars) == label))
    return {"acc": float(np.mean(acc)), "acc_norm": float(np.mean(acc_norm)), "n": len(acc)}


def continuation_loglik(logprobs: Sequence[float], context_len: int) -> float:
    """Summed log-prob of the tokens from `context_len` on (the continuation of a prompt)."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if not 1 <= context_len < lp.shape[0]:
        raise ValueError(f"context of {context_len} tokens in a sequence of {lp.shape[0]}: the continuation is empty")
    return float(lp[context_len:].sum())
