"""ASR on LibriSpeech test-clean (shared/reference.md section 8): prompt
`BOS <|audio_start|>A<|audio_end|><|text_start|>`, sample T=0.5, top-p 0.8, at most 200 tokens,
stop at `<|text_end|>`; corpus WER (total errors / total reference words) with the paper's
normalisation (lowercase, all punctuation incl. apostrophes removed) and with Whisper's English
normaliser, via jiwer."""

from __future__ import annotations

from eval import datasets as D
from eval.tasks.common import EvalContext, TaskResult, token_convention
from eval.wer import corpus_wer, normalize_asr, whisper_normalizer
from tokenizer.prompts import asr_prompt


def _chunk_fn(ctx: EvalContext):
    offset = [0]

    def run(chunk: list[dict]) -> list[dict]:
        c = ctx.config
        strings = ctx.audio_strings([ex["audio"] for ex in chunk])
        prompts = [ctx.encode(asr_prompt(s).text) for s in strings]
        gens = ctx.generate(prompts, temperature=c.asr_temperature, top_p=c.asr_top_p,
                            max_new_tokens=c.asr_max_new_tokens, stop_id=ctx.text_end, offset=offset[0])
        offset[0] += len(chunk)
        return [{"id": ex["id"], "reference": ex["text"], "hypothesis": ctx.decode_text(g.ids),
                 "terminated": g.terminated, "generated_tokens": len(g.ids), "seconds": ex["seconds"]}
                for ex, g in zip(chunk, gens)]

    return run


def asr(ctx: EvalContext) -> TaskResult:
    c = ctx.config
    ex = D.librispeech(c.dataset_path, c.split or "test-clean", c.max_examples, ctx.stats)
    rows = ctx.map_chunks(ex, _chunk_fn(ctx), "ASR")
    refs, hyps = [r["reference"] for r in rows], [r["hypothesis"] for r in rows]
    paper = corpus_wer(refs, hyps, normalize_asr)
    whisper = whisper_normalizer(c.whisper_normalizer)
    wn = corpus_wer(refs, hyps, whisper)
    metrics = {"wer": paper["wer"], "wer_whisper_norm": wn["wer"],
               "terminated": sum(r["terminated"] for r in rows) / len(rows)}
    conv = {**token_convention(ctx), "split": c.split or "test-clean", "prompt": "<|audio_start|>A<|audio_end|><|text_start|>",
            "sampling": {"temperature": c.asr_temperature, "top_p": c.asr_top_p,
                         "max_new_tokens": c.asr_max_new_tokens, "stop": "<|text_end|>", "seed": c.seed},
            "wer": "corpus WER = total errors / total reference words (jiwer), paper normalisation: lowercase, "
                   "all punctuation removed incl. apostrophes",
            "wer_whisper_norm": f"same, with transformers' EnglishTextNormalizer (spelling table: {whisper.spelling_table})",
            "mimi": c.mimi_model}
    return TaskResult(metrics, conv, len(rows), {"errors": paper["errors"], "ref_words": paper["ref_words"]})
