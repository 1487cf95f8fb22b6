"""Per-step logs: what a step prints (Python, logging, raw file descriptors, child processes) lands,
redacted, in its `.executor_log` and not on the executor's console; `--verbose` brings it back;
`soda logs` prints it by step name or path, on local disk and on gs:// (the emulator)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass

import pytest

from pipeline import ExecutorStep, fileio, storage, this_output_path, versioned
from pipeline.step_log import LOG_FILE, StepLogWriter, capture_step_output, cli_main, resolve
from tests.fault_harness import REPO, env_for, finish, kill_group, step_dir

BUCKET = "soda-step-logs"
HF = "hf_" + "StEpLoGtOkEnAbCdEfGhIjKlMnOpQrSt0123"


@dataclass(frozen=True)
class ChattyConfig:
    out: str
    fail: bool = False
    wait_for: str = ""  # a file the step waits for after printing (unversioned)


def chatty(config: ChattyConfig) -> None:
    """Writes a line on every path a step's output can take; the failing one raises after."""
    tag = "broken" if config.fail else "chatty"
    print(f"{tag}: PRINTED to stdout with token {os.environ['HF_TOKEN']}", flush=True)
    print(f"{tag}: WROTE to stderr", file=sys.stderr, flush=True)
    logging.getLogger("tests.chatty").warning("%s: LOGGED with logging", tag)
    os.write(1, f"{tag}: RAW bytes on fd 1\n".encode())
    subprocess.run(["sh", "-c", f"echo '{tag}: CHILD process output'"], check=True)
    deadline = time.time() + 120
    while config.wait_for and not os.path.exists(config.wait_for) and time.time() < deadline:
        time.sleep(0.1)
    if config.fail:
        raise RuntimeError(f"{tag}: DELIBERATE failure")


def build() -> list[ExecutorStep]:
    wait_for = os.environ.get("SODA_TEST_WAIT_FOR", "")
    return [ExecutorStep("logs/chatty", chatty, ChattyConfig(this_output_path(), wait_for=wait_for)),
            ExecutorStep("logs/broken", chatty, ChattyConfig(this_output_path(), fail=versioned(True)))]


LINES = ("PRINTED to stdout", "WROTE to stderr", "LOGGED with logging", "RAW bytes on fd 1", "CHILD process output")


def start_executor(prefix: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """One executor process on an embedded Ray, its console (stdout and stderr) piped."""
    code = ("import sys; from tests.test_step_logs import build; from pipeline import executor_main; "
            "executor_main(steps=build(), experiment_name='step_logs', argv=sys.argv[1:])")
    full_env = dict(env_for(tempfile.mkdtemp(prefix="probe-")), HF_TOKEN=HF,
                    RAY_TMPDIR=tempfile.mkdtemp(prefix="rayl", dir="/tmp"), **(env or {}))
    return subprocess.Popen([sys.executable, "-c", code, "--prefix", prefix, *args], env=full_env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def run_executor(prefix: str, *args: str, env: dict | None = None) -> tuple[int, str]:
    proc = start_executor(prefix, *args, env=env)
    out = finish(proc, timeout=300)
    return proc.returncode, out


def soda_logs(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.cli", "logs", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO, **(env or {})))


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("quiet") / "prefix")
    rc, out = run_executor(prefix)
    return prefix, rc, out


def test_step_output_goes_to_its_log_not_the_console(quiet_run):
    prefix, rc, out = quiet_run
    assert rc == 1, out[-3000:]  # logs/broken failed
    for tag in ("chatty", "broken"):
        log = open(os.path.join(step_dir(prefix, f"logs/{tag}"), LOG_FILE)).read()
        for line in LINES:
            assert f"{tag}: {line}" in log, (tag, line, log)
            assert f"{tag}: {line}" not in out, (tag, line, out[-3000:])
        assert HF not in log and "with token <HF_TOKEN redacted>" in log, log
        assert log.startswith(f"=== step logs/{tag}-") and re.search(f"step logs/{tag}-[0-9a-f]+ started", log), log
    broken = open(os.path.join(step_dir(prefix, "logs/broken"), LOG_FILE)).read()
    assert "RuntimeError: broken: DELIBERATE failure" in broken, broken
    assert re.search(r"step logs/broken-[0-9a-f]+ failed after", broken), broken
    # The executor's own lines still print: what ran, what failed, and where its log is.
    assert "running logs/chatty-" in out and "succeeded logs/chatty-" in out, out[-3000:]
    assert re.search(r"failed logs/broken-[0-9a-f]+: RuntimeError: broken: DELIBERATE failure", out), out[-3000:]
    assert f"soda logs {step_dir(prefix, 'logs/broken')}" in out, out[-3000:]
    assert HF not in out


def test_soda_logs_prints_a_step_log_by_name_and_by_path(quiet_run):
    prefix, _, _ = quiet_run
    path = step_dir(prefix, "logs/chatty")
    by_name = soda_logs("logs/chatty", "--prefix", prefix)
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout == open(os.path.join(path, LOG_FILE)).read()
    by_path = soda_logs(path)
    assert by_path.returncode == 0 and by_path.stdout == by_name.stdout, by_path.stderr
    followed = soda_logs(path, "--follow")  # the step is no longer RUNNING: prints it all and ends
    assert followed.returncode == 0 and followed.stdout == by_name.stdout, followed.stderr
    missing = soda_logs("logs/nothing", "--prefix", prefix)
    assert missing.returncode != 0 and "no output of step 'logs/nothing'" in missing.stderr, missing.stderr


def test_log_page_links_each_step_log_and_shows_the_error(quiet_run):
    prefix, _, _ = quiet_run
    pages = [n for n in os.listdir(os.path.join(prefix, "experiments")) if n.startswith("step_logs-")
             and n.endswith(".html")]
    assert len(pages) == 1, pages
    page = open(os.path.join(prefix, "experiments", pages[0])).read()
    for tag in ("chatty", "broken"):
        rel = os.path.relpath(os.path.join(step_dir(prefix, f"logs/{tag}"), LOG_FILE),
                              os.path.join(prefix, "experiments"))
        assert f"href='{rel}'" in page, (rel, page)
    assert "RuntimeError: broken: DELIBERATE failure" in page  # shown in the row, not only in the details
    markdown = open(os.path.join(prefix, "experiments", pages[0][:-5] + ".md")).read()
    assert f"]({os.path.relpath(step_dir(prefix, 'logs/broken'), os.path.join(prefix, 'experiments'))}/" \
           f"{LOG_FILE})" in markdown, markdown


def test_verbose_brings_the_step_output_back_to_the_console(tmp_path):
    """Ray forwards worker output to the driver asynchronously (and drops what is pending when the driver
    shuts Ray down), so the step waits, after printing, until the test has seen its lines on the console."""
    prefix, release = str(tmp_path / "prefix"), tmp_path / "release"
    proc = start_executor(prefix, "--verbose", env={"SODA_TEST_WAIT_FOR": str(release)})
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.time() + 240
    while not all(f"chatty: {line}" in "".join(seen) for line in LINES) and time.time() < deadline \
            and reader.is_alive():
        time.sleep(0.2)
    release.write_text("")
    out = "".join(seen)
    for line in LINES:
        assert f"chatty: {line}" in out, (line, out[-3000:])
    try:
        proc.wait(timeout=240)
    finally:
        kill_group(proc)  # whatever the embedded Ray left behind
    reader.join(10)
    out = "".join(seen)
    assert proc.returncode == 1, out[-3000:]
    assert HF not in out and "with token <HF_TOKEN redacted>" in out
    assert "chatty: PRINTED" in open(os.path.join(step_dir(prefix, "logs/chatty"), LOG_FILE)).read()


def test_log_on_gcs_is_written_and_read_back(gcs, tmp_path):
    prefix = f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}"
    rc, out = run_executor(prefix, env=gcs.environment())
    assert rc == 1, out[-3000:]
    assert "chatty: PRINTED" not in out, out[-3000:]
    shown = soda_logs("logs/broken", "--prefix", prefix, env=gcs.environment())
    assert shown.returncode == 0, shown.stderr
    for line in LINES:
        assert f"broken: {line}" in shown.stdout, (line, shown.stdout)
    assert "RuntimeError: broken: DELIBERATE failure" in shown.stdout and HF not in shown.stdout
    path, _ = resolve("logs/broken", prefix)
    assert path.startswith(prefix + "/logs/broken-")
    assert soda_logs(path, env=gcs.environment()).stdout == shown.stdout


def test_object_store_log_keeps_earlier_attempts_and_uploads_at_close(gcs):
    output = f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}/step-abc"
    first = StepLogWriter(output, interval=3600)  # no periodic upload during the test: only close's
    first.write("attempt one\n")
    assert fileio.read_text(output + "/" + LOG_FILE, default=None) is None
    first.close()
    assert fileio.read_text(output + "/" + LOG_FILE, default=None) == "attempt one\n"
    second = StepLogWriter(output, interval=3600)
    second.write("attempt two\n")
    second.close()
    assert fileio.read_text(output + "/" + LOG_FILE, default=None) == "attempt one\nattempt two\n"


def test_capture_redacts_a_secret_split_across_writes_and_restores_the_descriptors(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HF_TOKEN", HF)
    output = str(tmp_path / "out")
    with capture_step_output(output, "unit/step"):
        os.write(1, f"split {HF[:10]}".encode())
        os.write(1, f"{HF[10:]} end\n".encode())
        os.write(2, b"unfinished line")
    os.write(1, b"after the step\n")
    log = open(os.path.join(output, LOG_FILE)).read()
    assert "split <HF_TOKEN redacted> end\n" in log and "unfinished line" in log and HF not in log, log
    assert "after the step" not in log
    console = capfd.readouterr()
    assert "split <HF_TOKEN redacted> end" in console.out and "after the step" in console.out  # the tee
    assert "unfinished line" in console.err and HF not in console.out


def test_name_resolves_to_the_most_recently_run_output(tmp_path, capsys):
    prefix = str(tmp_path)
    for digest, when in (("aaaa11", 100.0), ("bbbb22", 200.0)):
        path = os.path.join(prefix, "tokenized", f"corpus-{digest}")
        storage.write_json_atomic(os.path.join(path, storage.STATUS_FILE), {"status": "SUCCESS", "time": when})
        fileio.atomic_write_text(os.path.join(path, LOG_FILE), f"log of {digest}\n")
    os.makedirs(os.path.join(prefix, "tokenized", "corpus-extra-cccc33"))  # another step's name
    path, note = resolve("tokenized/corpus", prefix)
    assert path.endswith("corpus-bbbb22") and "2 outputs" in note and "corpus-aaaa11" in note, note
    assert cli_main(["tokenized/corpus", "--prefix", prefix]) == 0
    shown = capsys.readouterr()
    assert shown.out == "log of bbbb22\n" and "most recently run" in shown.err
    no_log = os.path.join(prefix, "tokenized", "corpus-extra-cccc33")
    assert cli_main([no_log]) == 1 and "no log at" in capsys.readouterr().err


def test_follow_prints_new_lines_until_the_step_is_no_longer_running(tmp_path, capsys):
    output = str(tmp_path / "logs" / "live-abc123")
    storage.write_json_atomic(os.path.join(output, storage.STATUS_FILE), {"status": "RUNNING", "time": 1.0})
    with open(os.path.join(output, LOG_FILE), "w") as f:
        f.write("line one\nhalf")
    result: list[int] = []
    follower = threading.Thread(target=lambda: result.append(cli_main([output, "--follow", "--interval", "0.05"])))
    follower.start()
    with open(os.path.join(output, LOG_FILE), "a") as f:
        f.write(" a line\nline two\n")
    storage.write_json_atomic(os.path.join(output, storage.STATUS_FILE), {"status": "FAILED", "time": 2.0})
    follower.join(60)
    assert result == [0] and capsys.readouterr().out == "line one\nhalf a line\nline two\n"
