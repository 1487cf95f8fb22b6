"""Wall time and MB/s of the download step: the old serial copy vs the Ray fan-out, on the GCS emulator.

`--files` files of `--mb` MB each are written to gs://src/ds on a local GCS emulator
(infra/gcs_emulator.py); each run copies them all to a fresh prefix of gs://dst:

- serial: the step as it was before the fan-out (`git show HEAD:steps/download.py`, or
  `--old-ref`), loaded as a module: one process, one file after another;
- threads: the new step without Ray (a thread pool of `steps.download.LOCAL_THREADS`);
- ray N: the new step under `ray.init(address="local", num_cpus=N)`: one Ray task per batch of
  files (`steps.download.BATCH_FILES`).

Ray start-up is outside the timing; starting its workers is inside. Prints a Markdown table.

    python benchmarks/download_bench.py [--files 200] [--mb 2] [--workers 2 4] [--old-ref HEAD]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.previous_code import load_previous  # noqa: E402

SHA = "0123456789abcdef0123456789abcdef01234567"


def load_old(ref: str):
    return load_previous(ref, "steps/download.py", "old_download")


def timed(module, dest: str, files: int, mb: float) -> tuple[float, dict]:
    config = module.DownloadConfig(hf_dataset_id=None, revision=SHA, source_url="gs://src/ds",
                                   output_path=dest, include=("**/*.bin",))
    start = time.perf_counter()
    summary = module.download_dataset(config)
    elapsed = time.perf_counter() - start
    assert summary["downloaded_files"] == files and summary["skipped"] == 0, summary
    return elapsed, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--mb", type=float, default=2.0)
    parser.add_argument("--workers", type=int, nargs="*", default=[2, 4])
    parser.add_argument("--old-ref", default="HEAD")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")

    from infra.gcs_emulator import GcsEmulator

    import ray
    import steps.download as new

    old = load_old(args.old_ref)
    size = int(args.mb * 1e6)
    total_mb = args.files * size / 1e6
    rows = []
    with GcsEmulator(buckets=["src", "dst"]) as emu:
        fs = emu.filesystem()
        t0 = time.perf_counter()
        for i in range(args.files):
            fs.pipe(f"src/ds/part{i // 50:02d}/f{i:04d}.bin", os.urandom(size))
        print(f"wrote {args.files} x {args.mb} MB to gs://src/ds in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        def record(name: str, module, dest: str) -> None:
            elapsed, _ = timed(module, dest, args.files, args.mb)
            rows.append((name, elapsed))
            print(f"{name}: {elapsed:.1f} s", file=sys.stderr)

        record(f"serial (old step, {args.old_ref})", old, "gs://dst/serial")
        record(f"threads ({new.LOCAL_THREADS}, no Ray)", new, "gs://dst/threads")
        for n in args.workers:
            ray.init(address="local", num_cpus=n, include_dashboard=False, configure_logging=False,
                     log_to_driver=False)
            try:
                record(f"ray, {n} workers", new, f"gs://dst/ray{n}")
            finally:
                ray.shutdown()
    base = rows[0][1]
    print(f"\n{args.files} files x {args.mb} MB ({total_mb:.0f} MB), gs://src -> gs://dst on the GCS emulator, "
          f"{os.cpu_count()} CPUs\n")
    print("| copy | wall s | MB/s | vs serial |")
    print("|---|---:|---:|---:|")
    for name, elapsed in rows:
        print(f"| {name} | {elapsed:.1f} | {total_mb / elapsed:.1f} | {base / elapsed:.2f}x |")


if __name__ == "__main__":
    main()
