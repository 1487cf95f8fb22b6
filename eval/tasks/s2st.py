"""Voice-preserving speech-to-speech translation on CVSS-T test, for S2ST fine-tunes of SODA.

Prompt (tokenizer.prompts.s2st_prompt, as the fine-tune's documents): `BOS <|audio_start|>As<|audio_end|>
<|text_start|>Ts<|text_end|><|text_start|>`; the model answers the target text, `<|text_end|>
<|audio_start|>`, the target speech and `<|audio_end|>` (read by eval.generate.decode_answer, the same
reader as `soda generate --task s2st`). Sampling: s2st_temperature / s2st_top_p (default 0.9 / 0.8,
the TTS protocol's: the paper publishes no S2ST decoding), at most s2st_max_new_tokens, stop at
`<|audio_end|>`. The generated speech is decoded with Mimi, then:

- `asr_bleu`: an ASR judge (tts_asr_judge, default Whisper-large-v3) transcribes it; corpus BLEU
  (sacrebleu, 13a) against the reference translation, both lowercased with punctuation removed
  (eval.bleu); also per source language (`asr_bleu/fr`, ...).
- `text_bleu`: the same BLEU of the model's own target text (the answer's text part).
- `sim`: cosine of speaker embeddings (tts_sim_judge) of the generated speech and the SOURCE clip, at
  16 kHz: does the translation keep the speaker's voice. `sim_reference` is the same for CVSS-T's own
  target speech, the data's ceiling on this judge.
- `terminated`: the share of pairs whose sample reached `<|audio_end|>` within the budget.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterator

import numpy as np

from eval.bleu import corpus_bleu
from eval.judges import SpeakerJudge, WhisperJudge, describe_sim_judge, is_random_judge, to_16k
from eval.tasks.common import EvalContext, TaskResult, token_convention
from eval.wer import normalize_asr
from tokenizer.prompts import s2st_prompt
from eval.generate import decode_answer
from steps.s2st.cvss import iter_pairs


def cvss_examples(root: str, split: str, limit, skipped: Counter) -> Iterator[dict]:
    """CVSS pairs (steps.s2st.cvss.iter_pairs) as examples for EvalContext.map_chunks."""
    for p in iter_pairs(root, split, limit=limit, skipped=skipped):
        yield {"id": p.id, "source_lang": p.source_lang, "source_text": p.source_text, "target_text": p.target_text,
               "source_audio": p.source_audio, "target_audio": p.target_audio}


def _chunk_fn(ctx: EvalContext, asr_judge: WhisperJudge, sim_judge: SpeakerJudge):
    offset = [0]

    def run(chunk: list[dict]) -> list[dict]:
        c = ctx.config
        strings = ctx.audio_strings([ex["source_audio"] for ex in chunk])
        prompts = [ctx.encode(s2st_prompt(s, ex["source_text"]).text) for ex, s in zip(chunk, strings)]
        gens = ctx.generate(prompts, temperature=c.s2st_temperature, top_p=c.s2st_top_p,
                            max_new_tokens=c.s2st_max_new_tokens, stop_id=ctx.audio_end, offset=offset[0])
        offset[0] += len(chunk)
        rows = []
        for ex, g in zip(chunk, gens):
            _, audio, text, stats = decode_answer("s2st", g.ids, ctx)
            gen16, source16 = to_16k(audio), to_16k(ex["source_audio"])
            rows.append({"id": ex["id"], "source_lang": ex["source_lang"], "target_text": ex["target_text"],
                         "text": text or "", "asr": asr_judge.transcribe([gen16])[0], "terminated": g.terminated,
                         "generated_tokens": len(g.ids), "seconds": len(audio) / 24_000,
                         "sim": sim_judge.similarity(gen16, source16),
                         "sim_reference": sim_judge.similarity(to_16k(ex["target_audio"]), source16), **stats})
        return rows

    return run


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def s2st(ctx: EvalContext) -> TaskResult:
    c = ctx.config
    asr_judge = WhisperJudge(c.tts_asr_judge, device=c.device)
    sim_judge = SpeakerJudge(c.tts_sim_judge, device=c.device)
    skipped: Counter = Counter()
    split = c.split or "test"
    rows = ctx.map_chunks(cvss_examples(c.dataset_path, split, c.max_examples, skipped), _chunk_fn(ctx, asr_judge,
                                                                                                   sim_judge), "S2ST")
    for reason, n in skipped.items():
        ctx.stats.skipped[reason] = ctx.stats.skipped.get(reason, 0) + n
    if not rows:
        raise ValueError(f"no usable CVSS pairs in split {split!r} under {c.dataset_path!r} (skipped: {dict(skipped)})")
    refs = [r["target_text"] for r in rows]
    asr = corpus_bleu(refs, [r["asr"] for r in rows], normalize_asr)
    own = corpus_bleu(refs, [r["text"] for r in rows], normalize_asr)
    metrics = {"asr_bleu": asr["bleu"], "text_bleu": own["bleu"],
               "terminated": sum(r["terminated"] for r in rows) / len(rows)}
    by_lang = defaultdict(list)
    for r in rows:
        by_lang[r["source_lang"]].append(r)
    if len(by_lang) > 1:
        for lang, part in sorted(by_lang.items()):
            metrics[f"asr_bleu/{lang}"] = corpus_bleu([r["target_text"] for r in part], [r["asr"] for r in part],
                                                      normalize_asr)["bleu"]
    for key in ("sim", "sim_reference"):  # no clip long enough: no SIM at all (JSON has no NaN)
        value = _mean(r[key] for r in rows)
        if value is not None:
            metrics[key] = value
    random_judges = is_random_judge(c.tts_asr_judge) or is_random_judge(c.tts_sim_judge)
    conv = {**token_convention(ctx), "split": split,
            "prompt": "<|audio_start|>As<|audio_end|><|text_start|>Ts<|text_end|><|text_start|>",
            "answer": "Tt<|text_end|><|audio_start|>At<|audio_end|>",
            "sampling": {"temperature": c.s2st_temperature, "top_p": c.s2st_top_p,
                         "max_new_tokens": c.s2st_max_new_tokens, "stop": "<|audio_end|>", "seed": c.seed},
            "asr_bleu": f"sacrebleu corpus BLEU ({asr['signature']}) of ASR judge {c.tts_asr_judge}'s transcripts "
                        "of the generated speech vs the reference translation; both lowercased, punctuation removed",
            "text_bleu": "the same BLEU of the model's own target text",
            "sim": f"cosine of {describe_sim_judge(c.tts_sim_judge)} embeddings, generated speech vs the SOURCE "
                   "clip, 16 kHz; mean over the pairs the judge can embed (the others counted in sim_unscored)",
            "sim_reference": "the same for CVSS-T's reference target speech vs the source clip",
            "terminated": "share of pairs whose sample produced <|audio_end|> within the budget",
            "mimi": c.mimi_model, "judges": "random-init (plumbing)" if random_judges else "pretrained"}
    extra = {"no_audio": sum(1 for r in rows if r["frames"] == 0),
             "missing_audio_start": sum(1 for r in rows if r.get("missing_audio_start")),
             "sim_unscored": sum(1 for r in rows if r["sim"] is None), "languages": sorted(by_lang),
             "bleu_details": {"asr": asr, "text": own}}
    return TaskResult(metrics, conv, len(rows), extra)
