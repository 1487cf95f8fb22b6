"""BLEU for translation outputs (the S2ST evaluation's ASR-BLEU and text BLEU), via sacrebleu.

`corpus_bleu(refs, hyps, normalize)` is sacrebleu's corpus BLEU (13a tokenisation, exponential
smoothing off, one reference per segment) after the same normalisation of both sides. For ASR-BLEU
the hypotheses are an ASR judge's transcripts of the generated speech, which carry no reliable
casing or punctuation, so both sides go through `eval.wer.normalize_asr` (lowercase, punctuation
removed), as CVSS and Translatotron report it. Scores are on sacrebleu's 0-100 scale.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence


def corpus_bleu(refs: Sequence[str], hyps: Sequence[str],
                normalize: Optional[Callable[[str], str]] = None) -> dict:
    """{'bleu', 'precisions', 'brevity_penalty', 'hyp_len', 'ref_len', 'n', 'signature'} of the corpus."""
    import sacrebleu

    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no segments to score")
    norm = normalize or (lambda s: s)
    metric = sacrebleu.metrics.BLEU(tokenize="13a")
    score = metric.corpus_score([norm(h) for h in hyps], [[norm(r) for r in refs]])
    return {"bleu": float(score.score), "precisions": [float(p) for p in score.precisions],
            "brevity_penalty": float(score.bp), "hyp_len": int(score.sys_len), "ref_len": int(score.ref_len),
            "n": len(refs), "signature": str(metric.get_signature())}
