"""`soda generate`: try a checkpoint on one task without writing code.

    soda generate --checkpoint RUN_DIR --task tts --text "Hello there." --out out/
    soda generate --checkpoint HF_DIR --task asr --audio clip.wav --out out/

The checkpoint is a train step's output, one `checkpoints/step-N` dir, or an HF export dir
(eval.model.load_scoring_model). Inputs are audio files at any sample rate (read with
steps.audio_io, resampled to 24 kHz mono) and text. Every input is checked before a model is
loaded: a missing flag, a missing file or a file that is not audio ends with exit code 2 and a
message naming the flag and the task.

Writes into --out: `output.wav` (24 kHz, 16-bit; tasks with audio answers, when the answer held at
least one whole Mimi frame), `output.txt` (asr and s2st), `with_prompt.wav` (continue: the prompt's
Mimi reconstruction followed by the continuation) and `generation.json` (what was generated:
task, model, sampling, prompt and answer token counts, whether the stop token was reached,
dropped stray tokens, durations).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
from typing import Optional

from eval.generate import GenerateInputs, REQUIRED, Sampling, TASKS, default_sampling, run_generation
from eval.session import CodecSettings, ModelSession
from pipeline.cli_checks import first_problem, number_problem, overwrite_problem
from pipeline.fileio import atomic_write_bytes, atomic_write_json, exists, join
from steps.audio_io import BadAudioError, load_audio_file

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
OUTPUT_FILES = ("output.wav", "output.txt", "with_prompt.wav", "generation.json")  # what --out receives


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="soda generate", description="Generate with a SODA checkpoint: continue speech, "
                                "TTS, voice-conditioned TTS, ASR, or speech-to-speech translation (fine-tuned models).")
    p.add_argument("--checkpoint", required=True, help="train step output, checkpoints/step-N dir, or HF export dir")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--out", required=True, help="output directory (local or gs://)")
    p.add_argument("--text", help="tts, tts-voice: the text to speak")
    p.add_argument("--audio", help="continue: the speech to continue; asr: speech to transcribe; s2st: source speech")
    p.add_argument("--prompt-audio", help="tts-voice: a clip of the voice to use")
    p.add_argument("--prompt-text", help="tts-voice: the transcript of --prompt-audio")
    p.add_argument("--source-text", help="s2st: the transcript of --audio (the fine-tune's prompt carries it)")
    p.add_argument("--temperature", type=float, default=None, help="default: 0.9 (audio answers), 0 = greedy (asr)")
    p.add_argument("--top-p", type=float, default=None, help="default: 0.8 (audio answers), 1.0 (asr)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="default: 1500 (tts, tts-voice), 2000 (s2st), 500 (continue, ~5 s), 200 (asr)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", default=None, help="default: the tokenizer saved with the checkpoint")
    p.add_argument("--mimi", default="kyutai/mimi", help="Mimi HF id or local dir, or 'random' (offline plumbing)")
    p.add_argument("--mimi-config", default=None, help=argparse.SUPPRESS)  # JSON MimiConfig overrides for 'random' (tests)
    p.add_argument("--backend", default="auto", choices=["auto", "levanter", "hf"])
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when torch sees one)")
    return p


def _bad(message: str) -> int:
    print(f"soda generate: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def check_inputs(args) -> tuple[Optional[str], dict]:
    """(error message or None, {input name: value}) with audio files read; no model is touched."""
    task = args.task
    for name in REQUIRED[task]:
        value = getattr(args, name)
        if value is None or not str(value).strip():
            need = ", ".join(_flag(n) for n in REQUIRED[task])
            return f"--task {task} needs {_flag(name)} (it needs {need})", {}
    ignored = [_flag(n) for n in ("text", "audio", "prompt_audio", "prompt_text", "source_text")
               if getattr(args, n) is not None and n not in REQUIRED[task]]
    if ignored:
        print(f"soda generate: note: --task {task} ignores {', '.join(ignored)}", file=sys.stderr)
    if not exists(args.checkpoint):
        return f"--checkpoint {args.checkpoint!r} does not exist", {}
    if args.tokenizer is not None and not exists(args.tokenizer):
        return f"--tokenizer {args.tokenizer!r} does not exist", {}
    problem = first_problem(
        number_problem("--temperature", args.temperature, minimum=0),
        number_problem("--top-p", args.top_p, above=0, maximum=1),
        number_problem("--max-new-tokens", args.max_new_tokens, minimum=1),
        number_problem("--seed", args.seed, minimum=0),
        overwrite_problem([("--out", args.out)] + [(f"--out's {name}", join(args.out, name)) for name in OUTPUT_FILES],
                          [(_flag(n), getattr(args, n)) for n in ("audio", "prompt_audio") if n in REQUIRED[task]]))
    if problem:
        return problem, {}
    if "://" not in args.out and os.path.isfile(args.out):
        return f"--out {args.out!r} is a file; give a directory for {', '.join(OUTPUT_FILES)}", {}
    if args.mimi_config is not None:
        try:
            json.loads(args.mimi_config)
        except ValueError as exc:
            return f"--mimi-config is not JSON: {exc}", {}
    values = {n: getattr(args, n) for n in REQUIRED[task]}
    for name in ("audio", "prompt_audio"):
        if name not in values:
            continue
        path = values[name]
        if not exists(path):
            return f"{_flag(name)} {path!r} (--task {task}): no such file", {}
        try:
            values[name] = load_audio_file(path)
        except BadAudioError as exc:
            return f"{_flag(name)} {path!r} (--task {task}) is not usable audio: {exc}", {}
        except (OSError, IsADirectoryError) as exc:
            return f"{_flag(name)} {path!r} (--task {task}) could not be read: {exc}", {}
    return None, values


def _wav_bytes(audio) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, 24_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def cli_main(argv: list[str]) -> int:
    args = build_parser().parse_args(list(argv))
    error, values = check_inputs(args)
    if error:
        return _bad(error)

    started = time.time()
    base = default_sampling(args.task)
    sampling = Sampling(base.temperature if args.temperature is None else args.temperature,
                        base.top_p if args.top_p is None else args.top_p,
                        base.max_new_tokens if args.max_new_tokens is None else args.max_new_tokens)
    overrides = json.loads(args.mimi_config) if args.mimi_config else None
    codec = CodecSettings(args.mimi, args.seed, args.device, overrides, batch_size=1)
    try:
        session = ModelSession.open(args.checkpoint, backend=args.backend, tokenizer=args.tokenizer,
                                    device=args.device, codec=codec)
    except FileNotFoundError as exc:
        return _bad(f"{exc} (pass --tokenizer)" if "no tokenizer" in str(exc) else str(exc))
    result = run_generation(GenerateInputs(task=args.task, **values), session, sampling, seed=args.seed)

    files = []
    if len(result.audio):
        atomic_write_bytes(join(args.out, "output.wav"), _wav_bytes(result.audio))
        files.append("output.wav")
    if result.prompt_audio is not None and len(result.prompt_audio):
        atomic_write_bytes(join(args.out, "with_prompt.wav"), _wav_bytes(result.prompt_audio))
        files.append("with_prompt.wav")
    if result.text is not None:
        atomic_write_bytes(join(args.out, "output.txt"), (result.text + "\n").encode("utf-8"))
        files.append("output.txt")
    plumbing = session.mimi_loaded and session.mimi_is_random
    info = {**result.info, "checkpoint": args.checkpoint, "model_backend": session.model.backend,
            "model_source": session.model.source, "tokenizer": session.tokenizer_dir, "mimi": args.mimi, "plumbing_run": plumbing, "files": files,
            "seconds": round(time.time() - started, 3)}
    atomic_write_json(join(args.out, "generation.json"), info)

    ended = "stopped at " + info["stop_token"] if info["stop_reached"] else \
        f"did NOT reach {info['stop_token']} within {sampling.max_new_tokens} tokens (kept what was produced)"
    print(f"{args.task}: {info['generated_tokens']} tokens generated after a {info['prompt_tokens']}-token prompt, {ended}")
    dropped = info["stray_text_tokens_in_audio"] + info["stray_audio_tokens_in_text"]
    if dropped:
        print(f"dropped {dropped} stray tokens ({info['stray_text_tokens_in_audio']} non-audio inside the audio, "
              f"{info['stray_audio_tokens_in_text']} non-text inside the text)")
    if result.text is not None:
        print(f"text: {result.text}")
    if "output.wav" in files:
        print(f"audio: {info['output_seconds']:.2f} s")
    elif args.task != "asr":
        print("audio: the answer held no whole Mimi frame; no output.wav written")
    if plumbing:
        print("warning: --mimi random: audio is plumbing, not speech", file=sys.stderr)
    print(f"wrote {', '.join(files + ['generation.json'])} to {args.out}")
    return 0


__all__ = ["cli_main", "build_parser", "check_inputs"]
