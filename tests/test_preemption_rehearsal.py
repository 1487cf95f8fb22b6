"""A host of a training slice is killed mid-run, in the rehearsal's cluster (a head plus a fake
v5p-16 slice of two CPU hosts, one JAX process each, one multi-process mesh of 8 devices).

The executor runs the tiny pipeline (local corpus -> random Mimi -> documents -> token cache ->
Levanter) with the train step declared on the slice. Once the run has a checkpoint and has logged
steps past it, host 1's worker process is killed with -9. The supervisor (on the head node) sees
the host die, kills host 0, and starts the slice again; Levanter resumes from the checkpoint. The
run finishes with every step logged once, and each step the first session had already logged after
the checkpoint is logged again with the same loss: same parameters, same batch, so the step count
and the data position continued rather than restarted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.test_train_step import CHECKPOINT_EVERY, base_tokenizer, pipeline_steps  # noqa: F401 (fixture)

NUM_STEPS = 30
BATCH = 8  # divides the slice's 8 devices
KILL_AFTER_STEP = CHECKPOINT_EVERY + 3  # the first session has logged steps past its checkpoint


def slice_pipeline(base_tokenizer: str):
    from pipeline import ResourceConfig, versioned

    *data_steps, trained = pipeline_steps(base_tokenizer, num_steps=NUM_STEPS)
    config = dataclasses.replace(trained.config, tpu="v5p-16", require_accelerator=False,
                                 batch_size=versioned(BATCH))
    trained = dataclasses.replace(trained, name="checkpoints/tiny-slice", config=config,
                                  resources=ResourceConfig(tpu="v5p-16"))
    return [*data_steps, trained]


def host_worker_pids(process_id: int) -> list[int]:
    """Processes started by the launcher as JAX process `process_id` of a slice (their environment says so)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if f"SODA_JAX_PROCESS_ID={process_id}".encode() in env:
            found.append(int(pid))
    return found


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


@pytest.mark.slow  # about 6 minutes here: data steps, then two multi-process training sessions
def test_killing_a_slice_host_mid_training_resumes_from_the_checkpoint(prefix, base_tokenizer):
    ray = pytest.importorskip("ray")
    from infra.local_cluster import LocalTpuCluster
    from pipeline import Executor

    with LocalTpuCluster("v5p-16", head_cpus=2, slice_prefix="rehearsal") as cluster:
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["result"] = Executor(prefix, ray_address=cluster.address,
                                             experiment_name="preemption").run(slice_pipeline(base_tokenizer))
            except BaseException as e:  # noqa: BLE001 - asserted below
                outcome["error"] = e

        thread = threading.Thread(target=run)
        thread.start()
        try:
            deadline, out_dir, killed, before_kill = time.time() + 900, None, [], []
            while not killed and time.time() < deadline and thread.is_alive():
                time.sleep(0.5)
                found = list(Path(prefix).glob("checkpoints/tiny-slice-*"))
                if not found:
                    continue
                out_dir = found[0]
                have_checkpoint = (out_dir / "checkpoints" / f"step-{CHECKPOINT_EVERY}" / "metadata.json").exists()
                logged = [r["step"] for r in _rows(out_dir / "metrics.jsonl")]
                if have_checkpoint and logged and max(logged) >= KILL_AFTER_STEP:
                    before_kill = _rows(out_dir / "metrics.jsonl")  # the resume drops its rows past the checkpoint
                    for pid in host_worker_pids(1):
                        os.kill(pid, signal.SIGKILL)  # one fake TPU host's worker, mid-training
                        killed.append(pid)
            assert killed, f"never reached a checkpoint and step {KILL_AFTER_STEP} to kill at: {outcome}"
            assert max(r["step"] for r in before_kill) < NUM_STEPS - 1, "finished before the kill"
            thread.join(timeout=900)
        finally:
            if thread.is_alive():
                ray.shutdown()
        assert not thread.is_alive() and "error" not in outcome, outcome.get("error")

    events = _rows(out_dir / "slice_events.jsonl")
    assert [e["kind"] for e in events] == ["preempted"], events  # a preemption: no failure budget spent
    assert "host 1" in events[0]["message"] and "died" in events[0]["message"]

    sessions = _rows(out_dir / "train_sessions.jsonl")
    assert len(sessions) == 2 and sessions[0]["first_step"] == 0
    resumed_at = sessions[1]["first_step"]
    assert CHECKPOINT_EVERY <= resumed_at <= KILL_AFTER_STEP + 5  # from the checkpoint, not from step 0

    from steps.training.metrics import read_metrics

    final = read_metrics(str(out_dir))
    assert [r["step"] for r in final] == list(range(NUM_STEPS))  # every step once, in order
    losses = [r["train/loss"] for r in final if "train/loss" in r]
    assert all(isinstance(x, float) and math.isfinite(x) and x > 0.5 for x in losses), losses  # no 0.0 resume
    # The steps the first session logged after the checkpoint were redone by the second with the same loss.
    first_session = {r["step"]: r["train/loss"] for r in before_kill if "train/loss" in r and r["step"] >= resumed_at}
    redone = {r["step"]: r["train/loss"] for r in final if r["step"] in first_session}
    assert len(redone) >= 2, (resumed_at, first_session)
    for step, loss in redone.items():
        assert loss == pytest.approx(first_session[step], rel=2e-3), (step, loss, first_session[step])
    assert losses[-1] < losses[0] - 1.0, losses

    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["steps"] == NUM_STEPS and summary["sessions"] == 2 and summary["preemptions"] == 1
    assert summary["failures_retried"] == 0
    assert summary["jax_process_count"] == 2 and summary["jax_device_count"] == 8 and summary["tpu"] == "v5p-16"
    assert summary["tokens"] == NUM_STEPS * BATCH * 256
