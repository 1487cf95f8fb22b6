"""Credentials never reach the console or Ray's log files: a real executor process on an embedded Ray
whose steps print, log and raise with secrets from the environment."""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from pipeline import storage
from tests.fault_harness import REPO, env_for, finish, launch, step_dir

HF = "hf_" + "CoNsOlEtOkEnAbCdEfGhIjKlMnOpQrSt012345"
WANDB = "fedcba9876543210fedcba9876543210fedcba98"  # bare hex: only the env value gives it away
PASSWORD = 'c0ns"le<p&ss>\\w'  # changes under JSON, HTML and repr escaping
LOOSE_HF = "hf_" + "LooseConsoleTokenInTheConfig0123456"  # only in a config string, by shape


def forms(secret: str) -> set[str]:
    return {secret, json.dumps(secret)[1:-1], html.escape(secret), html.escape(secret, quote=False),
            repr(secret)[1:-1]}


def leaks(text: str) -> list[str]:
    return [form for secret in (HF, WANDB, PASSWORD, LOOSE_HF) for form in forms(secret) if form in text]


@pytest.fixture
def ray_tmp():
    path = tempfile.mkdtemp(prefix="rayc", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_console_and_ray_logs_show_no_secret(tmp_path, ray_tmp):
    prefix, probe, marker = str(tmp_path / "prefix"), str(tmp_path / "probe"), tmp_path / "fail"
    marker.write_text("")
    env = {"HF_TOKEN": HF, "WANDB_API_KEY": WANDB, "DB_PASSWORD": PASSWORD, "RAY_TMPDIR": ray_tmp,
           "SODA_TEST_LEAK": "HF_TOKEN,WANDB_API_KEY,DB_PASSWORD"}
    proc = launch(prefix, probe, "--verbose", env=env, fail_marker=str(marker), sleep="1",
                  secret_config=f"https://hub.example.com/api {LOOSE_HF}")
    out = finish(proc, timeout=300)
    assert proc.returncode == 1, out[-3000:]
    assert not leaks(out), (leaks(out), out[-3000:])

    # Honest: the steps did print, log and raise with the secrets, and Ray forwarded them to the console
    # (with --verbose; without it they are only in each step's .executor_log, redacted the same way).
    for name in ("gen/a", "gen/b"):
        with open(os.path.join(step_dir(prefix, name), ".executor_log"), encoding="utf-8") as f:
            log = f.read()
        assert not leaks(log) and "prints HF_TOKEN=<HF_TOKEN redacted>" in log, (name, leaks(log), log[-3000:])
    assert "prints HF_TOKEN=<HF_TOKEN redacted> and its repr '<HF_TOKEN redacted>'" in out, out[-3000:]
    assert "warns DB_PASSWORD" in out and "logs WANDB_API_KEY=<WANDB_API_KEY redacted>" in out, out[-3000:]
    assert "deliberate failure of b" in out and "<hf token redacted>" in out, out[-3000:]
    # The step's exception left its Ray task redacted, and still reads as its own traceback.
    traceback = storage.read_status(step_dir(prefix, "gen/b")).traceback
    assert traceback.startswith("Traceback (most recent call last), in Ray task gen/b"), traceback
    assert "in write_parts" in traceback and "StepFailed" not in traceback, traceback
    assert traceback.rstrip().splitlines()[-1].startswith("RuntimeError: deliberate failure of b"), traceback

    scanned = []
    for dirpath, _, filenames in os.walk(ray_tmp):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue  # sockets
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            assert not leaks(text), (path, leaks(text))
            scanned.append(path)
    worker_logs = [p for p in scanned if os.path.basename(p).startswith("worker-")]
    assert worker_logs and any("<HF_TOKEN redacted>" in open(p, errors="replace").read() for p in worker_logs)


@pytest.mark.xfail(strict=True, reason="Ray's runtime_env agent (its own process) logs a task's env_vars, so a "
                   "secret given as executor_main(env=...) reaches runtime_env_agent.log; known, not fixed")
def test_secret_in_executor_env_stays_out_of_ray_logs(tmp_path, ray_tmp):
    code = ("import os, sys; from tests import fault_dag; from pipeline import executor_main; "
            "executor_main(steps=fault_dag.build(sys.argv[1]), experiment_name='fault_dag', "
            "env={'HF_TOKEN': os.environ['HF_TOKEN']}, argv=['--prefix', sys.argv[2]])")
    env = dict(env_for(str(tmp_path / "probe")), HF_TOKEN=HF, RAY_TMPDIR=ray_tmp)
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "probe"), str(tmp_path / "prefix")],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out = finish(proc, timeout=300)
    assert proc.returncode == 0 and not leaks(out), out[-3000:]
    found = []
    for dirpath, _, filenames in os.walk(ray_tmp):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    if leaks(f.read().decode("utf-8", "replace")):
                        found.append(os.path.basename(path))
    assert not found, found


def test_redacting_stream_catches_a_secret_split_across_writes(monkeypatch):
    import io

    from pipeline.redacted_output import RedactingStream

    monkeypatch.setenv("HF_TOKEN", HF)
    sink = io.StringIO()
    stream = RedactingStream(sink)
    for piece in ("token ", HF[:5], HF[5:20], "", HF[20:] + " end\nnext ", "line\r", "progress"):
        stream.write(piece)
        stream.flush()
    assert sink.getvalue() == "token <HF_TOKEN redacted> end\nnext line\r"  # the partial line is held
    stream.close_line()
    assert sink.getvalue().endswith("progress") and not leaks(sink.getvalue())
    stream.buffer.write(f"bytes {HF[:9]}".encode())
    stream.buffer.write(f"{HF[9:]}\n".encode())
    assert sink.getvalue().endswith("progressbytes <HF_TOKEN redacted>\n") and not leaks(sink.getvalue())


def test_redacting_filter_redacts_messages_args_and_tracebacks(monkeypatch):
    import io

    from pipeline.redacted_output import RedactingFilter

    monkeypatch.setenv("WANDB_API_KEY", WANDB)
    monkeypatch.setenv("DB_PASSWORD", PASSWORD)
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("test_console_secrets")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("key %s and %r", WANDB, {"password": PASSWORD})
        try:
            raise RuntimeError(f"failed with {WANDB}")
        except RuntimeError:
            log.exception("step failed: %s", LOOSE_HF)
    finally:
        log.removeHandler(handler)
        log.propagate = True
    text = sink.getvalue()
    assert "<WANDB_API_KEY redacted>" in text and "RuntimeError: failed with <WANDB_API_KEY redacted>" in text
    assert not leaks(text), text
