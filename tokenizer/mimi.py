"""Mimi, the speech codec behind SODA's audio tokens: load, encode, decode, and two small CLIs.

- `load_mimi("kyutai/mimi")` (an HF id or a local dir) loads the real codec through
  `transformers.MimiModel.from_pretrained`. `load_mimi("random", seed=0)` builds the same full
  architecture from `MimiConfig()` with seeded random weights, for offline plumbing runs: a plain
  random init leaves every codebook at zero (`embed_sum` buffers), which makes every code 0, so the
  codebooks are drawn to match the statistics of the model's own (random) embeddings. Codes from a
  random model are NOT speech tokens: everything downstream must be marked a plumbing run
  (`is_random_mimi(model)`).
- `encode(model, waveforms)` takes a batch of 24 kHz mono waveforms of different lengths, pads them
  on the right, runs the encoder once, and trims each item to ceil(samples / 1920) frames. Mimi's
  encoder is causal (causal convolutions, causal sliding-window attention), so right padding does
  not change the codes of the real frames.
- `decode(model, codes)` turns (8, frames) or (B, 8, frames) codes back into 24 kHz audio.

Torch and transformers are imported inside the functions (importing this module stays cheap).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from typing import Any, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

MIMI_SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 1_920  # 24 kHz / 12.5 frames per second
NUM_CODEBOOKS = 8  # SODA keeps the first 8 of Mimi's 32 residual codebooks
CODEBOOK_SIZE = 2_048
DEFAULT_MODEL = "kyutai/mimi"
RANDOM_MODEL = "random"


def best_device() -> str:
    """'cuda' when a GPU is visible to torch, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def frames_for_samples(num_samples: int) -> int:
    """Number of Mimi frames for a 24 kHz waveform of `num_samples` samples."""
    return math.ceil(num_samples / SAMPLES_PER_FRAME)


def load_mimi(
    model: str = DEFAULT_MODEL,
    seed: int = 0,
    device: Optional[str] = None,
    config_overrides: Optional[dict[str, Any]] = None,
):
    """Return a `transformers.MimiModel` in eval mode on `device` (default: cuda if any, else cpu).

    `model` is an HF id ("kyutai/mimi"), a local directory saved with `save_pretrained`, or
    "random" (full `MimiConfig()` architecture, seeded random weights and codebooks).
    `config_overrides` applies to "random" only (tests use it to build a small Mimi).
    """
    import torch
    from transformers import MimiConfig, MimiModel

    device = device or best_device()
    if model == RANDOM_MODEL:
        config = MimiConfig(**(config_overrides or {}))
        torch.manual_seed(seed)
        mimi = MimiModel(config)
        mimi.eval()
        _randomize_codebooks(mimi, seed)
        mimi._soda_random = True
        logger.warning(
            "Mimi 'random' (seed %d): random weights, codes are not speech tokens; "
            "results from this model are a plumbing run only",
            seed,
        )
    else:
        if config_overrides:
            raise ValueError("config_overrides applies only to load_mimi('random')")
        try:
            mimi = MimiModel.from_pretrained(model)
        except (OSError, ValueError) as exc:  # ValueError: huggingface_hub's invalid repo id
            raise OSError(
                f"could not load Mimi from {model!r}: {exc}. Use an HF id such as 'kyutai/mimi' "
                "(needs the hub or a filled HF cache), a local directory made with "
                "save_pretrained, or model='random' for an offline plumbing run."
            ) from exc
        mimi._soda_random = False
    return mimi.eval().to(device)


_CACHED: dict[tuple, Any] = {}


def cached_mimi(model: str = DEFAULT_MODEL, seed: int = 0, device: Optional[str] = None,
                config_overrides: Optional[dict[str, Any]] = None):
    """`load_mimi(...)`, kept for the next call with the same arguments in this process (one model
    at a time): the shard tasks of a step that land on one Ray worker load Mimi once."""
    import json

    key = (model, seed, device, json.dumps(config_overrides, sort_keys=True))
    if key not in _CACHED:
        _CACHED.clear()
        _CACHED[key] = load_mimi(model, seed=seed, device=device, config_overrides=config_overrides)
    return _CACHED[key]


def clear_mimi_cache() -> None:
    _CACHED.clear()


def is_random_mimi(model) -> bool:
    """True when `model` came from `load_mimi('random')`: its outputs are plumbing only."""
    return bool(getattr(model, "_soda_random", False))


def _calibration_audio(seed: int, seconds: float = 4.0) -> np.ndarray:
    """A fixed, speech-like test signal: a gliding harmonic tone with noise bursts."""
    rng = np.random.default_rng(seed)
    n = int(seconds * MIMI_SAMPLE_RATE)
    t = np.arange(n) / MIMI_SAMPLE_RATE
    f0 = 120 + 60 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / MIMI_SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    noise = rng.standard_normal(n) * (envelope < 0.2)
    return (0.1 * voiced * envelope + 0.02 * noise).astype(np.float32)


def _randomize_codebooks(mimi, seed: int) -> None:
    """Fill every codebook with seeded random centroids matched to the model's own residuals.

    The codebooks live in `MimiEuclideanCodebook.embed_sum` (centroid = embed_sum / cluster_usage,
    cluster_usage starts at 1). For each residual stage we measure the mean and spread of the
    vectors that stage sees on a fixed calibration signal, draw 2048 Gaussian centroids with the
    same statistics, and pass the residual on, as k-means initialisation would.
    """
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    audio = torch.from_numpy(_calibration_audio(seed))[None, None]
    with torch.no_grad():
        embeddings = mimi.encoder(audio)
        hidden = mimi.encoder_transformer(embeddings.transpose(1, 2), return_dict=False)[0]
        embeddings = mimi.downsample(hidden.transpose(1, 2))
    for rvq in (mimi.quantizer.semantic_residual_vector_quantizer, mimi.quantizer.acoustic_residual_vector_quantizer):
        with torch.no_grad():
            residual = rvq.input_proj(embeddings) if rvq.input_proj is not None else embeddings
            residual = residual.transpose(1, 2).reshape(-1, residual.shape[1]).clone()
        for layer in rvq.layers:
            codebook = layer.codebook
            mean = residual.mean(dim=0)
            std = residual.std(dim=0).clamp(min=1e-6)
            draw = torch.randn(codebook.embed_sum.shape, generator=generator)
            with torch.no_grad():
                codebook.embed_sum.copy_(mean + draw * std)
                codebook.cluster_usage.fill_(1.0)
            codebook._embed = None  # drop the cached centroids (the `embed` property caches them)
            with torch.no_grad():
                residual = residual - codebook.decode(codebook.encode(residual))


def encode(model, waveforms: Sequence[np.ndarray], num_codebooks: int = NUM_CODEBOOKS) -> list[np.ndarray]:
    """Encode a batch of 24 kHz mono waveforms; return one int array (num_codebooks, frames) each.

    Items may differ in length: they are right-padded with zeros to a whole number of frames and
    each result is trimmed to its own ceil(samples / 1920) frames. Empty waveforms are an error.
    """
    import torch

    if len(waveforms) == 0:
        return []
    lengths = [int(np.asarray(w).shape[-1]) for w in waveforms]
    for i, (w, n) in enumerate(zip(waveforms, lengths)):
        if np.asarray(w).ndim != 1:
            raise ValueError(f"waveform {i} has shape {np.asarray(w).shape}; expected 1-D mono audio")
        if n == 0:
            raise ValueError(f"waveform {i} is empty; drop zero-length audio before encoding")
    padded_len = frames_for_samples(max(lengths)) * SAMPLES_PER_FRAME
    batch = np.zeros((len(waveforms), 1, padded_len), dtype=np.float32)
    mask = np.zeros((len(waveforms), 1, padded_len), dtype=np.int64)
    for i, (w, n) in enumerate(zip(waveforms, lengths)):
        batch[i, 0, :n] = np.asarray(w, dtype=np.float32)
        mask[i, 0, :n] = 1
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model.encode(
            torch.from_numpy(batch).to(device),
            padding_mask=torch.from_numpy(mask).to(device),
            num_quantizers=num_codebooks,
            return_dict=True,
        )
    codes = out.audio_codes.to("cpu").numpy().astype(np.int64)
    return [codes[i, :, : frames_for_samples(n)] for i, n in enumerate(lengths)]


def decode(model, codes) -> np.ndarray:
    """Decode codes (num_codebooks, frames) -> float32 (samples,), or (B, K, F) -> (B, samples)."""
    import torch

    array = np.asarray(codes.cpu() if hasattr(codes, "cpu") else codes, dtype=np.int64)
    single = array.ndim == 2
    if single:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"codes have shape {array.shape}; expected (codebooks, frames) or (batch, codebooks, frames)")
    if array.size and (array.min() < 0 or array.max() >= CODEBOOK_SIZE):
        raise ValueError(f"codes must lie in [0, {CODEBOOK_SIZE}); got range [{array.min()}, {array.max()}]")
    device = next(model.parameters()).device
    with torch.no_grad():
        audio = model.decode(torch.from_numpy(array).to(device), return_dict=True).audio_values
    audio = audio[:, 0].to("cpu").float().numpy()
    return audio[0] if single else audio


# ----------------------------------------------------------------------------------------------
# CLIs: `soda encode FILE.wav` and `soda decode FILE.txt`


def encode_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="soda encode", description="Encode an audio file to Mimi codes written as private-use characters."
    )
    parser.add_argument("audio", help="audio file (wav/flac/mp3/...); converted to 24 kHz mono")
    parser.add_argument("--out", help="output .txt file (default: print to stdout)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="HF id, local dir, or 'random' (default kyutai/mimi)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: best available)")
    args = parser.parse_args(list(argv))

    from steps.audio_io import BadAudioError, load_audio_file
    from tokenizer.audio import codes_to_chars

    try:
        audio = load_audio_file(args.audio)
    except (BadAudioError, FileNotFoundError) as exc:
        print(f"soda encode: {args.audio}: {exc}", file=sys.stderr)
        return 1
    model = load_mimi(args.model, device=args.device)
    if is_random_mimi(model):
        print("soda encode: warning: --model random gives plumbing codes, not speech tokens", file=sys.stderr)
    (codes,) = encode(model, [audio])
    text = codes_to_chars(codes)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {codes.shape[1]} frames ({len(text)} audio tokens, {len(audio) / MIMI_SAMPLE_RATE:.2f} s) to {args.out}")
    else:
        print(text)
    return 0


def decode_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="soda decode", description="Decode Mimi codes (private-use characters) to a 24 kHz wav file."
    )
    parser.add_argument("codes", help="text file holding the private-use audio string")
    parser.add_argument("--out", required=True, help="output .wav file")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="HF id, local dir, or 'random' (default kyutai/mimi)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: best available)")
    args = parser.parse_args(list(argv))

    import soundfile as sf

    from tokenizer.audio import chars_to_codes

    with open(args.codes, encoding="utf-8") as f:
        text = "".join(f.read().split())  # tolerate a trailing newline
    try:
        codes = chars_to_codes(text, num_codebooks=NUM_CODEBOOKS)
    except ValueError as exc:
        print(f"soda decode: {args.codes}: {exc}", file=sys.stderr)
        return 1
    model = load_mimi(args.model, device=args.device)
    if is_random_mimi(model):
        print("soda decode: warning: --model random decodes to noise, not speech", file=sys.stderr)
    audio = decode(model, codes)
    sf.write(args.out, audio, MIMI_SAMPLE_RATE, subtype="PCM_16")
    print(f"wrote {len(audio) / MIMI_SAMPLE_RATE:.2f} s of 24 kHz audio to {args.out}")
    return 0
