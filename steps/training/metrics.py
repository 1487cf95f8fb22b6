"""A Levanter tracker that writes every logged step as one JSON line under the run's output.

Registered as tracker type `soda_jsonl` (a `levanter.tracker.TrackerConfig` subclass), so the
trainer calls it like W&B: whatever Levanter logs at a step (train/loss, eval/loss, throughput,
learning rate, ...) is merged into one row `{"step": s, ...scalars}`, written when the next step
starts and at finish. Only JAX process 0 writes.

Where rows go (read them all, in order, with `read_metrics(output_dir)`):

- local disk: appended to `{output}/metrics.jsonl` and flushed row by row, so a run killed with -9
  keeps what it logged.
- object stores (gs://, s3://; they cannot append), or any output with `chunked=True`: immutable
  chunks `{output}/metrics/part-000000.jsonl`, `part-000001.jsonl`, ..., each holding the rows since
  the previous chunk, written every `flush_every_s` seconds or `flush_every_rows` rows and at finish.
  A chunk is never rewritten, so the bytes written over a run are the bytes of its rows (the old
  layout rewrote the whole file every flush: quadratic in the run's length) and the tracker holds
  at most one chunk's rows. A kill loses the rows not yet in a chunk (at most `flush_every_s`).
  An older output's single `metrics.jsonl` is read first, then the chunks (fetched concurrently).

Local runs keep the single appended file rather than sharing the chunk layout: it loses nothing on
kill -9, and tools that read `metrics.jsonl` line by line keep working there.

On resume the new session's first row supersedes rows at or after its step (they were logged after
the checkpoint the run restarted from): locally they are dropped from `metrics.jsonl`; on object
stores chunks stay as written, numbering continues after the last one, and `read_metrics` drops a
row whenever a later row has a step at or before it. A line is appended to
`{output}/train_sessions.jsonl`: {"session": n, "first_step": s, "time": ..., "dropped_rows": k}.

Every line is strict JSON: a NaN or infinite value (a diverged loss) is written as null, and the row
counts it, e.g. `"non_finite": {"train/loss": {"nan": 1}}` (see pipeline.strict_json).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from typing import Any, Iterator, Mapping, Optional

from pipeline import strict_json
from pipeline.fileio import atomic_write_bytes, exists, join, temp_path_for, url_to_fs
from pipeline.progress import report_progress

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
METRICS_CHUNKS_DIR = "metrics"
SESSIONS_FILE = "train_sessions.jsonl"
_CHUNK_RE = re.compile(r"^part-(\d+)\.jsonl$")
_READ_BATCH = 256  # chunks fetched concurrently per request when reading back


def chunk_name(index: int) -> str:
    return f"part-{index:06d}.jsonl"


def _parse_lines(text: str, url: str) -> Iterator[dict]:
    for line in text.splitlines():
        line = line.strip()
        if line:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s: skipping a torn line (a killed writer): %.60r", url, line)


def read_jsonl(url: str) -> list[dict]:
    """Rows of a JSON-lines file (local or fsspec URL); [] when missing. A torn last line is skipped."""
    return list(_iter_jsonl(url))


def _iter_jsonl(url: str) -> Iterator[dict]:
    if not exists(url):
        return
    fs, p = url_to_fs(url)
    with fs.open(p, "rt") as f:
        for line in f:
            yield from _parse_lines(line, url)


def list_chunks(output_dir: str) -> list[tuple[int, str]]:
    """(number, url) of the metric chunks under `{output_dir}/metrics/`, by number; [] when none."""
    url = join(output_dir, METRICS_CHUNKS_DIR)
    fs, path = url_to_fs(url)
    fs.invalidate_cache(path)  # another process (the previous session) may have written chunks
    try:
        names = [os.path.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), join(url, name)) for name in names if (m := _CHUNK_RE.match(name))]
    return sorted(found)


def iter_metric_rows(output_dir: str) -> Iterator[dict]:
    """Every row as written, in write order: `metrics.jsonl` (local runs, older outputs), then the
    chunks by number. Rows a resume superseded are still here; `read_metrics` drops them."""
    yield from _iter_jsonl(join(output_dir, METRICS_FILE))
    chunks = [url for _, url in list_chunks(output_dir)]
    if not chunks:
        return
    fs, _ = url_to_fs(chunks[0])
    for i in range(0, len(chunks), _READ_BATCH):
        batch = chunks[i:i + _READ_BATCH]
        paths = [url_to_fs(u)[1] for u in batch]
        contents = fs.cat(paths)  # concurrent on object stores: thousands of small chunks read fast
        for url, path in zip(batch, paths):
            yield from _parse_lines(contents[path].decode(), url)


def _supersede(kept: list, step: int, step_of=lambda r: r.get("step", -1)) -> None:
    """Drop the tail of `kept` (ordered by step) at or after `step`: a resumed session re-logs it."""
    while kept and step_of(kept[-1]) >= step:
        kept.pop()


def read_metrics(output_dir: str) -> list[dict]:
    """The run's rows in step order, one per step: a row logged before a resume at or after the
    resumed session's first step is dropped (the later session's row wins)."""
    kept: list[dict] = []
    for row in iter_metric_rows(output_dir):
        _supersede(kept, row.get("step", -1))
        kept.append(row)
    return kept


def _scalar(value: Any) -> Optional[float | int | bool | str]:
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value  # a NaN or infinity is written as null, counted in the row's `non_finite`
    try:
        import numpy as np

        arr = np.asarray(value)
    except Exception:
        return None
    if arr.shape != () or arr.dtype.kind not in "biuf":
        return None
    return arr.item()


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        name = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, name))
        else:
            s = _scalar(v)
            if s is not None:
                out[name] = s
    return out


def _report_progress(row: dict) -> None:
    """The train step's progress for the executor's console (pipeline.progress): step k/N, loss, tokens/s."""
    fraction = row.get("run_progress")  # step / num_train_steps, in Levanter's train-step rows
    if not isinstance(fraction, (int, float)) or fraction <= 0:
        return
    total = round(row["step"] / fraction)
    detail = {"loss": row.get("train/loss"), "tokens_per_s": row.get("throughput/tokens_per_second")}
    report_progress(row["step"], total, "steps", **{k: v for k, v in detail.items() if v is not None})


class JsonlMetricsTracker:
    """Implements levanter.tracker.Tracker (its base class is mixed in by `make_tracker`).

    Holds the row of the current step and, when chunked, the lines not yet in a chunk
    (at most `flush_every_rows`); nothing else grows with the run."""

    name = "soda_jsonl"

    def __init__(self, output_dir: str, flush_every_s: float = 60.0, flush_every_rows: int = 1000,
                 chunked: Optional[bool] = None):
        self.output_dir = output_dir
        self.path = join(output_dir, METRICS_FILE)
        local = "://" not in output_dir or output_dir.startswith("file://")
        self.chunked = not local if chunked is None else chunked  # chunks: object stores (or when asked)
        self.flush_every_s = flush_every_s
        self.flush_every_rows = flush_every_rows
        self._step: Optional[int] = None
        self._row: dict[str, Any] = {}
        self._pending: list[str] = []  # lines not yet in a chunk (chunked only)
        self._next_chunk = 0
        self._started = False
        self._last_flush = time.monotonic()

    # -- Tracker API
    def log_hyperparameters(self, hparams: dict[str, Any]):
        pass

    def log(self, metrics: Mapping[str, Any], *, step: Optional[int], commit: Optional[bool] = None):
        if step is None:
            return
        step = int(step)
        if self._step is not None and step != self._step:
            self._emit()
        self._step = step
        self._row.update(_flatten(metrics))

    def log_summary(self, metrics: Mapping[str, Any]):
        pass

    def log_artifact(self, artifact_path, *, name: Optional[str] = None, type: Optional[str] = None):
        pass

    def finish(self):
        self._emit()
        if self.chunked:
            self._flush_chunk()

    # -- internals
    def _start_session(self, first_step: int) -> None:
        dropped = self._resume_chunks(first_step) if self.chunked else self._drop_local_from(first_step)
        sessions_url = join(self.output_dir, SESSIONS_FILE)
        sessions = read_jsonl(sessions_url)
        sessions.append({"session": len(sessions), "first_step": first_step, "time": time.time(),
                         "dropped_rows": dropped})
        self._write_all(sessions_url, sessions)
        self._started = True

    def _drop_local_from(self, first_step: int) -> int:
        """Rewrite local `metrics.jsonl` without rows at or after `first_step`, streaming line by line."""
        if not os.path.exists(self.path):
            return 0
        tmp, dropped, torn = temp_path_for(self.path), 0, 0
        with open(self.path) as src, open(tmp, "w") as dst:
            for line in src:
                rows = list(_parse_lines(line, self.path))
                if rows and rows[0].get("step", -1) < first_step:
                    dst.write(line if line.endswith("\n") else line + "\n")
                elif rows:
                    dropped += 1
                elif line.strip():
                    torn += 1  # a killed writer's half line: dropped, so the next append starts a line
        if dropped or torn:
            os.replace(tmp, self.path)
        else:
            os.remove(tmp)
        return dropped

    def _resume_chunks(self, first_step: int) -> int:
        """Continue chunk numbering after the existing chunks; count (not rewrite) the rows this session
        supersedes. Only steps are held while counting, not rows."""
        chunks = list_chunks(self.output_dir)
        self._next_chunk = chunks[-1][0] + 1 if chunks else 0
        steps: list[int] = []
        for row in iter_metric_rows(self.output_dir):
            _supersede(steps, row.get("step", -1), step_of=lambda s: s)
            steps.append(row.get("step", -1))
        return sum(1 for s in steps if s >= first_step)

    def _emit(self) -> None:
        if self._step is None or not self._row:
            return
        row = {"step": self._step, **self._row}
        self._row = {}
        _report_progress(row)
        if not self._started:
            self._start_session(row["step"])
        line = strict_json.dumps(row) + "\n"
        if self.chunked:
            self._pending.append(line)
            if (len(self._pending) >= self.flush_every_rows
                    or time.monotonic() - self._last_flush > self.flush_every_s):
                self._flush_chunk()
        else:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path, "a") as f:
                f.write(line)
                f.flush()

    def _flush_chunk(self) -> None:
        """Write the pending lines as the next numbered chunk (never an existing one); none when empty."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        url = join(self.output_dir, METRICS_CHUNKS_DIR, chunk_name(self._next_chunk))
        atomic_write_bytes(url, "".join(self._pending).encode())
        self._next_chunk += 1
        self._pending = []

    @staticmethod
    def _write_all(url: str, rows: list[dict]) -> None:
        atomic_write_bytes(url, "".join(strict_json.dumps(r) + "\n" for r in rows).encode())


def _register():
    """Register `soda_jsonl` with Levanter's tracker registry (idempotent); returns the config class."""
    from levanter.tracker.tracker import NoopTracker, Tracker, TrackerConfig

    existing = TrackerConfig.get_known_choices().get("soda_jsonl") if hasattr(TrackerConfig, "get_known_choices") else None
    if existing is not None:
        return existing

    class _Tracker(JsonlMetricsTracker, Tracker):
        pass

    @TrackerConfig.register_subclass("soda_jsonl")
    @dataclasses.dataclass
    class JsonlMetricsTrackerConfig(TrackerConfig):
        output_dir: str = ""
        flush_every_s: float = 60.0
        flush_every_rows: int = 1000

        def init(self, run_id: Optional[str]):
            import jax

            if jax.process_index() != 0:
                return NoopTracker()
            return _Tracker(self.output_dir, self.flush_every_s, self.flush_every_rows)

    return JsonlMetricsTrackerConfig


def tracker_config(output_dir: str, flush_every_s: float = 60.0, flush_every_rows: int = 1000):
    """A Levanter TrackerConfig writing the run's metrics under `output_dir` (see the module docstring)."""
    return _register()(output_dir=output_dir, flush_every_s=flush_every_s, flush_every_rows=flush_every_rows)
