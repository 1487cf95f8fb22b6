"""Peak memory of `soda encode` on long files: does it stay bounded as the file grows?

Writes a synthetic speech-like WAV of each length (16 kHz mono, 16-bit, so the file is resampled
to 24 kHz as real long-form audio is), runs `soda encode FILE --model random --out codes.txt` on
the full-size Mimi architecture (random weights: the same compute and memory as kyutai/mimi) in a
fresh process, and reports the child's peak RSS (`wait4`'s ru_maxrss) and wall time. A run whose
RSS passes `--limit-gib` is killed and reported as such, so a run that would exhaust the machine
does not take it down.

    python benchmarks/encode_memory_bench.py --minutes 10 60
    python benchmarks/encode_memory_bench.py --minutes 1 2 3 --repo /path/to/older/checkout

`--repo` runs another checkout's code (to compare before/after a change) with this interpreter.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

from benchmarks.capped_child import wait_capped  # noqa: E402
SOURCE_RATE = 16_000


def write_speechy_wav(path: str, minutes: float, seed: int = 0) -> None:
    """A gliding harmonic tone with noise, written a minute at a time (bounded memory)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * SOURCE_RATE)
    phase = 0.0
    with sf.SoundFile(path, "w", SOURCE_RATE, 1, subtype="PCM_16", format="WAV") as f:
        for start in range(0, total, 60 * SOURCE_RATE):
            n = min(60 * SOURCE_RATE, total - start)
            t = (start + np.arange(n)) / SOURCE_RATE
            f0 = 120 + 60 * np.sin(2 * np.pi * 0.7 * t)
            phases = phase + 2 * np.pi * np.cumsum(f0) / SOURCE_RATE
            phase = float(phases[-1])
            voiced = sum(np.sin(k * phases) / k for k in range(1, 6))
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
            f.write((0.1 * voiced * envelope + 0.01 * rng.standard_normal(n)).astype(np.float32))


def run_encode(repo: str, wav: str, out: str, limit_bytes: int) -> dict:
    cmd = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))",
           "encode", wav, "--model", "random", "--device", "cpu", "--out", out]
    env = dict(os.environ, PYTHONPATH=repo)
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        _, usage, killed = wait_capped(proc, limit_bytes)
        wall = time.perf_counter() - start
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    return {"peak_rss": usage.ru_maxrss * 1024, "wall": wall, "killed": killed,
            "ok": proc.returncode == 0 and os.path.exists(out), "last_line": lines[-1] if lines else ""}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--repo", default=HERE, help="checkout whose `soda encode` runs (default: this one)")
    parser.add_argument("--limit-gib", type=float, default=16.0, help="kill a run whose RSS passes this")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            wav = os.path.join(tmp, f"speech-{minutes:g}min.wav")
            write_speechy_wav(wav, minutes)
            out = os.path.join(tmp, f"codes-{minutes:g}min.txt")
            result = run_encode(args.repo, wav, out, int(args.limit_gib * 2**30))
            os.remove(wav)
            state = "ok" if result["ok"] else ("killed at the limit" if result["killed"] else
                                               f"failed: {result['last_line'][:80]}")
            rows.append(f"| {minutes:g} min | {result['peak_rss'] / 2**30:.2f} GiB | {result['wall']:.0f} s | {state} |")
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"`soda encode --model random` (full-size Mimi, CPU), code from {args.repo}\n")
    print("| file length | peak RSS | wall time | result |\n|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
