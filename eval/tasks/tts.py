"""Voice-conditioned TTS on seed-tts-eval English (shared/reference.md section 8).

Prompt `BOS <|text_start|>Tp<|text_end|><|audio_start|>Ap<|audio_end|><|text_start|>T<|text_end|><|audio_start|>`,
sample T=0.9, top-p 0.8, at most 1500 tokens, stop at `<|audio_end|>`; the generated audio ids
are decoded with Mimi. WER: an ASR judge's transcript vs the target text, both lowercased with
punctuation except apostrophes removed, mean of per-utterance WERs. SIM: cosine of speaker
embeddings of the generated audio and the PROMPT clip, both at 16 kHz. `terminated`: the share
of prompts whose sample ended with `<|audio_end|>` within the budget.
"""

from __future__ import annotations

import numpy as np

from eval import datasets as D
from eval.judges import SpeakerJudge, WhisperJudge, is_random_judge, to_16k
from eval.tasks.common import EvalContext, TaskResult, token_convention
from eval.wer import normalize_tts, utterance_wers, whisper_normalizer
from tokenizer.prompts import voice_tts_prompt


def _chunk_fn(ctx: EvalContext, asr_judge: WhisperJudge, sim_judge: SpeakerJudge):
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
            gen16 = to_16k(audio)
            hyp = asr_judge.transcribe([gen16])[0]
            sim = sim_judge.similarity(gen16, to_16k(ex["prompt_audio"]))
            rows.append({"id": ex["id"], "target_text": ex["target_text"], "hypothesis": hyp,
                         "terminated": g.terminated, "generated_tokens": len(g.ids),
                         "seconds": len(audio) / 24_000, "sim": sim, **stats})
            if c.save_audio and len(audio):
                _save_wav(ctx, ex["id"], audio)
        return rows

    return run


def _save_wav(ctx: EvalContext, ident: str, audio: np.ndarray) -> None:
    import io

    import soundfile as sf

    from steps.sharding import atomic_write_bytes, join

    buf = io.BytesIO()
    sf.write(buf, audio, 24_000, format="FLAC", subtype="PCM_16")
    atomic_write_bytes(join(ctx.output_path, "audio", f"{ident}.flac"), buf.getvalue())


def tts(ctx: EvalContext) -> TaskResult:
    c = ctx.config
    asr_judge = WhisperJudge(c.tts_asr_judge, device=c.device)
    sim_judge = SpeakerJudge(c.tts_sim_judge, device=c.device)
    ex = D.seed_tts_eval(c.dataset_path, c.max_examples, ctx.stats)
    rows = ctx.map_chunks(ex, _chunk_fn(ctx, asr_judge, sim_judge), "TTS")
    refs, hyps = [r["target_text"] for r in rows], [r["hypothesis"] for r in rows]
    wers = utterance_wers(refs, hyps, normalize_tts)
    whisper = whisper_normalizer(c.whisper_normalizer or c.tts_asr_judge)
    wers_w = utterance_wers(refs, hyps, whisper)
    sims = [r["sim"] for r in rows if r["sim"] is not None]
    metrics = {"wer": float(np.mean(wers)), "wer_whisper_norm": float(np.mean(wers_w)),
               "terminated": sum(r["terminated"] for r in rows) / len(rows)}
    if sims:  # no clip long enough: no SIM at all (JSON has no NaN); sim_unscored says why
        metrics["sim"] = float(np.mean(sims))
    random_judges = is_random_judge(c.tts_asr_judge) or is_random_judge(c.tts_sim_judge)
    conv = {**token_convention(ctx),
            "prompt": "voice-conditioned: <|text_start|>Tp<|text_end|><|audio_start|>Ap<|audio_end|>"
                      "<|text_start|>T<|text_end|><|audio_start|>",
            "sampling": {"temperature": c.tts_temperature, "top_p": c.tts_top_p,
                         "max_new_tokens": c.tts_max_new_tokens, "stop": "<|audio_end|>", "seed": c.seed},
            "wer": f"mean of per-utterance WER; ASR judge {c.tts_asr_judge}; lowercase, punctuation except "
                   "apostrophes removed (jiwer)",
            "wer_whisper_norm": f"same, Whisper EnglishTextNormalizer (spelling table: {whisper.spelling_table})",
            "sim": f"cosine of {c.tts_sim_judge} x-vector embeddings, generated vs the PROMPT clip, 16 kHz; mean "
                   "over prompts whose generated audio lasts >= 0.5 s (others counted in sim_unscored)",
            "terminated": "share of prompts whose sample produced <|audio_end|> within the budget",
            "mimi": c.mimi_model,
            "judges": "random-init (plumbing)" if random_judges else "pretrained"}
    extra = {"no_audio": sum(1 for r in rows if r["frames"] == 0), "sim_scored": len(sims),
             "sim_unscored": len(rows) - len(sims)}
    return TaskResult(metrics, conv, len(rows), extra)
