"""Executor overhead on a ~200-step SODA-shaped DAG: whole-process wall time and peak memory.

    python benchmarks/executor_bench.py [--repeats 3]

Measures three commands a user runs, each as a fresh process: the dry run (nothing cached),
the first run (every step runs as a Ray task, embedded local Ray), and the all-cached rerun.
Peak memory is the executor process's max RSS (Ray's own processes are not counted).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DAG = os.path.join(HERE, "soda_shaped_dag.py")


def measure(args: list[str]) -> tuple[float, float, str]:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, DAG, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = {"dry run (nothing cached)": [], "first run (all steps on Ray)": [], "all-cached rerun": []}
    steps = None
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as prefix:
            t, mem, out = measure(["--dry-run", "--prefix", prefix])
            steps = out.strip().splitlines()[-1]
            rows["dry run (nothing cached)"].append((t, mem))
            rows["first run (all steps on Ray)"].append(measure(["--prefix", prefix])[:2])
            rows["all-cached rerun"].append(measure(["--prefix", prefix])[:2])
    print(f"DAG: {steps}; {args.repeats} repeats, {os.cpu_count()} cores, Python {sys.version.split()[0]}\n")
    print("| command | wall time (median) | peak RSS of the executor |")
    print("|---|---|---|")
    for name, values in rows.items():
        wall = statistics.median(v[0] for v in values)
        mem = statistics.median(v[1] for v in values)
        print(f"| {name} | {wall:.2f} s | {mem:.0f} MiB |")


if __name__ == "__main__":
    main()
