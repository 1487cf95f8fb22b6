"""Voice-conditioned TTS on seed-tts-eval English (shared/reference.md section 8).

Prompt `BOS <|text_start|>Tp<|text_end|><|audio_start|>Ap<|audio_end|><|text_start|>T<|text_end|><|audio_start|>`,
sample T=0.9, top-p 0.8, at most 1500 tokens, stop at `<|audio_end|>`; the generated audio ids
are decoded with Mimi. WER: an ASR judge's transcript vs the target text, both lowercased with
punctuation except apostrophes removed, mean of per-utterance WERs. SIM: cosine of speaker
embeddings of the generated audio and the PROMPT clip, both at 16 kHz, by the tts_sim_judge
(default seed-tts-eval's WavLM-large + ECAPA-TDNN, eval.ecapa_judge), mean over every prompt the
judge can embed; a pair it cannot (no audio, or a clip under the judge's shortest: 45 ms for ECAPA)
is counted in `sim_unscored` and `sim_unscored_reasons`, never dropped silently. The summary names
the judge (`sim_judge`). `terminated`: the share of prompts whose sample ended with `<|audio_end|>`
within the budget.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from eval import datasets as D
from eval.judges import WhisperJudge, is_random_judge, load_speaker_judge, to_16k, unscored_sim_reason
from eval.tasks.common import EvalContext, TaskResult, token_convention
from eval.wer import normalize_tts, utterance_wers, whisper_normalizer
from tokenizer.prompts import voice_tts_prompt
from pipeline.fileio import atomic_write_bytes, join

logger = logging.getLogger(__name__)


def _chunk_fn(ctx: EvalContext, asr_judge: WhisperJudge, sim_judge):
    offset = [0]

    def run(chunk: list[dict]) -> list[dict]:
        c = ctx.config
        strings = ctx.audio_strings([ex["prompt_audio"] for ex in chunk])
        prompts = [ctx.encode(voice_tts_prompt(ex["prompt_text"], s, ex["target_text"]).text)
                   for ex, s in zip(chunk, strings)]
        gens = ctx.generate(prompts, temperature=c.tts_temperature, top_p=c.tts_top_p,
                            max_new_tokens=c.tts_max_new_tokens, stop_id=ctx.audio_end, offset=offset[0])
        offset[0] += len(chunk)
        rows = []
        for ex, g in zip(chunk, gens):
            audio, stats = ctx.decode_audio_ids(g.ids)
            gen16, prompt16 = to_16k(audio), to_16k(ex["prompt_audio"])
            hyp = asr_judge.transcribe([gen16])[0]
            unscored = unscored_sim_reason(sim_judge, gen16, prompt16)
            sim = None if unscored else sim_judge.similarity(gen16, prompt16)
            rows.append({"id": ex["id"], "target_text": ex["target_text"], "hypothesis": hyp,
                         "terminated": g.terminated, "generated_tokens": len(g.ids),
                         "seconds": len(audio) / 24_000, "sim": sim, "sim_unscored": unscored, **stats})
            if c.save_audio and len(audio):
                _save_wav(ctx, ex["id"], audio)
        return rows

    return run


def _save_wav(ctx: EvalContext, ident: str, audio: np.ndarray) -> None:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, 24_000, format="FLAC", subtype="PCM_16")
    atomic_write_bytes(join(ctx.output_path, "audio", f"{ident}.flac"), buf.getvalue())


def sim_summary(rows: list[dict], sim_judge) -> tuple[float | None, dict]:
    """Mean SIM over the scored rows (None if none) and the counts the summary reports: the judge,
    how many rows were scored, and the unscored ones by reason."""
    sims = [r["sim"] for r in rows if r["sim"] is not None]
    reasons = Counter(r.get("sim_unscored") or "judge gave no score" for r in rows if r["sim"] is None)
    if reasons:
        logger.warning("TTS SIM: %d of %d prompts unscored by %s: %s", sum(reasons.values()), len(rows),
                       sim_judge.name, dict(reasons))
    extra = {"sim_judge": sim_judge.name, "sim_scored": len(sims), "sim_unscored": len(rows) - len(sims),
             "sim_unscored_reasons": dict(reasons)}
    return (float(np.mean(sims)) if sims else None), extra


def tts(ctx: EvalContext) -> TaskResult:
    c = ctx.config
    asr_judge = WhisperJudge(c.tts_asr_judge, device=c.device)
    sim_judge = load_speaker_judge(c.tts_sim_judge, device=c.device)
    ex = D.seed_tts_eval(c.dataset_path, c.max_examples, ctx.stats)
    rows = ctx.map_chunks(ex, _chunk_fn(ctx, asr_judge, sim_judge), "TTS")
    refs, hyps = [r["target_text"] for r in rows], [r["hypothesis"] for r in rows]
    wers = utterance_wers(refs, hyps, normalize_tts)
    whisper = whisper_normalizer(c.whisper_normalizer or c.tts_asr_judge)
    wers_w = utterance_wers(refs, hyps, whisper)
    sim, sim_extra = sim_summary(rows, sim_judge)
    metrics = {"wer": float(np.mean(wers)), "wer_whisper_norm": float(np.mean(wers_w)),
               "terminated": sum(r["terminated"] for r in rows) / len(rows)}
    if sim is not None:  # no clip scored: no SIM at all (JSON has no NaN); sim_unscored_reasons says why
        metrics["sim"] = sim
    random_judges = is_random_judge(c.tts_asr_judge) or is_random_judge(c.tts_sim_judge)
    conv = {**token_convention(ctx),
            "prompt": "voice-conditioned: <|text_start|>Tp<|text_end|><|audio_start|>Ap<|audio_end|>"
                      "<|text_start|>T<|text_end|><|audio_start|>",
            "sampling": {"temperature": c.tts_temperature, "top_p": c.tts_top_p,
                         "max_new_tokens": c.tts_max_new_tokens, "stop": "<|audio_end|>", "seed": c.seed},
            "wer": f"mean of per-utterance WER; ASR judge {c.tts_asr_judge}; lowercase, punctuation except "
                   "apostrophes removed (jiwer)",
            "wer_whisper_norm": f"same, Whisper EnglishTextNormalizer (spelling table: {whisper.spelling_table})",
            "sim": f"cosine of {sim_judge.name} speaker embeddings, generated vs the PROMPT clip, 16 kHz; mean "
                   f"over every prompt whose clips last >= {sim_judge.min_samples} samples (others counted in "
                   "sim_unscored, by reason in sim_unscored_reasons)",
            "terminated": "share of prompts whose sample produced <|audio_end|> within the budget",
            "mimi": c.mimi_model,
            "judges": "random-init (plumbing)" if random_judges else "pretrained"}
    extra = {"no_audio": sum(1 for r in rows if r["frames"] == 0), **sim_extra}
    return TaskResult(metrics, conv, len(rows), extra)
