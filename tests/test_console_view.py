"""The live console: on a terminal one view redrawn in place (totals, running steps with elapsed time and
the progress they report, failures with their logs) that ends as a short summary; elsewhere plain lines,
one per state change, with no escape sequences. Also: progress reports are throttled files beside the
step's status, and a Ray task a step starts through `in_step_log` logs into the step's log."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from dataclasses import dataclass

import pytest

from pipeline import ExecutorStep, output_path_of, this_output_path, versioned
from pipeline.progress import describe, read_progress, report_progress, step_context
from pipeline.step_log import LOG_FILE, in_step_log
from tests.fault_harness import REPO, env_for, finish, step_dir

ROWS, COLS = 40, 160
NESTED = "NESTED ray task output"


@dataclass(frozen=True)
class ViewConfig:
    out: str
    mode: str  # progress | fail | nested | quick
    hold: float = 0.0  # unversioned: seconds the progress step stays running after its report


def _nested_task(text: str) -> str:
    print(f"{text} (printed)", flush=True)
    os.write(2, f"{text} (fd 2)\n".encode())
    return "ok"


def view_step(config: ViewConfig) -> None:
    if config.mode == "progress":
        report_progress(3, 8, "shards", loss=2.5)
        time.sleep(config.hold)
    elif config.mode == "fail":
        raise RuntimeError("view test: DELIBERATE failure")
    elif config.mode == "nested":
        import ray

        assert ray.get(ray.remote(in_step_log(_nested_task)).remote(NESTED)) == "ok"


def build() -> list[ExecutorStep]:
    hold = float(os.environ.get("SODA_TEST_HOLD", "0"))
    progress = ExecutorStep("raw/progress", view_step, ViewConfig(this_output_path(), versioned("progress"), hold))
    broken = ExecutorStep("raw/broken", view_step, ViewConfig(this_output_path(), versioned("fail")))
    nested = ExecutorStep("raw/nested", view_step, ViewConfig(this_output_path(), versioned("nested")))
    after = ExecutorStep("analysis/after", view_step,
                         ViewConfig(output_path_of(progress, "x"), versioned("quick")))
    blocked = ExecutorStep("analysis/blocked", view_step,
                           ViewConfig(output_path_of(broken, "x"), versioned("quick")))
    return [progress, broken, nested, after, blocked]


def _command(prefix: str, *args: str) -> list[str]:
    code = ("import sys; from tests.test_console_view import build; from pipeline import executor_main; "
            "executor_main(steps=build(), experiment_name='console_view', argv=sys.argv[1:])")
    return [sys.executable, "-c", code, "--prefix", prefix, "--max-concurrent", "2", *args]


def _env(**extra: str) -> dict[str, str]:
    env = dict(env_for(tempfile.mkdtemp(prefix="probe-")), RAY_TMPDIR=tempfile.mkdtemp(prefix="rayv", dir="/tmp"),
               TERM="xterm-256color", COLUMNS=str(COLS), LINES=str(ROWS), **extra)
    for key in ("PIPELINE_CONSOLE", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(key, None)
    return env


def run_in_pty(cmd: list[str], env: dict[str, str], timeout: float = 150) -> tuple[int, bytes]:
    """Run `cmd` with stdin, stdout and stderr on a pseudo-terminal of ROWS x COLS; all bytes it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, start_new_session=True)
    os.close(slave)
    data = bytearray()
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every holder of the terminal's other end is gone
                    break
                if not chunk:
                    break
                data += chunk
            elif proc.poll() is not None and not select.select([master], [], [], 0.2)[0]:
                break
        else:
            proc.kill()
            raise AssertionError(f"still running after {timeout}s; output so far:\n{bytes(data[-4000:])!r}")
    finally:
        os.close(master)
    return proc.wait(timeout=30), bytes(data)


_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def screen(data: bytes, rows: int = ROWS) -> list[str]:
    """What a terminal shows after `data` (the scrollback included): text, CR, LF, cursor up, erase line."""
    lines: list[list[str]] = [[]]
    row = col = 0
    text = data.decode("utf-8", "replace")
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            m = _CSI.match(text, i)
            if m:
                args, op = m.group(1), m.group(2)
                n = int(args) if args.isdigit() else 1
                if op == "A":
                    row = max(0, row - n)
                elif op == "K":
                    if args in ("2",):
                        lines[row] = []
                    elif args in ("", "0"):
                        del lines[row][col:]
                elif op == "G":
                    col = max(0, n - 1)
                i = m.end()
                continue
            i += 1
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
            col = 0
            while len(lines) <= row:
                lines.append([])
        elif ch >= " ":
            line = lines[row]
            while len(line) < col:
                line.append(" ")
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
        i += 1
    return ["".join(line).rstrip() for line in lines]


@pytest.fixture(scope="module")
def tty_run(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("tty") / "prefix")
    started = time.time()
    rc, data = run_in_pty(_command(prefix), _env(SODA_TEST_HOLD="7"))
    return prefix, rc, data, time.time() - started


def test_terminal_shows_one_view_with_totals_progress_and_failures(tty_run):
    prefix, rc, data, _ = tty_run
    text = data.decode("utf-8", "replace")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert rc == 1, plain[-3000:]  # raw/broken failed
    # A frame with the totals while steps ran, and the progress step running with its elapsed time and report.
    assert re.search(r"console_view: \d/5 done, [012] running, (\d queued, )?\d waiting, [01] failed", plain), plain[-3000:]
    assert re.search(r"running\s+raw/progress-[0-9a-f]{8}\s+\d+s\s+3/8 shards · loss 2\.5", plain), plain[-3000:]
    # The failure: one line naming the step and its log file.
    broken = step_dir(prefix, "raw/broken")
    assert re.search(rf"failed\s+{re.escape(os.path.join(broken, LOG_FILE))}\s+"
                     r"RuntimeError: view test: DELIBERATE failure", plain), plain[-3000:]
    # The view replaced the executor's per-step lines.
    assert not re.search(r"INFO pipeline\.executor: (running|succeeded) ", plain), plain[-3000:]
    final = [line for line in screen(data) if line.strip()]
    summary = "\n".join(final)
    assert "console_view: 5 steps: 3 succeeded, 0 cached, 1 failed, 1 blocked, in " in summary, summary
    assert re.search(rf"failed\s+{re.escape(os.path.join(broken, LOG_FILE))}", summary), summary
    assert re.search(rf"the log {re.escape(prefix)}/experiments/console_view-[0-9a-f]+\.html", summary), summary


def test_terminal_view_updates_in_place_and_the_final_screen_is_short(tty_run):
    _, _, data, seconds = tty_run
    assert seconds < 60, seconds
    # In place: the view moves the cursor up over its previous frame and erases it, again and again ...
    ups = len(re.findall(rb"\x1b\[\d*A", data))
    assert ups >= 10, (ups, data[-2000:])
    frames = len(re.findall(rb"console_view: \d/5 done", data))
    assert frames >= 5, (frames, data[-2000:])
    # ... so what stays on the screen is a handful of lines, not one per frame or per state change.
    final = [line for line in screen(data) if line.strip()]
    assert len(final) <= 15, "\n".join(final)
    assert sum("done," in line for line in final) <= 1, "\n".join(final)


def test_a_nested_ray_task_logs_to_its_step_log_not_the_console(tty_run):
    prefix, _, data, _ = tty_run
    log = open(os.path.join(step_dir(prefix, "raw/nested"), LOG_FILE)).read()
    assert f"{NESTED} (printed)" in log and f"{NESTED} (fd 2)" in log, log
    assert re.search(r"--- step raw/nested-[0-9a-f]{8}: task _nested_task started", log), log
    assert NESTED.encode() not in data


def test_plain_lines_when_not_a_terminal(tmp_path):
    prefix = str(tmp_path / "prefix")
    proc = subprocess.Popen(_command(prefix), env=_env(SODA_TEST_HOLD="0"), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = finish(proc, timeout=150)
    assert proc.returncode == 1, out[-3000:]
    assert "\x1b" not in out, out[-3000:]
    lines = [line for line in out.splitlines() if " pipeline.executor: " in line]
    kinds = [re.search(r"pipeline\.executor: (\w+)", line).group(1) for line in lines]
    # One line per state change: 4 steps started, 3 succeeded, 1 failed; then the run's summary line.
    assert sorted(kinds) == sorted(["running"] * 4 + ["succeeded"] * 3 + ["failed"] + ["5"]), "\n".join(lines)
    for name in ("raw/progress", "raw/broken", "raw/nested", "analysis/after"):
        assert sum(f"running {name}-" in line for line in lines) == 1, "\n".join(lines)
    assert "console_view: " not in out  # no view


def test_progress_reports_are_throttled_files_beside_the_status(tmp_path, monkeypatch):
    out = str(tmp_path / "step")
    report_progress(1, 2, "files")  # outside a step: nothing
    assert not os.path.exists(out)
    monkeypatch.setattr("pipeline.progress.MIN_INTERVAL", 0.5)
    with step_context(out, "raw/x-1234"):
        started = time.time()
        report_progress(1, 10, "files")
        first = read_progress(out)
        assert first is not None and describe(first) == "1/10 files", first
        for k in range(2, 9):  # within the interval: held back, only the latest lands, a little later
            report_progress(k, 10, "files", tokens_per_s=41234.5, loss=float("nan"))
        assert describe(read_progress(out)) == "1/10 files"
        time.sleep(0.8)
        assert describe(read_progress(out)) == "8/10 files · tokens_per_s 4.12e+04 · loss nan"
        report_progress(10, 10, "files")
    assert describe(read_progress(out)) == "10/10 files"  # the step's end writes the last report
    assert read_progress(out, since=time.time() + 5) is None  # an earlier attempt's report is not shown
    assert json.load(open(os.path.join(out, ".executor_progress")))["time"] >= started
    # The step's own task announces itself at once: the view then stops saying it waits for a worker.
    other = str(tmp_path / "announced")
    with step_context(other, "raw/y-1234", announce=True):
        report = read_progress(other)
        assert report is not None and report["started"] >= started and describe(report) == "", report


def test_the_train_tracker_reports_step_loss_and_throughput(tmp_path):
    from steps.training.metrics import JsonlMetricsTracker

    out = str(tmp_path / "train")
    tracker = JsonlMetricsTracker(out)
    with step_context(out, "checkpoints/x-1234"):
        tracker.log({"train/loss": 7.25, "global_step": 4, "run_progress": 0.4}, step=4)  # as Levanter logs them
        tracker.log({"throughput/tokens_per_second": 12345.0}, step=4)
        tracker.finish()
    assert describe(read_progress(out)) == "4/10 steps · loss 7.25 · tokens_per_s 12345"


def test_view_lists_working_steps_before_queued_ones_and_counts_both(tmp_path):
    from pipeline.console import RunView

    view = RunView("exp", total=4, poll_interval=0.01)
    now = view.started
    for name in ("raw/queued-1111", "raw/working-2222"):
        view.step_running(name, str(tmp_path / name), now)
    with step_context(str(tmp_path / "raw/working-2222"), "raw/working-2222", announce=True):
        report_progress(2, 5, "files copied")
    view.step_ended("raw/done-3333", "cached")
    head, first, second = [text for _, text in view.lines(now=now + 75)]
    assert head == "exp: 1/4 done, 1 running, 1 queued, 1 waiting, 0 failed  [1:15]", head
    assert re.fullmatch(r"  running  raw/working-2222\s+1:15  2/5 files copied", first), first
    assert re.fullmatch(r"  running  raw/queued-1111\s+1:15  waiting for a worker", second), second
