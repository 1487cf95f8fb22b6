"""Small shared helpers for shard-parallel steps: listing inputs, atomic writes, and running one
task per shard on Ray (when Ray is initialised) or in-process (unit tests, laptops).

Paths are local paths or fsspec URLs (gs://...). Nothing heavy is imported at module level.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
import zlib
from typing import Any, Callable, Iterable, Optional, Sequence

from pipeline import strict_json

logger = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[")


def fs_and_path(url: str):
    """(filesystem, path-inside-it) for a local path or fsspec URL."""
    import fsspec

    return fsspec.core.url_to_fs(url)


def _unstrip(url: str, fs, path: str) -> str:
    """Give back a URL of the same kind as `url` for `path` found on `fs`."""
    if "://" not in url:
        return path
    protocol = url.split("://", 1)[0]
    return path if "://" in path else f"{protocol}://{path}"


def list_input_files(
    inputs: str | Sequence[str], suffixes: Sequence[str], what: str = "input"
) -> list[str]:
    """Expand files, directories (searched recursively) and globs into a sorted, de-duplicated
    list of files ending in one of `suffixes`. Raises FileNotFoundError when nothing matches."""
    specs = [inputs] if isinstance(inputs, str) else list(inputs)
    found: set[str] = set()
    for spec in specs:
        fs, path = fs_and_path(spec)
        if any(c in spec for c in _GLOB_CHARS):
            candidates = fs.glob(path)
        elif fs.isdir(path):
            candidates = fs.find(path)
        elif fs.exists(path):
            candidates = [path]
        else:
            raise FileNotFoundError(f"{what} path {spec!r} does not exist")
        for cand in candidates:
            name = os.path.basename(cand)
            if name.startswith(".") or name.startswith("_"):
                continue
            if any(name.endswith(s) for s in suffixes) and not fs.isdir(cand):
                found.add(_unstrip(spec, fs, cand))
    if not found:
        raise FileNotFoundError(
            f"no {what} files ending in {', '.join(suffixes)} under {specs!r}; "
            "pass a file, a directory or a glob"
        )
    return sorted(found)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def exists(url: str) -> bool:
    fs, path = fs_and_path(url)
    return fs.exists(path)


def local_copy(url: str) -> str:
    """A local directory holding the files of directory `url` (returned as is when already local),
    for libraries that only read real files (transformers' `from_pretrained`, tokenizers).

    The copy goes to a per-process cache keyed by the URL, so a process copies each directory
    once; it is made under a temporary name and renamed, so a half-copied directory is never used.
    """
    if "://" not in url or url.startswith("file://"):
        return url[len("file://"):] if url.startswith("file://") else url
    import hashlib
    import tempfile

    root = os.path.join(tempfile.gettempdir(), f"soda-local-copies-{os.getpid()}")
    target = os.path.join(root, hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16])
    if os.path.isdir(target):
        return target
    fs, path = fs_and_path(url)
    if not fs.isdir(path):
        raise FileNotFoundError(f"{url} is not a directory (or does not exist); expected a directory to copy")
    os.makedirs(root, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=".partial-", dir=root)
    fs.get(path.rstrip("/") + "/", partial + "/", recursive=True)
    os.replace(partial, target)
    logger.info("copied %s -> %s", url, target)
    return target


def temp_path_for(path: str) -> str:
    """A hidden sibling of `path` to write before renaming: `.{name}.tmp-{random}`.

    Hidden, so input listings skip it; `remove_stale_temps` finds those a crash left behind.
    """
    parent, name = os.path.split(path)
    return os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex}") if parent else f".{name}.tmp-{uuid.uuid4().hex}"


def remove_stale_temps(url_dir: str, name_prefix: str) -> None:
    """Delete temp files (see `temp_path_for`) for outputs whose names start with `name_prefix`."""
    fs, path = fs_and_path(url_dir)
    for stale in fs.glob(f"{path.rstrip('/')}/.{name_prefix}*.tmp-*"):
        fs.rm(stale)


def atomic_write_bytes(url: str, data: bytes) -> None:
    """Write `data` to `url` so that readers see either nothing or the whole file."""
    fs, path = fs_and_path(url)
    parent = os.path.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = temp_path_for(path)
    with fs.open(tmp, "wb") as f:
        f.write(data)
    try:
        fs.mv(tmp, path)
    except Exception:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise


def atomic_write_json(url: str, obj: Any) -> None:
    """Write `obj` as strict JSON: a NaN or infinity as null, counted in `non_finite` (`pipeline.strict_json`)."""
    atomic_write_bytes(url, (strict_json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(url: str) -> Any:
    fs, path = fs_and_path(url)
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


def finished_parts(inputs: Sequence[str], stats_file: Callable[[int], str],
                   output: Callable[[int], str]) -> tuple[list[int], dict[int, Any]]:
    """Split input parts into those to do and those already done (their stats, by index).

    Part i is done when `output(i)` exists and `stats_file(i)` records the same input path, so a
    changed input list or a crash between the two writes redoes the part.
    """
    todo: list[int] = []
    done: dict[int, Any] = {}
    for i, path in enumerate(inputs):
        if exists(stats_file(i)) and exists(output(i)):
            record = read_json(stats_file(i))
            if record.get("input") == path:
                done[i] = record
                continue
        todo.append(i)
    return todo, done


# Transient errors: a flaky object store or network (gcsfs, HTTP) fails a read or write that works
# when tried again. A missing file, a permission or a bad value fails the same way every time.
TRANSIENT_ERRORS = (OSError, TimeoutError, ConnectionError)
PERMANENT_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, ValueError)
RETRY_DELAY_S = 1.0  # the default first wait between tries; it doubles after each
RESUME_HINT = "rerun the step to resume (finished work is kept)"


class RetriesExhausted(OSError):
    """A transient error that came back on every try."""


def is_transient(exc: BaseException, permanent: tuple[type[BaseException], ...] = ()) -> bool:
    """Whether `exc` is worth another try: an OSError (timeouts and connection errors included)
    that is none of PERMANENT_ERRORS or `permanent`."""
    return isinstance(exc, TRANSIENT_ERRORS) and not isinstance(exc, PERMANENT_ERRORS + tuple(permanent))


def with_retries(call: Callable[[], Any], what: str, *, attempts: int = 3, delay_s: float = RETRY_DELAY_S,
                 permanent: tuple[type[BaseException], ...] = (), resume: str = RESUME_HINT) -> Any:
    """`call()`, tried up to `attempts` times on a transient error (`is_transient`), waiting
    `delay_s`, 2 x `delay_s`, 4 x `delay_s`, ... between tries. A permanent error is raised at once;
    the last transient one as RetriesExhausted naming `what` and saying `resume`."""
    import time

    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc, permanent):
                raise
            if attempt >= attempts:
                raise RetriesExhausted(f"{what}: failed {attempts} times, last with {type(exc).__name__}: "
                                       f"{exc}; {resume}") from exc
            wait = delay_s * 2 ** (attempt - 1)
            logger.warning("%s: %s: %s (try %d of %d); retrying in %.1f s", what, type(exc).__name__, exc,
                           attempt, attempts, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _run_job(fn: Callable[..., Any], attempts: int, delay_s: float, what: str, *job: Any) -> Any:
    """One job of `run_shards`, in its task or thread: `fn(*job)`, with transient retries."""
    if attempts <= 1:
        return fn(*job)
    return with_retries(lambda: fn(*job), what, attempts=attempts, delay_s=delay_s)


class ShardsFailed(RuntimeError):
    """Jobs of `run_shards` failed with errors no `type(first error)(message)` could carry."""


def _failure(desc: str, names: list[str], failures: list[tuple[int, BaseException, BaseException]],
             total: int) -> BaseException:
    """One error for the failed jobs ((index, error, error to chain), first failure first): of the
    first error's type when it can carry the message, else ShardsFailed."""
    failed = sorted(i for i, _, _ in failures)
    listed = ", ".join(names[i] for i in failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
    first = failures[0][1]
    message = (f"{desc}: {len(failed)} of {total} job(s) failed: {listed}; the first with "
               f"{type(first).__name__}: {first} -- the other jobs ran to the end; fix the cause and rerun "
               "the step (it resumes from the jobs that finished)")
    try:
        err = type(first)(message)
    except Exception:  # an exception class with another constructor
        err = None
    if not isinstance(err, Exception) or str(err) != message:
        err = ShardsFailed(message)
    err.failed_jobs = [names[i] for i in failed]
    return err


def run_shards(
    fn: Callable[..., Any],
    jobs: Iterable[tuple],
    *,
    desc: str,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    memory_gb: Optional[float] = None,
    max_retries: int = 1,
    local_threads: int = 1,
    on_result: Optional[Callable[[int, Any], None]] = None,
    attempts: int = 1,
    retry_delay_s: float = RETRY_DELAY_S,
    job_names: Optional[Sequence[str]] = None,
) -> list[Any]:
    """Run `fn(*job)` for every job and return the results in job order.

    With Ray initialised, each job is one Ray task (`num_cpus`, `num_gpus`, `memory_gb` per task,
    retried `max_retries` times if its worker dies);
    otherwise the jobs run in this process, one after another or on `local_threads` threads (for
    I/O-bound jobs). A job that raises a transient error (`is_transient`) is tried again, up to
    `attempts` times in all, inside its task or thread (`with_retries`, first wait `retry_delay_s`).

    A tqdm bar counts shards; `on_result(job_index, result)` is called in this process as each job
    finishes. When jobs fail, the others still run to the end (what they finished is what a rerun
    resumes from); then one error names the failed jobs (`job_names[i]`, else "job i") and chains
    the first failure. Ctrl-C (any BaseException here) cancels the Ray tasks and threads not done.
    """
    from tqdm.auto import tqdm

    jobs = list(jobs)
    if not jobs:
        return []
    names = list(job_names) if job_names is not None else [f"job {i}" for i in range(len(jobs))]
    if len(names) != len(jobs):
        raise ValueError(f"run_shards({desc!r}): {len(names)} job_names for {len(jobs)} jobs")
    calls = [(fn, attempts, retry_delay_s, f"{desc}: {names[i]}", *job) for i, job in enumerate(jobs)]
    try:
        import ray

        use_ray = ray.is_initialized()
    except ImportError:  # pragma: no cover - ray is a pinned dependency
        use_ray = False

    results: list[Any] = [None] * len(jobs)
    failures: list[tuple[int, BaseException, BaseException]] = []

    def finish(i: int, bar) -> None:
        bar.update(1)
        if on_result:
            on_result(i, results[i])

    def failed(i: int, exc: BaseException, chained: Optional[BaseException] = None, bar=None) -> None:
        failures.append((i, exc, chained or exc))
        logger.error("%s: %s failed: %s: %s", desc, names[i], type(exc).__name__, exc)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(failed=len(failures))

    if not use_ray and local_threads <= 1:
        with tqdm(total=len(jobs), desc=desc, unit="shard") as bar:
            for i, call in enumerate(calls):
                try:
                    results[i] = _run_job(*call)
                except Exception as exc:
                    failed(i, exc, bar=bar)
                    continue
                finish(i, bar)
    elif not use_ray:
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        pool = ThreadPoolExecutor(local_threads)
        futures = {pool.submit(_run_job, *call): i for i, call in enumerate(calls)}
        waiting = set(futures)
        try:
            with tqdm(total=len(jobs), desc=desc, unit="shard") as bar:
                while waiting:
                    finished, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        i = futures[fut]
                        if fut.exception() is not None:
                            failed(i, fut.exception(), bar=bar)
                            continue
                        results[i] = fut.result()
                        finish(i, bar)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # running threads end with their job
            raise
        pool.shutdown(wait=True)
    else:
        options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": max_retries,
                                   "name": getattr(fn, "__name__", "run_shards_job")}
        if memory_gb:
            options["memory"] = int(memory_gb * 1024**3)
        remote_fn = ray.remote(_run_job).options(**options)
        refs = [remote_fn.remote(*call) for call in calls]
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        try:
            with tqdm(total=len(refs), desc=desc, unit="shard") as bar:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    for ref in done:
                        i = index[ref]
                        try:
                            results[i] = ray.get(ref)
                        except Exception as exc:  # the task's error (RayTaskError), or its worker died
                            cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause else exc
                            failed(i, cause, exc, bar=bar)
                            continue
                        finish(i, bar)
        except BaseException:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception as exc:  # already finished, or Ray is going down
                    logger.debug("%s: cancelling a task: %s", desc, exc)
            raise
    if failures:
        raise _failure(desc, names, failures, len(jobs)) from failures[0][2]
    return results


# Raised by the store or the network, never by a damaged file: passed on as they are (a transient
# error for `with_retries`), not turned into the ValueError of a corrupt file.
_NETWORK_ERRORS = (ConnectionError, TimeoutError)


def open_parquet(f, path: str, hint: str = ""):
    """`pyarrow.parquet.ParquetFile(f)`, with an error naming `path` for a truncated or non-parquet
    file (pyarrow's own message names no file); `hint` says what to do about it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(f)
    except _NETWORK_ERRORS:  # the store, not the file: worth another try
        raise
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable parquet file (truncated or corrupt?): {e}{hint}") from e


def read_parquet(f, path: str, hint: str = ""):
    """The whole table of `open_parquet(f, path)`; a file damaged past its footer is the same error."""
    import pyarrow as pa

    pf = open_parquet(f, path, hint)
    try:
        return pf.read()
    except _NETWORK_ERRORS:
        raise
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable parquet file (truncated or corrupt?): {e}{hint}") from e


def iter_record_batches(
    path: str, columns: Sequence[str], batch_size: int, optional: Sequence[str] = ()
):
    """Yield lists of row dicts (only `columns`; `optional` ones may be absent -> None) from a
    parquet, jsonl, jsonl.gz or jsonl.zstd file. Raises ValueError naming the file (and line) on bad input."""
    fs, p = fs_and_path(path)
    wanted = list(columns) + [c for c in optional if c not in columns]
    if path.endswith(".parquet"):
        import pyarrow as pa

        with fs.open(p, "rb") as f:
            pf = open_parquet(f, path)
            names = pf.schema_arrow.names
            missing = [c for c in columns if c not in names]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing} (found {names})")
            present = [c for c in wanted if c in names]
            batches = pf.iter_batches(batch_size=batch_size, columns=present)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except _NETWORK_ERRORS:
                    raise
                except (pa.ArrowException, OSError) as e:  # a damaged page or row group
                    raise ValueError(f"{path}: parquet data cannot be read (corrupt?): {e}") from e
                cols = {c: batch.column(c).to_pylist() for c in present}
                n = batch.num_rows
                yield [{c: (cols[c][i] if c in cols else None) for c in wanted} for i in range(n)]
        return
    from steps.zstd_io import is_zstd, iter_lines, zstd_errors

    try:
        if is_zstd(path):  # fsspec's own zstd codec would return a truncated file's text silently
            with fs.open(p, "rb") as raw:
                yield from _jsonl_rows(iter_lines(raw, path), path, columns, wanted, batch_size)
        else:
            with fs.open(p, "rb", compression="infer") as f:
                yield from _jsonl_rows(f, path, columns, wanted, batch_size)
    except _NETWORK_ERRORS:
        raise
    except (EOFError, OSError, zlib.error, *zstd_errors()) as e:  # a truncated .gz or .zstd, a damaged file
        raise ValueError(f"{path}: cannot read the file (truncated or corrupt?): {type(e).__name__}: {e}") from e


def _jsonl_rows(lines, path: str, columns: Sequence[str], wanted: list[str], batch_size: int):
    """Batches of row dicts from JSON `lines` (bytes or str), checked as iter_record_batches says."""
    rows: list[dict] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: line {lineno} is not valid JSON: {e}") from e
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: line {lineno} holds a JSON {type(obj).__name__}, expected an object "
                             f"with field(s) {list(columns)}")
        missing = [c for c in columns if c not in obj]
        if missing:
            raise ValueError(f"{path}: line {lineno} has no field(s) {missing}")
        rows.append({c: obj.get(c) for c in wanted})
        if len(rows) >= batch_size:
            yield rows
            rows = []
    if rows:
        yield rows
