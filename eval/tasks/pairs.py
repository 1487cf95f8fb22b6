"""Likelihood pair tasks: sBLIMP, sWUGGY, SALMon (per part + overall), tBLIMP, tWUGGY, and spoken /
text StoryCloze (shared/reference.md section 8).

Audio pairs: `BOS <|audio_start|>A<|audio_end|>`, score = mean log-prob over the audio tokens
strictly between the delimiters (optionally only codebooks 0..k-1, frame-major). Text pairs:
`BOS <|text_start|>T<|text_end|>`, mean log-prob over the text tokens. Correct iff positive >
negative (strict); pooled over pairs; ties-count-half reported alongside.
"""

from __future__ import annotations

from eval import datasets as D
from eval.scoring import pair_accuracy, per_part_accuracy, span_mean_logprob
from eval.tasks.common import EvalContext, TaskResult, token_convention
from steps.training.composition import keep_codebooks
from tokenizer.vocab import AUDIO_END, AUDIO_START, TEXT_END, TEXT_START


def _score_audio_chunk(ctx: EvalContext, chunk: list[dict]) -> list[dict]:
    strings = ctx.audio_strings([w for ex in chunk for w in (ex["positive"], ex["negative"])])
    if ctx.config.input_codebooks:  # a model trained on these codebooks only reads only them
        strings = [keep_codebooks(s, ctx.config.input_codebooks) for s in strings]
    seqs = [ctx.encode(AUDIO_START + s + AUDIO_END) for s in strings]
    lps = ctx.logprobs(seqs)
    k = ctx.config.codebooks
    rows = []
    for i, ex in enumerate(chunk):
        sp = span_mean_logprob(seqs[2 * i], lps[2 * i], ctx.audio_start, ctx.audio_end, k)
        sn = span_mean_logprob(seqs[2 * i + 1], lps[2 * i + 1], ctx.audio_start, ctx.audio_end, k)
        rows.append({"id": ex["id"], "part": ex["part"], "pos_logp": sp, "neg_logp": sn,
                     "pos_tokens": int(len(strings[2 * i])), "neg_tokens": int(len(strings[2 * i + 1])),
                     **({"positive_text": ex["positive_text"], "negative_text": ex["negative_text"]}
                        if ex.get("positive_text") is not None else {})})
    return rows


def _score_text_chunk(ctx: EvalContext, chunk: list[dict]) -> list[dict]:
    seqs = [ctx.encode(TEXT_START + t + TEXT_END) for ex in chunk for t in (ex["positive"], ex["negative"])]
    lps = ctx.logprobs(seqs)
    return [{"id": ex["id"], "part": ex["part"], "positive": ex["positive"], "negative": ex["negative"],
             "pos_logp": span_mean_logprob(seqs[2 * i], lps[2 * i], ctx.text_start, ctx.text_end),
             "neg_logp": span_mean_logprob(seqs[2 * i + 1], lps[2 * i + 1], ctx.text_start, ctx.text_end)}
            for i, ex in enumerate(chunk)]


def _convention(ctx: EvalContext, modality: str, extra: dict | None = None) -> dict:
    audio = modality == "audio"
    return {
        **token_convention(ctx),
        "input": "<|audio_start|>A<|audio_end|>" if audio else "<|text_start|>T<|text_end|>",
        "score": "mean log-prob over tokens strictly between the delimiters (delimiters excluded)",
        "codebooks": (f"first {ctx.config.codebooks} (frame-major reshape(-1, 8)[:, :k])"
                      if audio and ctx.config.codebooks else ("all 8" if audio else None)),
        "input_codebooks": (f"input holds codebooks 0..{ctx.config.input_codebooks - 1} only, all scored"
                            if audio and ctx.config.input_codebooks else ("all 8" if audio else None)),
        "accuracy": "strict positive > negative, pooled over pairs (acc); ties count 1/2 in acc_ties_half",
        "mimi": ctx.config.mimi_model if audio else None,
        **(extra or {}),
    }


def _pair_metrics(rows: list[dict]) -> dict:
    acc = pair_accuracy([r["pos_logp"] for r in rows], [r["neg_logp"] for r in rows])
    return {"acc": acc["acc"], "acc_ties_half": acc["acc_ties_half"], "ties": acc["ties"]}


def _run_audio(ctx: EvalContext, examples, desc: str, extra=None) -> TaskResult:
    rows = ctx.map_chunks(examples, lambda c: _score_audio_chunk(ctx, c), desc)
    return TaskResult(_pair_metrics(rows), _convention(ctx, "audio", extra), len(rows))


def _run_text(ctx: EvalContext, examples, desc: str, extra=None) -> TaskResult:
    rows = ctx.map_chunks(examples, lambda c: _score_text_chunk(ctx, c), desc)
    return TaskResult(_pair_metrics(rows), _convention(ctx, "text", extra), len(rows))


def sblimp(ctx: EvalContext) -> TaskResult:
    return _run_audio(ctx, D.audio_pairs(ctx.config.dataset_path, ctx.config.max_examples, ctx.stats), "sBLIMP")


def swuggy(ctx: EvalContext) -> TaskResult:
    return _run_audio(ctx, D.audio_pairs(ctx.config.dataset_path, ctx.config.max_examples, ctx.stats), "sWUGGY")


def salmon(ctx: EvalContext) -> TaskResult:
    ex = D.salmon_pairs(ctx.config.dataset_path, ctx.config.max_examples, ctx.stats)
    rows = ctx.map_chunks(ex, lambda c: _score_audio_chunk(ctx, c), "SALMon")
    parts = per_part_accuracy([r["pos_logp"] for r in rows], [r["neg_logp"] for r in rows], [r["part"] for r in rows])
    metrics = {"acc": parts["overall"]["acc"], "acc_ties_half": parts["overall"]["acc_ties_half"],
               "acc_macro": parts["overall_macro"]}
    for part, acc in parts["parts"].items():
        metrics[f"acc/{part}"] = acc["acc"]
        metrics[f"acc_ties_half/{part}"] = acc["acc_ties_half"]
    conv = _convention(ctx, "audio", {"overall": "acc pooled over all pairs of all parts; acc_macro = mean of "
                                                 "the parts' acc", "max_examples": "per part"})
    return TaskResult(metrics, conv, len(rows), {"parts": sorted(parts["parts"])})


def tblimp(ctx: EvalContext) -> TaskResult:
    ex = D.text_pairs_from_audio_pairs(ctx.config.dataset_path, ctx.config.max_examples, lowercase=True, stats=ctx.stats)
    return _run_text(ctx, ex, "tBLIMP", {"text": "sBLIMP transcripts, lowercased (BLiMP convention)"})


def twuggy(ctx: EvalContext) -> TaskResult:
    ex = D.text_pairs_from_audio_pairs(ctx.config.dataset_path, ctx.config.max_examples, lowercase=False, stats=ctx.stats)
    return _run_text(ctx, ex, "tWUGGY", {"text": "sWUGGY transcripts as published"})


def storycloze_spoken(ctx: EvalContext) -> TaskResult:
    ex = D.storycloze_spoken(ctx.config.dataset_path, ctx.config.max_examples, ctx.stats)
    return _run_audio(ctx, ex, "sStoryCloze", {"pair": "whole story + ending audio, one span"})


def storycloze_text(ctx: EvalContext) -> TaskResult:
    ex = D.storycloze_text(ctx.config.dataset_path, ctx.config.max_examples, ctx.stats)
    return _run_text(ctx, ex, "StoryCloze", {"pair": "the four sentences + ending, one text span"})
