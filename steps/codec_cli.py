"""`soda encode FILE` and `soda decode FILE.txt`: one audio file to Mimi codes written as private-use
characters, and back (tokenizer.mimi does the coding; steps.audio_io reads the file in windows)."""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Optional, Sequence

import numpy as np

from pipeline.cli_checks import first_problem, input_file_problem, output_file_problem, overwrite_problem
from pipeline.cli_checks import read_text_file
from pipeline.fileio import atomic_write_bytes
from steps.audio_io import BadAudioError, iter_audio_chunks
from tokenizer import mimi
from tokenizer.audio import chars_to_codes, codes_to_chars




def encode_cli(argv: Sequence[str]) -> int:
    """`soda encode FILE`: the file is read through twice, a window at a time (never whole): once to
    check it before the model loads, once to encode it with `encode_stream`."""
    parser = argparse.ArgumentParser(
        prog="soda encode", description="Encode an audio file to Mimi codes written as private-use characters."
    )
    parser.add_argument("audio", help="audio file (wav/flac/mp3/...); converted to 24 kHz mono")
    parser.add_argument("--out", help="output .txt file (default: print to stdout)")
    parser.add_argument("--model", default=mimi.DEFAULT_MODEL, help="HF id, local dir, or 'random' (default kyutai/mimi)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: best available)")
    args = parser.parse_args(list(argv))

    problem = first_problem(input_file_problem(args.audio),
                            args.out and output_file_problem(args.out),
                            args.out and overwrite_problem([("--out", args.out)], [("", args.audio)]))
    if problem:
        return _cli_error("encode", problem)
    ext = os.path.splitext(args.audio)[1].lstrip(".").lower() or None  # for formats libsndfile lacks
    try:
        samples = sum(len(c) for c in iter_audio_chunks(args.audio, ext))  # every check, before the model loads
    except (BadAudioError, OSError) as exc:
        return _cli_error("encode", f"{args.audio}: {exc}")
    model = _load_for_cli("encode", args.model, args.device, "gives plumbing codes, not speech tokens")
    if model is None:
        return 1
    chunks = iter_audio_chunks(args.audio, ext, chunk_samples=mimi.STREAM_WINDOW_FRAMES * mimi.SAMPLES_PER_FRAME)
    codes = np.concatenate(list(mimi.encode_stream(model, chunks, window_frames=mimi.STREAM_WINDOW_FRAMES)), axis=1)
    text = codes_to_chars(codes)
    if args.out:
        atomic_write_bytes(args.out, text.encode("utf-8"))
        seconds = samples / mimi.MIMI_SAMPLE_RATE
        print(f"wrote {codes.shape[1]} frames ({len(text)} audio tokens, {seconds:.2f} s) to {args.out}")
    else:
        print(text)
    return 0


def decode_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="soda decode", description="Decode Mimi codes (private-use characters) to a 24 kHz wav file."
    )
    parser.add_argument("codes", help="text file holding the private-use audio string")
    parser.add_argument("--out", required=True, help="output .wav file")
    parser.add_argument("--model", default=mimi.DEFAULT_MODEL, help="HF id, local dir, or 'random' (default kyutai/mimi)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: best available)")
    args = parser.parse_args(list(argv))

    import soundfile as sf

    problem = first_problem(overwrite_problem([("--out", args.out)], [("", args.codes)]),
                            output_file_problem(args.out))
    if problem:
        return _cli_error("decode", problem)
    text, problem = read_text_file(args.codes)
    if problem:
        return _cli_error("decode", problem)
    text = "".join(text.split())  # tolerate a trailing newline
    if not text:
        return _cli_error("decode", f"{args.codes}: holds only whitespace, no audio codes")
    try:
        codes = chars_to_codes(text, num_codebooks=mimi.NUM_CODEBOOKS)
    except ValueError as exc:
        return _cli_error("decode", f"{args.codes}: {exc}")
    model = _load_for_cli("decode", args.model, args.device, "decodes to noise, not speech")
    if model is None:
        return 1
    audio = mimi.decode(model, codes)
    buf = io.BytesIO()
    sf.write(buf, audio, mimi.MIMI_SAMPLE_RATE, format="WAV", subtype="PCM_16")
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"wrote {len(audio) / mimi.MIMI_SAMPLE_RATE:.2f} s of 24 kHz audio to {args.out}")
    return 0


def _cli_error(command: str, message: str) -> int:
    print(f"soda {command}: {' '.join(str(message).split())}", file=sys.stderr)  # one line
    return 1


def _load_for_cli(command: str, model: str, device: Optional[str], if_random: str):
    """The Mimi `model` names, or None after one line on stderr; a warning saying what the random one `if_random`."""
    try:
        loaded = mimi.load_mimi(model, device=device)
    except OSError as exc:
        _cli_error(command, str(exc))
        return None
    if mimi.is_random_mimi(loaded):
        print(f"soda {command}: warning: --model random {if_random}", file=sys.stderr)
    return loaded
