"""Mimi encoding throughput on this machine: audio seconds encoded per wall-clock second.

Full-size Mimi (the kyutai/mimi architecture from `MimiConfig()`, seeded random weights and
codebooks: the same compute as the released weights) on ~10-s clips, torch threads = cores.

Compared in the same run:
- naive: what a user would write from the model card: the transformers feature extractor, then
  `model.encode(input_values, padding_mask)` one file at a time (all 32 codebooks, autograd on);
- ours (`tokenizer.mimi.encode`): no_grad, only the 8 codebooks SODA keeps
  (`num_quantizers=8`), batches of similar-length clips padded to whole frames, batch size swept.

    python benchmarks/mimi_encode_bench.py [--clips 16] [--seconds 10] [--batch-sizes 1,4,8,16]

Prints a Markdown table. On a GPU (when one is visible) it also runs there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _clips(n: int, seconds: float) -> list[np.ndarray]:
    from tokenizer.mimi import _calibration_audio

    rng = np.random.default_rng(0)
    # lengths jitter +-10% around `seconds`, like real utterances of one length bucket
    return [_calibration_audio(i, seconds * float(rng.uniform(0.9, 1.1))) for i in range(n)]


def bench_naive(model, clips, device) -> float:
    import torch
    from transformers import EncodecFeatureExtractor

    # kyutai/mimi's preprocessor_config.json: EncodecFeatureExtractor, 1 channel, 24 kHz
    extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=24_000, padding_value=0.0)
    start = time.perf_counter()
    for clip in clips:
        inputs = extractor(raw_audio=clip, sampling_rate=24_000, return_tensors="pt")
        out = model.encode(inputs["input_values"].to(device), inputs["padding_mask"].to(device))
        out.audio_codes.cpu()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_ours(model, clips, batch_size: int, device) -> float:
    import torch

    from tokenizer.mimi import encode

    ordered = sorted(clips, key=len)
    start = time.perf_counter()
    for i in range(0, len(ordered), batch_size):
        encode(model, ordered[i : i + batch_size])
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(device: str, clips, batch_sizes, naive_clips: int) -> list[tuple[str, str, float, float]]:
    from tokenizer.mimi import encode, load_mimi

    model = load_mimi("random", seed=0, device=device)
    encode(model, clips[:1])  # warm-up (allocator, oneDNN primitive cache)
    rows = []
    subset = clips[:naive_clips]
    audio = sum(len(c) for c in subset) / 24_000
    wall = bench_naive(model, subset, device)
    rows.append((device, "naive: feature extractor + model.encode, 1 file at a time, 32 codebooks", audio, wall))
    audio = sum(len(c) for c in clips) / 24_000
    for bs in batch_sizes:
        wall = bench_ours(model, clips, bs, device)
        rows.append((device, f"tokenizer.mimi.encode, 8 codebooks, batch {bs}", audio, wall))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-sizes", default="1,4,8,16")
    parser.add_argument("--naive-clips", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    clips = _clips(args.clips, args.seconds)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows = run("cpu", clips, batch_sizes, args.naive_clips)
    if torch.cuda.is_available():
        rows += run("cuda", clips * 4, [bs * 4 for bs in batch_sizes], args.naive_clips)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = "GPU: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"Mimi encode, full-size architecture (random weights), torch {torch.__version__}, "
          f"{args.threads} CPU threads, {cpu}, load average at end {load:.1f}\n")
    print("| device | path | audio (s) | wall (s) | audio s / wall s |")
    print("|---|---|---:|---:|---:|")
    for device, path, audio, wall in rows:
        print(f"| {device} | {path} | {audio:.1f} | {wall:.2f} | {audio / wall:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
