"""Wall time of the pre-encoded step: the old one-process loop vs one Ray task per file, on the GCS emulator.

`--files` released-style parquet files (`id, split, text`, one document per row, ~`--mb` MB each,
made like tests/test_pre_encoded.py's) are written to gs://bench/src on a local GCS emulator
(infra/gcs_emulator.py); each run converts them all to a fresh prefix of gs://bench:

- serial: the step as it was before the fan-out (`git show HEAD:steps/pre_encoded.py`, or
  `--old-ref`), loaded as a module: one process, one file after another;
- new, no Ray: the new step without Ray (its jobs run in this process, one after another);
- ray N: the new step under `ray.init(address="local", num_cpus=N)`: one Ray task per file.

Every run's documents/*.parquet, done markers and summary.json are checked byte for byte against
the serial run's. Ray start-up is outside the timing; starting its workers is inside. Prints a
Markdown table.

    python benchmarks/pre_encoded_bench.py [--files 32] [--mb 3] [--workers 2 4] [--old-ref HEAD]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.previous_code import load_previous  # noqa: E402

BUCKET = "bench"


def load_old(ref: str):
    return load_previous(ref, "steps/pre_encoded.py", "old_pre_encoded")


def released_file(seed: int, mb: float) -> bytes:
    """A parquet of released-style documents (text-first and audio-first per recording, ~20 s of
    audio each, the first release's stray spaces) of about `mb` MB."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokenizer.audio import codes_to_chars

    rng = np.random.default_rng(seed)
    ids, texts, size = [], [], 0
    r = 0
    while size < mb * 1e6:
        audio = codes_to_chars(rng.integers(0, 2048, size=(8, int(rng.integers(150, 350)))))
        words = " ".join(f"w{int(x)}" for x in rng.integers(0, 5000, size=int(rng.integers(20, 60))))
        ids += [f"s{seed}r{r:05d}_type1", f"s{seed}r{r:05d}_type2"]
        texts += [f"<|begin_of_text|><|text_start|> {words} <|text_end|><|audio_start|>{audio}<|audio_end|>"
                  "<|end_of_text|>",
                  f"<|begin_of_text|><|audio_start|>{audio}<|audio_end|><|text_start|> {words} <|text_end|>"
                  "<|end_of_text|>"]
        size += len(texts[-1].encode())  # two documents; parquet stores them in about half their UTF-8 size
        r += 1
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ids, "split": [f"en000/{seed:08d}"] * len(ids), "text": texts}), buf)
    return buf.getvalue()


def timed(module, out: str) -> float:
    config = module.PreEncodedConfig(input_paths=(f"gs://{BUCKET}/src/*/*.parquet",), output_path=out)
    start = time.perf_counter()
    module.convert_pre_encoded(config)
    return time.perf_counter() - start


def outputs(fs, out: str) -> dict[str, bytes]:
    fs.invalidate_cache()
    found = {p[len(f"{BUCKET}/{out}"):]: fs.cat_file(p) for p in fs.find(f"{BUCKET}/{out}")}
    return {k: v for k, v in found.items() if "/." not in k}  # no temp files left is checked below


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--mb", type=float, default=3.0)
    parser.add_argument("--workers", type=int, nargs="*", default=[2, 4])
    parser.add_argument("--old-ref", default="HEAD")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the step warns per skipped document; none here
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")

    from infra.gcs_emulator import GcsEmulator

    import ray
    import steps.pre_encoded as new

    old = load_old(args.old_ref)
    rows = []
    with GcsEmulator(buckets=[BUCKET]) as emu:
        fs = emu.filesystem()
        t0 = time.perf_counter()
        total = 0
        for k in range(args.files):
            data = released_file(k, args.mb)
            fs.pipe(f"{BUCKET}/src/en{k // 8:03d}/{k:08d}.parquet", data)
            total += len(data)
        total_mb = total / 1e6
        print(f"wrote {args.files} files, {total_mb:.0f} MB to gs://{BUCKET}/src in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)

        def record(name: str, module, out: str) -> None:
            elapsed = timed(module, f"gs://{BUCKET}/{out}")
            rows.append((name, out, elapsed))
            print(f"{name}: {elapsed:.1f} s", file=sys.stderr)

        record(f"serial (old step, {args.old_ref})", old, "serial")
        record("new step, no Ray (in process)", new, "local")
        for n in args.workers:
            ray.init(address="local", num_cpus=n, include_dashboard=False, configure_logging=False,
                     log_to_driver=False)
            try:
                record(f"ray, {n} workers", new, f"ray{n}")
            finally:
                ray.shutdown()
        reference = outputs(fs, "serial")
        assert len(reference) == 2 * args.files + 1, sorted(reference)
        for _, out, _ in rows[1:]:
            got = outputs(fs, out)
            assert got.keys() == reference.keys(), (out, sorted(set(got) ^ set(reference)))
            different = [k for k in reference if got[k] != reference[k] and not k.endswith(".done.json")]
            assert not different, (out, different)
            for k in reference:  # the markers name the same input; nothing else differs
                assert got[k] == reference[k], (out, k)
    base = rows[0][2]
    print(f"\n{args.files} files ({total_mb:.0f} MB of released parquet), gs://{BUCKET}/src -> gs://{BUCKET}/<run> "
          f"on the GCS emulator, {os.cpu_count()} CPUs; every run's output byte-identical to the serial one\n")
    print("| conversion | wall s | files/s | MB/s | vs serial |")
    print("|---|---:|---:|---:|---:|")
    for name, _, elapsed in rows:
        print(f"| {name} | {elapsed:.1f} | {args.files / elapsed:.2f} | {total_mb / elapsed:.1f} | "
              f"{base / elapsed:.2f}x |")


if __name__ == "__main__":
    main()
