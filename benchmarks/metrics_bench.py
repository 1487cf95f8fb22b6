"""Metrics logging over a whole 4B run (238,419 steps): bytes written, peak memory, wall time.

    python benchmarks/metrics_bench.py [--steps 238419] [--old-steps 1000 2000 4000]
                                       [--emulator-steps 5000] [--step-s 2.5]

Drives the tracker with the rows Levanter logs at every step (train/loss, global_step,
run_progress, optim/*, throughput/*) on a simulated clock (`--step-s` seconds per step, so the
60 s flush happens every 24 steps, as on a v5p slice at ~2.5 s/step). Compares:

- before: the tracker at `git show HEAD:steps/training/metrics.py`, forced onto its object-store
  path (keep every row, rewrite the whole metrics.jsonl every 60 s). Its bytes grow quadratically,
  so it runs at `--old-steps` lengths and is extrapolated to the full run by a fitted a*n^2 + b*n
  (checked against the exact sum of its rewrites at the measured row size).
- after: this tree's tracker writing immutable chunks (`chunked=True`, the object-store path), to a
  local directory at full length and to the GCS emulator at `--emulator-steps`.

Bytes are counted at `steps.sharding.atomic_write_bytes` (every metrics/sessions write goes through
it); peak memory is tracemalloc's over the logging loop; wall time includes tracemalloc's overhead.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FULL_STEPS = 238_419  # the 4B run
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeClock:
    """Stands in for the tracker module's `time`: advances `step_s` per logged step."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1.8e9 + self.now


def old_module() -> types.ModuleType:
    source = subprocess.run(["git", "show", "HEAD:steps/training/metrics.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("old_metrics")
    exec(compile(source, "HEAD:steps/training/metrics.py", "exec"), module.__dict__)
    return module


def log_step(tracker, step: int, total: int, step_s: float) -> None:
    """What Levanter logs at one train step (trainer, log_step_info, log_performance_stats, optimizer)."""
    tokens_per_example, batch = 4096, 512
    tracker.log({"throughput/loading_time": 0.0021}, step=step)
    tracker.log({"train/loss": np.float32(2.3 + 8.0 / math.sqrt(step + 1)), "global_step": step,
                 "run_progress": step / total}, step=step)
    tracker.log({"optim/learning_rate": np.float32(3e-4 * min(1.0, step / 2000)), "optim/weight_decay": 0.1},
                step=step)
    tracker.log({"throughput": {"total_tokens": tokens_per_example * batch * (step + 1),
                                "total_gflops": 5.1e7 * (step + 1), "examples_per_second": batch / step_s,
                                "tokens_per_second": tokens_per_example * batch / step_s, "duration": step_s,
                                "gflops_per_second": 5.1e7 / step_s, "mfu": 41.734}}, step=step)
    tracker.log({"train/loss_z": np.float32(0.012), "throughput/hook_time": 0.00031}, step=step)


def run(make_tracker, module, steps: int, step_s: float) -> dict:
    import steps.sharding as sharding

    clock, written = FakeClock(), {"bytes": 0, "writes": 0}
    real_write = sharding.atomic_write_bytes

    def counting_write(url: str, data: bytes) -> None:
        written["bytes"] += len(data)
        written["writes"] += 1
        real_write(url, data)

    module.time, sharding.atomic_write_bytes = clock, counting_write
    try:
        tracker = make_tracker()
        tracemalloc.start()
        start = time.perf_counter()
        for s in range(steps):
            clock.now += step_s
            log_step(tracker, s, FULL_STEPS, step_s)
        tracker.finish()
        wall = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        module.time, sharding.atomic_write_bytes = time, real_write
    return {"steps": steps, "bytes": written["bytes"], "writes": written["writes"], "peak": peak, "wall": wall}


def _gb(n: float) -> str:
    return f"{n / 1e9:,.3f} GB" if n >= 1e8 else f"{n / 1e6:,.2f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=FULL_STEPS)
    parser.add_argument("--old-steps", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--emulator-steps", type=int, default=5_000, help="0 skips the GCS emulator")
    parser.add_argument("--step-s", type=float, default=2.5)
    args = parser.parse_args()
    import steps.training.metrics as new

    old = old_module()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.old_steps:
            def make_old(n=n):
                tracker = old.JsonlMetricsTracker(os.path.join(tmp, f"old-{n}"))
                tracker.local = False  # the object-store path, on local disk
                return tracker
            r = run(make_old, old, n, args.step_s)
            results.append(("before (HEAD), rewrite whole file", "local dir", r))
            print(f"old {n}: {r}", file=sys.stderr)
        r = run(lambda: new.JsonlMetricsTracker(os.path.join(tmp, "new"), chunked=True), new, args.steps,
                args.step_s)
        rows = len(new.read_metrics(os.path.join(tmp, "new")))
        assert rows == args.steps, (rows, args.steps)
        results.append(("after, immutable chunks", "local dir", r))
        print(f"new {args.steps}: {r}", file=sys.stderr)
        row_bytes = r["bytes"] / args.steps  # sessions file is a few hundred bytes of this
    if args.emulator_steps:
        from infra.gcs_emulator import GcsEmulator

        with GcsEmulator(buckets=["soda-metrics"]) as emu:
            os.environ.update(emu.environment())
            from pipeline.fileio import url_to_fs

            url_to_fs("gs://soda-metrics/run")[0].ls("soda-metrics")  # gcsfs's client, made before tracing
            r = run(lambda: new.JsonlMetricsTracker("gs://soda-metrics/run"), new, args.emulator_steps, args.step_s)
            assert len(new.read_metrics("gs://soda-metrics/run")) == args.emulator_steps
            results.append(("after, immutable chunks", "GCS emulator", r))
            print(f"emulator {args.emulator_steps}: {r}", file=sys.stderr)

    # before, extrapolated: fit bytes = a*n^2 + b*n to the measured old runs; and the exact sum of its
    # rewrites (one every ceil(60 / step_s) steps, each the whole file so far) at the measured row size
    olds = [r for name, _, r in results if name.startswith("before")]
    n_arr = np.array([r["steps"] for r in olds], dtype=float)
    a, b = np.linalg.lstsq(np.stack([n_arr ** 2, n_arr], axis=1), np.array([r["bytes"] for r in olds], float),
                           rcond=None)[0]
    fitted = a * args.steps ** 2 + b * args.steps
    every = math.floor(60.0 / args.step_s) + 1  # the old code flushes when more than 60 s have passed
    exact = sum(min(k, args.steps) for k in range(every, args.steps + every, every)) * row_bytes
    peak_per_row = olds[-1]["peak"] / olds[-1]["steps"]  # the longest run: least fixed overhead

    print(f"\n{args.steps:,} steps, {args.step_s} s/step simulated (flush every 60 s = {every} steps), "
          f"{row_bytes:,.0f} bytes per row\n")
    print("| tracker | target | steps | bytes written | writes | peak memory (tracemalloc) | wall time |")
    print("|---|---|---|---|---|---|---|")
    for name, target, r in results:
        print(f"| {name} | {target} | {r['steps']:,} | {_gb(r['bytes'])} | {r['writes']:,} | "
              f"{r['peak'] / 1e6:,.2f} MB | {r['wall']:,.1f} s |")
    print(f"| before (HEAD), extrapolated | object store | {args.steps:,} | {_gb(fitted)} (fit a*n^2+b*n); "
          f"{_gb(exact)} (sum of rewrites) | {math.ceil(args.steps / every):,} | "
          f"~{peak_per_row * args.steps / 1e6:,.0f} MB (all rows kept, linear) | - |")


if __name__ == "__main__":
    main()
