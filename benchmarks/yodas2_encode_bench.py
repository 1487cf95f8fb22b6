"""Peak memory and speed of the encode step on YODAS2's raw layout: flat in the video's length?

For each length, writes one YODAS2 shard (steps.mirror_fixtures.write_yodas2_shard: `audio/*.tar.gz`
with one whole video, `text/*.json`, `duration/*.txt`) holding a single video of speech-like
utterances of 2-8 s separated by gaps (70% of the video in utterances by default, as in real
YODAS2 videos; the gaps are low noise, decoded but never kept), then runs
`steps.encode.encode_speech` on it in a fresh process (random Mimi weights, CPU,
max_chunk_seconds=60) and reports that process's peak RSS, its wall time, and audio seconds
(utterances kept) encoded per wall second and per CPU second (all threads; steadier on a shared
machine) of the encode call.

    python benchmarks/yodas2_encode_bench.py --minutes 10 60 --small   # memory: small Mimi stand-in
    python benchmarks/yodas2_encode_bench.py --minutes 2               # throughput: full-size Mimi

Full-size Mimi is the kyutai/mimi architecture with random weights (the same compute and memory);
`--small` uses tests/test_mimi.py's small config, which keeps the run short while the reader, the
cutting and the shard writer are the real ones.

Peak RSS is the child's own high-water mark (VmHWM, read by the child at its end), not wait4's
ru_maxrss: on Linux, exec carries the parent's high-water mark into the child's ru_maxrss (Python
starts children with vfork), so a parent that once held a big array would be charged to the child.
Each archive is written by a separate process for the same reason. A run whose RSS passes
`--limit-gib` is killed and reported as such. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

from benchmarks.capped_child import wait_capped  # noqa: E402
SR = 24_000
SPEECH_FRACTION = 0.7
UTTERANCE_SECONDS = (2.0, 8.0)  # uniform; mean 5 s
# tests/test_mimi.py::SMALL
SMALL_MIMI = dict(hidden_size=64, num_filters=8, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                  head_dim=32, intermediate_size=128, codebook_dim=32, vector_quantization_hidden_dimension=32,
                  num_quantizers=8, upsample_groups=64)

# Before the encode step padded its batches to a bounded set of shapes (steps.encode.padded_batch), the
# process's RSS crept with the number of distinct batch shapes it had run (utterance lengths vary, so
# nearly every batch was a new shape): oneDNN caches a compiled primitive per conv shape (up to 1024)
# and glibc keeps the freed, fragmented blocks of those varied sizes (+0.4-0.6 GiB between a 10- and
# a 60-minute video with the small Mimi, +1.2 GiB with the full-size one). Padding cut that, and the
# encode step now also turns oneDNN's primitive cache off by default (steps.encode.ENCODE_ENV), which
# makes it flat. `--lean-allocator` adds glibc settings on top (also flat alone, but a fixed mmap
# threshold cost about 13% speed on the small Mimi), for comparison.
LEAN_ALLOCATOR_ENV = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0", "MALLOC_ARENA_MAX": "1",
                      "MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_MMAP_THRESHOLD_": "65536"}

_ENCODE_CHILD = """
import json, sys, time
from steps.encode import EncodeConfig, encode_speech
root, out, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
config = EncodeConfig(input_paths=(root + "/data/en*/audio/*.tar.gz",), output_path=out, mimi_model="random",
                      mimi_config_overrides=overrides, device="cpu", max_chunk_seconds=60.0)
start, cpu = time.perf_counter(), time.process_time()
summary = encode_speech(config)
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
with open("/proc/self/status") as f:
    hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps(dict(summary, encode_seconds=seconds, encode_cpu_seconds=cpu_seconds, peak_rss=hwm)))
"""


def speechy(seconds: float, seed: int) -> np.ndarray:
    """A gliding harmonic tone with a syllable-rate envelope and a little noise, 24 kHz float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 100 + 80 * rng.random() + 40 * np.sin(2 * np.pi * (0.3 + rng.random()) * t)
    phases = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phases) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
    return (0.1 * voiced * envelope + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def write_video_shard(root: str, minutes: float, speech_fraction: float = SPEECH_FRACTION, seed: int = 0) -> str:
    """One shard (en000, index 0) under `root` with one video of about `minutes`; returns its archive.
    Holds the whole video in memory (the fixture writer does): call it in a process of its own."""
    from steps.mirror_fixtures import write_yodas2_shard, yodas2_recording

    rng = np.random.default_rng(seed)
    mean = sum(UTTERANCE_SECONDS) / 2
    gap = mean * (1 - speech_fraction) / speech_fraction
    clips, total = [], 0.0
    while total + mean + gap < minutes * 60:
        seconds = float(rng.uniform(*UTTERANCE_SECONDS))
        clips.append((f"utterance {len(clips)}", speechy(seconds, seed * 100_000 + len(clips))))
        total += seconds + gap
    noise = np.random.default_rng(seed + 1)
    rec = yodas2_recording(f"video{seed:06d}", clips, gap_seconds=gap, tail_seconds=gap / 2,
                           gap_fill=lambda n: (0.003 * noise.standard_normal(n)).astype(np.float32))
    return write_yodas2_shard(root, "en000", 0, [rec])


def write_in_child(root: str, minutes: float, speech_fraction: float = SPEECH_FRACTION) -> str:
    """write_video_shard in a process of its own (it holds the whole video); returns the archive."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from benchmarks.yodas2_encode_bench import write_video_shard; "
            "print(write_video_shard(sys.argv[2], float(sys.argv[3]), float(sys.argv[4])))")
    done = subprocess.run([sys.executable, "-c", code, HERE, root, str(minutes), str(speech_fraction)],
                          cwd=HERE, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def run_encode(root: str, out: str, overrides: dict | None, limit_bytes: int, repo: str = HERE,
               lean: bool = False) -> dict:
    """encode_speech on `root`'s archives in a fresh process; its summary plus peak_rss, wall, killed.
    `lean`: the child runs with LEAN_ALLOCATOR_ENV (see there)."""
    cmd = [sys.executable, "-c", _ENCODE_CHILD, root, out, json.dumps(overrides)]
    env = dict(os.environ, PYTHONPATH=repo, **(LEAN_ALLOCATOR_ENV if lean else {}))
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=stdout, stderr=err, start_new_session=True)
        code, _, killed = wait_capped(proc, limit_bytes)
        wall = time.perf_counter() - start
        stdout.seek(0)
        err.seek(0)
        lines = stdout.read().decode(errors="replace").strip().splitlines()
        errors = err.read().decode(errors="replace").strip().splitlines()
    result = {"wall": wall, "killed": killed, "ok": code == 0 and bool(lines),
              "last_line": (errors or ["(no output)"])[-1]}
    if result["ok"]:
        result.update(json.loads(lines[-1]))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--small", action="store_true", help="small Mimi stand-in (tests/test_mimi.py::SMALL)")
    parser.add_argument("--speech-fraction", type=float, default=SPEECH_FRACTION)
    parser.add_argument("--repo", default=HERE, help="checkout whose encode step runs (default: this one)")
    parser.add_argument("--lean-allocator", action="store_true", help="run the child with LEAN_ALLOCATOR_ENV")
    parser.add_argument("--limit-gib", type=float, default=16.0, help="kill a run whose RSS passes this")
    args = parser.parse_args(argv)
    overrides = SMALL_MIMI if args.small else None
    rows = []
    for minutes in args.minutes:
        with tempfile.TemporaryDirectory() as tmp:
            archive = write_in_child(os.path.join(tmp, "yodas2"), minutes, args.speech_fraction)
            size = os.path.getsize(archive)
            r = run_encode(os.path.join(tmp, "yodas2"), os.path.join(tmp, "encoded"), overrides,
                           int(args.limit_gib * 2**30), args.repo, args.lean_allocator)
        if r["ok"]:
            speech = r["hours"] * 3600
            rows.append(f"| {minutes:g} min | {r['utterances']} | {speech:.0f} s | {r['peak_rss'] / 2**30:.2f} GiB | "
                        f"{r['wall']:.0f} s | {speech / r['encode_seconds']:.1f} | {speech / r['encode_cpu_seconds']:.1f} |")
        else:
            state = "killed at the limit" if r["killed"] else f"failed: {r['last_line'][:80]}"
            rows.append(f"| {minutes:g} min | | | | {r['wall']:.0f} s | {state} | |")
        print(rows[-1], f"(archive {size / 2**20:.0f} MiB)", file=sys.stderr, flush=True)
    model = "small Mimi stand-in (tests/test_mimi.py::SMALL)" if args.small else "full-size Mimi"
    print(f"encode_speech on one YODAS2 archive, random weights, {model}, CPU ({os.cpu_count()} cores), "
          f"{args.speech_fraction:.0%} of each video in utterances"
          f"{', lean allocator settings' if args.lean_allocator else ''}; code from {args.repo}\n")
    print("| video | utterances | speech kept | peak RSS | wall time (process) | audio s / wall s (encode call) | audio s / CPU s |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
