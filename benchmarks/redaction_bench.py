"""Redaction throughput on hostile text: every shape that made the old patterns backtrack.

    python benchmarks/redaction_bench.py [--mb 100] [--old-kb 100]

Each shape is `--mb` megabytes of one repeated adversarial piece, redacted whole by
`pipeline.redaction.redact` (with two secret environment variables set, so the by-value net runs
too). The last columns redact `--old-kb` kilobytes of the same shape with this checkout's code and
with the code of the last commit (`git show HEAD:pipeline/redaction.py`, loaded as a module), whose
URL-password pattern backtracked from every start position.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pipeline import redaction  # noqa: E402

BENIGN = ("step tokenized/soda-en-3f2a9c wrote 1,024 shards to gs://bucket/soda/tokenized in 12.3 s; "
          "config {'seq_len': 4096, 'pad_token': '<|pad|>', 'lr': 3e-4}\n")
SHAPES = {
    "benign log text": lambda n: _repeat(BENIGN, n),
    "URL-like run, no `://`": lambda n: _repeat("ab.c-d+e9", n),
    "long scheme, `://`, no `@`": lambda n: "s" * (n // 2) + "://host:" + "p" * (n - n // 2 - 8),
    "`a:` pairs": lambda n: _repeat("a:", n),
    "`token=` repeated": lambda n: _repeat("token=", n),
    "PEM header, no END": lambda n: _repeat("-----BEGIN PRIVATE KEY-----", n),
    "`Bearer ` repeated": lambda n: _repeat("Bearer ", n),
}


def _repeat(piece: str, n: int) -> str:
    return (piece * (n // len(piece) + 1))[:n]


def load_old():
    """The last commit's `pipeline/redaction.py` as a module, or None outside a git checkout."""
    try:
        source = subprocess.run(["git", "show", "HEAD:pipeline/redaction.py"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("old_redaction", f.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.unlink(f.name)
    return module


def timed(fn, text: str) -> float:
    """CPU seconds of `fn(text)`: redaction is single-threaded, and other processes do not count."""
    start = time.process_time()
    fn(text)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=100, help="size of each hostile text, in MB")
    parser.add_argument("--old-kb", type=float, default=100, help="size of the old-versus-new comparison, in KB")
    args = parser.parse_args()
    os.environ["HF_TOKEN"] = "hf_" + "BenchTokenNotARealOne0123456789"
    os.environ["DB_PASSWORD"] = 'p&ss"w<0>rd'
    old = load_old()
    big, small = int(args.mb * 1e6), int(args.old_kb * 1e3)
    print(f"{args.mb:g} MB per shape; {os.cpu_count()} cores, Python {platform.python_version()}\n")
    print(f"| shape | new: MB/s on {args.mb:g} MB | new: {args.old_kb:g} KB | old: {args.old_kb:g} KB |")
    print("|---|---|---|---|")
    for name, make in SHAPES.items():
        text = make(big)
        rate = len(text) / 1e6 / timed(redaction.redact, text)
        del text
        text = make(small)
        new_small = timed(redaction.redact, text)
        old_small = f"{timed(old.redact, text):.3f} s" if old is not None else "n/a"
        print(f"| {name} | {rate:.1f} | {new_small:.3f} s | {old_small} |", flush=True)


if __name__ == "__main__":
    main()
