"""A DAG for the fault tests: resumable multi-file steps that report where and how they ran.

    gen/a, gen/b (parts of deterministic text, written one atomic file at a time)
      [gen/big]  (one payload file of SODA_TEST_BIG bytes, for disk-full tests)
      -> merge/ab (their concatenation and a checksum; no paths, so outputs compare across prefixes)

Each step writes `{probe}/{step basename}.{pid}.json` (pid, Ray node id) when it starts and appends
"start"/"part"/"end" lines to `{probe}/ledger.txt`; the probe directory lies outside the prefix, so
the outputs themselves are byte-identical between runs. Runnable as an experiment script; the
environment chooses the faults:

    SODA_TEST_PROBE       probe directory (required)
    SODA_TEST_SLEEP       seconds to sleep before each part (default 0)
    SODA_TEST_FAIL_MARKER gen/b raises after writing half its parts while this file exists
    SODA_TEST_BIG         add gen/big with a payload of this many bytes
    SODA_TEST_RESOURCES   JSON: step name -> ResourceConfig fields, e.g. {"gen/a": {"custom": {"big": 1}}}
    SODA_TEST_RETRIES     Ray max_retries of every step (default 0)
    SODA_TEST_SECRET_CONFIG a string put in gen/a's and gen/b's (unversioned) config, e.g. a URL with a token
    SODA_TEST_LEAK        comma-separated environment names whose values gen/b's deliberate failure prints;
                          every gen step also prints them (stdout, split across writes), to stderr and logs them
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline import ExecutorStep, ResourceConfig, executor_main, this_output_path, versioned  # noqa: E402

PART_BYTES = 1024


@dataclass(frozen=True)
class PartsConfig:
    out: str
    seed: int
    parts: int
    probe: str
    sleep: float = 0.0
    fail_marker: Optional[str] = None  # raise after writing half the parts while this file exists
    endpoint: str = ""  # an unversioned string (the secrets test puts a token in it)


@dataclass(frozen=True)
class BigConfig:
    out: str
    size: int
    probe: str


@dataclass(frozen=True)
class MergeConfig:
    inputs: list
    out: str
    probe: str


def _record_start(probe: str, out: str) -> None:
    name = os.path.basename(out)
    node = None
    try:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
    except Exception:  # not under Ray
        pass
    os.makedirs(probe, exist_ok=True)
    record = {"step": name, "pid": os.getpid(), "node_id": node, "time": time.time()}
    _write_atomic(os.path.join(probe, f"{name}.{os.getpid()}.json"), json.dumps(record).encode())  # tests poll it
    _ledger(probe, f"start {name} {os.getpid()}")


def _ledger(probe: str, line: str) -> None:
    with open(os.path.join(probe, "ledger.txt"), "a") as f:
        f.write(line + "\n")


def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"  # a fixed name: a rerun overwrites what a killed run left
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)  # never leave a half file (or its space) behind
        raise


def part_text(seed: int, index: int) -> bytes:
    line = hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()
    return (line * (PART_BYTES // len(line) + 1))[:PART_BYTES].encode()


def _leak_to_console(name: str) -> None:
    """Print and log the SODA_TEST_LEAK values, the way a careless step would (for the console tests)."""
    for key in [k for k in os.environ.get("SODA_TEST_LEAK", "").split(",") if os.environ.get(k)]:
        value = os.environ[key]
        half = len(value) // 2
        sys.stdout.write(f"{name} prints {key}={value[:half]}")  # one line, written in two pieces
        sys.stdout.flush()
        print(f"{value[half:]} and its repr {value!r}", flush=True)
        print(f"{name} warns {key} {json.dumps(value)}", file=sys.stderr, flush=True)
        logging.getLogger("fault_dag").warning("%s logs %s=%s", name, key, value)


def write_parts(config: PartsConfig) -> None:
    _record_start(config.probe, config.out)
    name = os.path.basename(config.out)
    _leak_to_console(name)
    os.makedirs(config.out, exist_ok=True)
    for i in range(config.parts):
        if config.fail_marker and i == config.parts // 2 and os.path.exists(config.fail_marker):
            leaked = {k: os.environ.get(k) for k in os.environ.get("SODA_TEST_LEAK", "").split(",") if k}
            raise RuntimeError(f"deliberate failure of {name} after {i} of {config.parts} parts "
                               f"({config.fail_marker} exists; endpoint {config.endpoint!r}; env {leaked})")
        path = os.path.join(config.out, f"part-{i:03d}.txt")
        if os.path.exists(path):
            continue  # resumable: a finished part is never redone
        time.sleep(config.sleep)
        _write_atomic(path, part_text(config.seed, i))
        _ledger(config.probe, f"part {name} {i}")
    _ledger(config.probe, f"end {name}")


def write_big(config: BigConfig) -> None:
    _record_start(config.probe, config.out)
    os.makedirs(config.out, exist_ok=True)
    _write_atomic(os.path.join(config.out, "payload.bin"), bytes(range(256)) * (config.size // 256))
    _ledger(config.probe, f"end {os.path.basename(config.out)}")


def merge(config: MergeConfig) -> None:
    _record_start(config.probe, config.out)
    chunks = []
    for directory in config.inputs:
        for name in sorted(os.listdir(directory)):
            if not name.startswith("."):
                with open(os.path.join(directory, name), "rb") as f:
                    chunks.append(f.read())
    data = b"".join(chunks)
    os.makedirs(config.out, exist_ok=True)
    _write_atomic(os.path.join(config.out, "merged.bin"), data)
    summary = {"files": len(chunks), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    _write_atomic(os.path.join(config.out, "summary.json"), json.dumps(summary, sort_keys=True).encode())
    _ledger(config.probe, f"end {os.path.basename(config.out)}")


def build(probe: str, sleep: float = 0.0, fail_marker: Optional[str] = None, big: int = 0,
          resources: Optional[dict] = None, retries: int = 0, endpoint: str = "") -> list[ExecutorStep]:
    resources = resources or {}

    def res(name: str) -> ResourceConfig:
        return ResourceConfig(**{"max_retries": retries, **resources.get(name, {})})

    a = ExecutorStep("gen/a", write_parts, PartsConfig(this_output_path(), versioned(1), versioned(4), probe,
                                                       sleep=sleep, endpoint=endpoint), resources=res("gen/a"))
    b = ExecutorStep("gen/b", write_parts, PartsConfig(this_output_path(), versioned(2), versioned(4), probe,
                                                       sleep=sleep, fail_marker=fail_marker, endpoint=endpoint),
                     resources=res("gen/b"))
    inputs = [a, b]
    steps = [a, b]
    if big:
        big_step = ExecutorStep("gen/big", write_big, BigConfig(this_output_path(), versioned(big), probe),
                                resources=res("gen/big"))
        inputs.append(big_step)
        steps.append(big_step)
    merged = ExecutorStep("merge/ab", merge, MergeConfig(inputs, this_output_path(), probe), resources=res("merge/ab"))
    return steps + [merged]


def from_env() -> list[ExecutorStep]:
    env = os.environ
    return build(env["SODA_TEST_PROBE"], sleep=float(env.get("SODA_TEST_SLEEP", "0")),
                 fail_marker=env.get("SODA_TEST_FAIL_MARKER"), big=int(env.get("SODA_TEST_BIG", "0")),
                 resources=json.loads(env.get("SODA_TEST_RESOURCES", "{}")),
                 retries=int(env.get("SODA_TEST_RETRIES", "0")), endpoint=env.get("SODA_TEST_SECRET_CONFIG", ""))


if __name__ == "__main__":
    executor_main(steps=from_env(), description="fault test DAG", experiment_name="fault_dag")
