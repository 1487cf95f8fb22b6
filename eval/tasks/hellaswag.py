"""HellaSwag as multiple choice, as lm-eval-harness scores it: plain text (no SODA delimiters),
log-likelihood of each ending given the context; acc = argmax of the summed log-likelihood,
acc_norm = argmax of log-likelihood / ending length in characters, counted as the harness does:
the ending without the leading space that is prepended when scoring it (see
`eval.scoring.harness_choice_chars`)."""

from __future__ import annotations

from eval import datasets as D
from eval.scoring import continuation_loglik, harness_choice_chars, multiple_choice
from eval.tasks.common import EvalContext, TaskResult, token_convention


def _score_chunk(ctx: EvalContext, chunk: list[dict]) -> list[dict]:
    seqs, ctx_lens = [], []
    for ex in chunk:
        context = ctx.encode(ex["context"])
        for choice in ex["choices"]:
            # tokenize context and continuation separately, as the harness does
            seqs.append(list(context) + list(ctx.encode(choice, bos=False)))
            ctx_lens.append(len(context))
    lps = ctx.logprobs(seqs)
    rows, j = [], 0
    for ex in chunk:
        ll = []
        for _ in ex["choices"]:
            ll.append(continuation_loglik(lps[j], ctx_lens[j]))
            j += 1
        rows.append({"id": ex["id"], "label": ex["label"], "loglik": ll,
                     "chars": [harness_choice_chars(c) for c in ex["choices"]]})
    return rows


def hellaswag(ctx: EvalContext) -> TaskResult:
    ex = D.hellaswag(ctx.config.dataset_path, ctx.config.max_examples, ctx.stats)
    rows = ctx.map_chunks(ex, lambda c: _score_chunk(ctx, c), "HellaSwag")
    mc = multiple_choice([r["loglik"] for r in rows], [r["chars"] for r in rows], [r["label"] for r in rows])
    conv = {**token_convention(ctx), "input": "plain text, no SODA delimiters; 0-shot",
            "preprocess": "lm-eval-harness: activity_label: ctx_a + ' ' + ctx_b.capitalize(); endings with a "
                          "leading space; [title] -> '. ', other [..] removed",
            "acc": "argmax summed log-likelihood of the ending",
            "acc_norm": "argmax log-likelihood / ending length in characters, without the leading space "
                        "(lm-eval-harness: len() of the doc_to_choice string)",
            "split": "validation"}
    return TaskResult({"acc": mc["acc"], "acc_norm": mc["acc_norm"]}, conv, mc["n"])
