"""`soda rehearse SCRIPT`: a production experiment script, end to end, at toy scale, on this machine.

    soda rehearse experiments/exp1699_soda_all.py [--out DIR] [--data-mirror URL] [--cluster FILE]
                                                  [--run-only REGEX ...]

What it does, in order:
1. **Placement.** The script's production DAG, untouched, is checked against the cluster file
   (`--dry-run --cluster FILE`, the same check users run): every slice, GPU, batch split and
   memory estimate must fit a node type, or the rehearsal fails naming the steps.
2. **Bucket.** A GCS emulator (infra.gcs_emulator) serves `gs://soda-rehearsal`; the prefix is
   `gs://soda-rehearsal/<script>`, so every status file, lease, cache, checkpoint, summary and log
   goes through the object-store code paths (gcsfs, tensorstore, google-cloud-storage).
3. **Data.** Downloads read through a dataset mirror: `--data-mirror URL` with its `datasets.lock`,
   else `soda make-mirror` writes one and it is uploaded to `gs://soda-mirror`.
4. **Cluster.** A local multi-node Ray cluster mirrors the cluster file's node types, scaled down:
   one node per worker type with at most `max_cpus` CPUs, GPU nodes advertising their GPUs, and for
   the TPU node types the rehearsal's slices (experiments.rehearsal.rehearsal_slice: 2 fake hosts
   of 4 chips each for v5p), whose hosts advertise what Ray's GCP provider advertises.
5. **Run.** The script itself runs with `--rehearsal --ray-address ... --data-mirror ...`: its own
   DAG through its shared main, which applies the rehearsal scale (experiments.rehearsal).
6. **Checks and report.** Progress lines while it runs; then every train step must have run as a
   multi-process JAX job (summary.json `jax_process_count` >= 2), nothing may have been written to a
   local path that looks like `gs:/...` (a silent local fallback), and one line ends the output:
   `rehearsal: <script> <N> steps, <S> succeeded, <F> failed, prefix gs://...`. Exit 0 only when
   nothing failed. `--out DIR` keeps the bucket as plain files (with the experiment log) and the
   run's full log.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from infra.local_cluster import LocalCluster, LocalNode, fake_tpu_slice
from experiments.rehearsal import rehearsal_slice
from infra.gcs_emulator import GcsEmulator
from pipeline.fileio import exists, join, read_json, url_to_fs
from pipeline.node_types import node_types_from_cluster_file
from pipeline.record_store import latest_record
from steps.dataset_lock import LOCK_ENV
from steps.mirror import MIRROR_ENV
from steps.mirror_fixtures import make_mirror

logger = logging.getLogger(__name__)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "soda-rehearsal"
MIRROR_BUCKET = "soda-mirror"
DEFAULT_CLUSTER = os.path.join(REPO, "infra", "cluster-tpu.yaml")
# Files that stay off the bucket by design, with why (said in every report).
OFF_BUCKET = (
    "Levanter's log files: local to each host (<tmp>/soda-levanter-logs/<run>); Levanter writes them only to a "
    "local directory",
    "Ray's own logs: the local cluster's session directory",
    "per-process local copies of tokenizers, judges and HF exports (<tmp>/local-copies-<pid>): transformers "
    "reads only local files",
)
_PROGRESS = re.compile(r"pipeline\.executor: (running|succeeded|failed|waiting for) (.*)$")


@dataclass
class Outcome:
    script: str
    prefix: str
    steps: int = 0
    succeeded: int = 0
    failed: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # failed step -> its traceback, as recorded
    blocked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # placement, launch or storage findings

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked and not self.problems and self.steps > 0

    def line(self) -> str:
        return (f"rehearsal: {self.script} {self.steps} steps, {self.succeeded} succeeded, "
                f"{len(self.failed) + len(self.blocked)} failed, prefix {self.prefix}")


# ---- the cluster ------------------------------------------------------------------------------


def local_nodes(cluster_file: str, max_cpus: float = 2, min_hosts: int = 2) -> tuple[float, list[LocalNode]]:
    """(head CPUs, worker nodes) of a local cluster mirroring `cluster_file`'s node types, scaled down."""
    import yaml

    with open(cluster_file) as f:
        head_type = (yaml.safe_load(f) or {}).get("head_node_type")
    head_cpus, nodes, slices = 0.0, [], []
    for t in node_types_from_cluster_file(cluster_file):
        cpus = min(float(t.resources.get("CPU", 1)), max_cpus)
        if t.name == head_type:
            head_cpus = cpus
        elif t.is_tpu_slice:
            small = rehearsal_slice(t.accelerator, min_hosts)
            if small not in slices:  # one slice per rehearsal slice type: training runs one at a time
                slices.append(small)
                nodes += fake_tpu_slice(small, f"rehearsal-{small}-0", node_type=t.name, cpus_per_host=1)
        else:
            gpus = float(t.resources.get("GPU", 0))
            nodes.append(LocalNode(t.name, num_cpus=cpus if not gpus else min(cpus, 1), num_gpus=gpus))
    return head_cpus, nodes


# ---- running the script -------------------------------------------------------------------------


def _stream(proc: subprocess.Popen, log_path: str, start: float) -> None:
    """Copy the script's output to `log_path`; show the executor's progress lines."""
    with open(log_path, "w") as log:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            m = _PROGRESS.search(line.rstrip())
            if m:
                print(f"  [{time.time() - start:6.0f}s] {m.group(1)} {m.group(2)}", flush=True)


def _run(cmd: list[str], env: dict[str, str], cwd: str, log_path: str, timeout: float, start: float) -> int:
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    reader = threading.Thread(target=_stream, args=(proc, log_path, start), daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        code = -9
    reader.join(timeout=10)
    return code


def _script_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    env.pop("RAY_ADDRESS", None)
    return env


def check_placement(script: str, cluster_file: str, env: dict[str, str], work: str) -> list[str]:
    """The production DAG's `--dry-run --cluster` check; the problems it names ([] when every step fits)."""
    done = subprocess.run([sys.executable, script, "--dry-run", "--cluster", cluster_file, "--prefix",
                           os.path.join(work, "placement-prefix")], env=env, cwd=work, capture_output=True,
                          text=True, timeout=300)
    if done.returncode == 0:
        return []
    text = (done.stdout + done.stderr).strip().splitlines()
    return [f"production placement against {cluster_file}: " + "\n    ".join(text[-25:])]


# ---- after the run ------------------------------------------------------------------------------


def read_outcome(outcome: Outcome, experiment: str) -> None:
    record = latest_record(outcome.prefix, experiment)
    if record is None:
        outcome.problems.append(f"no experiment record under {outcome.prefix}/experiments: the script did not "
                                "reach its executor (see the log)")
        return
    states = {n: s for n, s in record["runs"][-1]["steps"].items() if s.get("status") != "not selected"}
    outcome.steps = len(states)
    outcome.succeeded = sum(1 for s in states.values() if s.get("status") == "succeeded")
    outcome.failed = sorted(n for n, s in states.items() if s.get("status") == "failed")
    outcome.errors = {n: states[n].get("error") or "" for n in outcome.failed}
    outcome.blocked = sorted(n for n, s in states.items() if s.get("status") in ("blocked", "interrupted", "pending",
                                                                               "running"))
    for name, step in record["steps"].items():
        if states.get(name, {}).get("status") == "succeeded" and name.startswith("checkpoints/"):
            _check_multihost(outcome, name, step["output_path"])


def _check_multihost(outcome: Outcome, name: str, output: str) -> None:
    summary = join(output, "summary.json")
    if not exists(summary):
        return  # not a train step (fine-tunes write their own summaries)
    data = read_json(summary)
    if data.get("tpu") and (data.get("jax_process_count") or 0) < 2:
        outcome.problems.append(f"{name}: trained with jax_process_count={data.get('jax_process_count')} on "
                                f"{data.get('tpu')}; the multi-host launch did not run")


def local_fallbacks(*roots: str) -> list[str]:
    """Local directories named like an object-store URL (`gs:`), the trace of a path handed to os.*."""
    found = []
    for root in roots:
        for dirpath, dirnames, _ in os.walk(root):
            for d in dirnames:
                if re.fullmatch(r"(gs|s3|gcs|hf):", d):
                    found.append(os.path.join(dirpath, d))
    return found


# ---- the command --------------------------------------------------------------------------------


def rehearse(script: str, out: Optional[str] = None, data_mirror: Optional[str] = None,
             cluster_file: str = DEFAULT_CLUSTER, timeout: float = 3600, max_cpus: float = 2,
             run_only: Optional[list[str]] = None) -> Outcome:
    start = time.time()
    script = os.path.abspath(script)
    experiment = os.path.splitext(os.path.basename(script))[0]
    prefix = f"gs://{BUCKET}/{experiment}"
    outcome = Outcome(experiment, prefix)
    work = tempfile.mkdtemp(prefix=f"soda-rehearsal-{experiment}-")
    print(f"rehearsal of {experiment}: working in {work}", flush=True)
    try:
        env = _script_env({})
        print(f"  placement: the production DAG against {os.path.relpath(cluster_file, REPO)}", flush=True)
        outcome.problems += check_placement(script, cluster_file, env, work)
        with GcsEmulator(buckets=[BUCKET, MIRROR_BUCKET]) as gcs:
            mirror, lock = _mirror(gcs, data_mirror, work)
            print(f"  bucket: {prefix} (GCS emulator {gcs.url}); data mirror {mirror}", flush=True)
            head_cpus, nodes = local_nodes(cluster_file, max_cpus=max_cpus)
            with LocalCluster(nodes, head_cpus=head_cpus) as cluster:
                print(f"  cluster: {cluster.address}, {len(nodes)} nodes: "
                      + ", ".join(sorted({f'{n.node_type} x{sum(m.node_type == n.node_type for m in nodes)}'
                                          for n in nodes})), flush=True)
                driver = os.path.join(work, "driver")
                os.makedirs(driver)
                cmd = [sys.executable, script, "--prefix", prefix, "--rehearsal", "--ray-address", cluster.address,
                       "--data-mirror", mirror, *(["--run-only", *run_only] if run_only else [])]
                code = _run(cmd, _script_env({**gcs.environment(), LOCK_ENV: lock, MIRROR_ENV: mirror}), driver,
                            os.path.join(work, "run.log"), timeout, start)
                read_outcome(outcome, experiment)
                if code != 0 and not (outcome.failed or outcome.blocked):
                    outcome.problems.append(f"the script exited with code {code} (see {work}/run.log)")
                fallbacks = local_fallbacks(work, cluster.temp_dir)
                outcome.problems += [f"written to a local path instead of the bucket: {p}" for p in fallbacks]
            if out:
                os.makedirs(out, exist_ok=True)
                files = gcs.download(BUCKET, out)
                shutil.copy(os.path.join(work, "run.log"), os.path.join(out, "rehearsal-run.log"))
                print(f"  kept {files} files of gs://{BUCKET} under {out}", flush=True)
    finally:
        if out is None and outcome.ok:
            shutil.rmtree(work, ignore_errors=True)
    _report(outcome, work, time.time() - start)
    return outcome


def _mirror(gcs, data_mirror: Optional[str], work: str) -> tuple[str, str]:
    """(mirror URL, local lock file) for the run: the given mirror, or a fresh one in the emulated bucket."""
    if data_mirror:
        lock_url = join(data_mirror, "datasets.lock")
        if not exists(lock_url):
            raise FileNotFoundError(f"--data-mirror {data_mirror}: no datasets.lock there (soda make-mirror writes "
                                    "one; a mirror of the Hub needs the lock its revisions came from)")
        lock = os.path.join(work, "datasets.lock")
        fs, path = url_to_fs(lock_url)
        fs.get_file(path, lock)
        return data_mirror, lock
    local = os.path.join(work, "mirror")
    lock = make_mirror(local)
    fs = gcs.filesystem()
    fs.put(local.rstrip("/") + "/", f"{MIRROR_BUCKET}/", recursive=True)
    return f"gs://{MIRROR_BUCKET}", lock


def _report(outcome: Outcome, work: str, seconds: float) -> None:
    for name in outcome.failed:
        tail = [line for line in outcome.errors.get(name, "").strip().splitlines() if line.strip()][-12:]
        print(f"  FAILED {name}:\n      " + "\n      ".join(tail), flush=True)
    for name in outcome.blocked:
        print(f"  not run: {name}", flush=True)
    for problem in outcome.problems:
        print(f"  PROBLEM {problem}", flush=True)
    print("  off the bucket by design: " + "; ".join(OFF_BUCKET), flush=True)
    if not outcome.ok:
        print(f"  full log: {work}/run.log", flush=True)
    print(f"  took {seconds:.0f}s", flush=True)
    print(outcome.line(), flush=True)


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="soda rehearse", description=__doc__.split("\n\n")[0])
    parser.add_argument("script", help="an experiment script, e.g. experiments/exp1699_soda_all.py")
    parser.add_argument("--out", default=None, help="keep the bucket's contents (and the run log) here")
    parser.add_argument("--data-mirror", default=None, help="a dataset mirror with its datasets.lock "
                        "(default: soda make-mirror's, in the emulated bucket)")
    parser.add_argument("--cluster", default=DEFAULT_CLUSTER, help="the Ray cluster file to mirror and place against")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before the run is stopped")
    parser.add_argument("--run-only", nargs="+", default=None, metavar="REGEX",
                        help="rehearse only the steps whose names match, and their dependencies")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.script):
        print(f"soda rehearse: no such script: {args.script}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    outcome = rehearse(args.script, args.out, args.data_mirror, args.cluster, args.timeout, run_only=args.run_only)
    return 0 if outcome.ok else 1
