"""Validation NLL on LibriSpeech dev-clean: each utterance is one document, written in ASR order
(audio first) and TTS order (text first) exactly as training documents are
(tokenizer.documents.render), and scored teacher-forced.

Six variants {asr, tts} x {all, audio, text} (the paper did not publish its exact definitions;
these are ours and recorded in the summary):
- all: every predicted token (positions 1..n-1: delimiters and the text/audio tokens);
- audio: tokens strictly between <|audio_start|> and <|audio_end|>;
- text: tokens strictly between <|text_start|> and <|text_end|>.
Each is pooled over utterances: `nll_{order}_{subset}` = total NLL / total tokens (nats/token),
and `nll_{order}_{subset}_per_sec` = total NLL / total audio seconds. Headline: `nll_asr_all`.
"""

from __future__ import annotations

import numpy as np

from eval import datasets as D
from eval.scoring import span_mask
from eval.tasks.common import EvalContext, TaskResult, token_convention
from tokenizer.documents import AUDIO_FIRST, TEXT_FIRST, Utterance, render, sanitize_text

ORDERS = {"asr": AUDIO_FIRST, "tts": TEXT_FIRST}
SUBSETS = ("all", "audio", "text")


def _subset_masks(ctx: EvalContext, ids: np.ndarray) -> dict[str, np.ndarray]:
    every = np.ones(ids.size, dtype=bool)
    every[0] = False
    return {"all": every, "audio": span_mask(ids, ctx.audio_start, ctx.audio_end),
            "text": span_mask(ids, ctx.text_start, ctx.text_end)}


def _chunk_fn(ctx: EvalContext):
    from collections import Counter

    def run(chunk: list[dict]) -> list[dict]:
        strings = ctx.audio_strings([ex["audio"] for ex in chunk])
        seqs, meta = [], []
        for ex, audio in zip(chunk, strings):
            text = ex["text"].lower() if ctx.config.nll_lowercase else ex["text"]
            utt = Utterance(ex["id"], ex["id"], 0, sanitize_text(text, Counter()), ex["seconds"], audio)
            for order, fmt in ORDERS.items():
                seqs.append(ctx.encode(render([utt], fmt)[len("<|begin_of_text|>"):]))
                meta.append((ex, order))
        lps = ctx.logprobs(seqs)
        rows: dict[str, dict] = {}
        for ids, lp, (ex, order) in zip(seqs, lps, meta):
            row = rows.setdefault(ex["id"], {"id": ex["id"], "seconds": ex["seconds"]})
            for subset, mask in _subset_masks(ctx, ids).items():
                row[f"{order}_{subset}_nll"] = float(-lp[mask].sum())
                row[f"{order}_{subset}_tokens"] = int(mask.sum())
        return list(rows.values())

    return run


def validation_nll(ctx: EvalContext) -> TaskResult:
    c = ctx.config
    ex = D.librispeech(c.dataset_path, c.split or "dev-clean", c.max_examples, ctx.stats)
    rows = ctx.map_chunks(ex, _chunk_fn(ctx), "validation NLL")
    seconds = sum(r["seconds"] for r in rows)
    metrics = {}
    for order in ORDERS:
        for subset in SUBSETS:
            nll = sum(r[f"{order}_{subset}_nll"] for r in rows)
            tokens = sum(r[f"{order}_{subset}_tokens"] for r in rows)
            metrics[f"nll_{order}_{subset}"] = nll / tokens
            metrics[f"nll_{order}_{subset}_per_sec"] = nll / seconds
    conv = {**token_convention(ctx), "split": c.split or "dev-clean",
            "documents": "one utterance per document, rendered like training documents "
                         "(asr = audio first, tts = text first), no EOS",
            "subsets": {"all": "every predicted token after BOS (delimiters included)",
                        "audio": "tokens strictly inside <|audio_start|>..<|audio_end|>",
                        "text": "tokens strictly inside <|text_start|>..<|text_end|>"},
            "pooling": "total NLL / total tokens over utterances (nats per token); _per_sec: / total audio seconds",
            "headline": "nll_asr_all (the paper's NLL_1: all-token NLL; its exact definition was not published)",
            "transcripts": "lowercased" if c.nll_lowercase else "as in the dataset (LibriSpeech: uppercase, no punctuation)",
            "mimi": c.mimi_model}
    return TaskResult(metrics, conv, len(rows), {"audio_seconds": seconds})
