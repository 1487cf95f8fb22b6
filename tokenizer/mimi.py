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
- `encode_stream(model, chunks)` encodes one waveform of any length a window (30 s) at a time in
  bounded memory, with transformers' streaming mode (padding cache, sliding-window key/value
  cache); audio within one window gets `encode`'s codes. `soda encode` uses it.
- `decode(model, codes)` turns (8, frames) or (B, 8, frames) codes back into 24 kHz audio.

Torch and transformers are imported inside the functions (importing this module stays cheap).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

MIMI_SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 1_920  # 24 kHz / 12.5 frames per second
NUM_CODEBOOKS = 8  # SODA keeps the first 8 of Mimi's 32 residual codebooks
CODEBOOK_SIZE = 2_048
DEFAULT_MODEL = "kyutai/mimi"
RANDOM_MODEL = "random"
STREAM_WINDOW_FRAMES = 375  # encode_stream's window: 30 s of audio per Mimi call (~0.8 GB on CPU, full size)


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


def encode_stream(model, chunks: Iterable[np.ndarray], num_codebooks: int = NUM_CODEBOOKS,
                  window_frames: int = STREAM_WINDOW_FRAMES) -> Iterator[np.ndarray]:
    """Encode one 24 kHz mono waveform of any length, given as consecutive chunks of any sizes (such
    as `steps.audio_io.iter_audio_chunks`), a window of `window_frames` frames at a time; yield
    one int array (num_codebooks, frames) per window. Memory is bounded by the window.

    Audio that fits in one window is encoded by `encode` (the same codes). Longer audio runs through
    transformers' streaming mode: the convolutions carry their left context across windows in a
    padding cache (exactly what one call over the whole file computes), and the encoder transformer
    keeps the keys and values of its last `sliding_window - 1` steps (249 at 25 Hz, 10 s: the
    context Mimi was trained with), so a step attends to between 250 and 249 + 2 * window_frames
    past steps. One call of `MimiModel.encode` over a whole long file instead attends to everything
    before (its sdpa path ignores `sliding_window`), so the codes of frames more than ~10 s into a
    file longer than one window can differ from that call's; the last window is zero-padded to
    whole frames and trimmed to ceil(samples / 1920) frames, as `encode` does.
    """
    import torch
    from transformers.cache_utils import DynamicCache

    window = window_frames * SAMPLES_PER_FRAME
    pending: list[np.ndarray] = []
    held = 0
    kv_cache = padding_cache = None
    device = next(model.parameters()).device

    def streamed(samples: np.ndarray) -> np.ndarray:
        nonlocal kv_cache, padding_cache
        if kv_cache is None:
            kv_cache = DynamicCache(config=model.config)  # sliding-window layers: bounded
        with torch.no_grad():
            out = model.encode(torch.from_numpy(samples)[None, None].to(device), num_quantizers=num_codebooks,
                               encoder_past_key_values=kv_cache, padding_cache=padding_cache, use_streaming=True,
                               return_dict=True)
        padding_cache = out.padding_cache
        return out.audio_codes[0].to("cpu").numpy().astype(np.int64)

    for chunk in chunks:
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 1:
            raise ValueError(f"audio chunk has shape {chunk.shape}; expected 1-D mono audio")
        pending.append(chunk)
        held += len(chunk)
        while held > window:  # a whole window with more audio after it
            joined = np.concatenate(pending)
            pending, held = [joined[window:]], held - window
            yield streamed(np.ascontiguousarray(joined[:window]))
    tail = np.concatenate(pending) if pending else np.zeros(0, dtype=np.float32)
    if kv_cache is None:  # the whole audio fits in one window
        yield encode(model, [tail], num_codebooks=num_codebooks)[0]
    elif held:
        padded = np.zeros(frames_for_samples(held) * SAMPLES_PER_FRAME, dtype=np.float32)
        padded[:held] = tail
        yield streamed(padded)[:, : frames_for_samples(held)]


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
