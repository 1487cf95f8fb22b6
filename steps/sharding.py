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
) -> list[Any]:
    """Run `fn(*job)` for every job and return the results in job order.

    With Ray initialised, each job is one Ray task (`num_cpus`, `num_gpus`, `memory_gb` per task,
    retried `max_retries` times if its worker dies);
    otherwise the jobs run in this process, one after another or on `local_threads` threads (for
    I/O-bound jobs). A tqdm bar counts shards; `on_result(job_index, result)` is called in this
    process as each job finishes.
    """
    from tqdm.auto import tqdm

    jobs = list(jobs)
    if not jobs:
        return []
    try:
        import ray

        use_ray = ray.is_initialized()
    except ImportError:  # pragma: no cover - ray is a pinned dependency
        use_ray = False

    if not use_ray:
        if local_threads <= 1:
            results = []
            for i, job in enumerate(tqdm(jobs, desc=desc, unit="shard")):
                results.append(fn(*job))
                if on_result:
                    on_result(i, results[-1])
            return results
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        results = [None] * len(jobs)
        with ThreadPoolExecutor(local_threads) as pool, tqdm(total=len(jobs), desc=desc, unit="shard") as bar:
            futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
            waiting = set(futures)
            try:
                while waiting:
                    finished, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        results[futures[fut]] = fut.result()
                        bar.update(1)
                        if on_result:
                            on_result(futures[fut], results[futures[fut]])
            except BaseException:
                for fut in waiting:
                    fut.cancel()
                raise
        return results

    options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": max_retries}
    if memory_gb:
        options["memory"] = int(memory_gb * 1024**3)
    remote_fn = ray.remote(fn).options(**options)
    refs = [remote_fn.remote(*job) for job in jobs]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    pending = list(refs)
    with tqdm(total=len(refs), desc=desc, unit="shard") as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                results[index[ref]] = ray.get(ref)
                bar.update(1)
                if on_result:
                    on_result(index[ref], results[index[ref]])
    return results


def open_parquet(f, path: str, hint: str = ""):
    """`pyarrow.parquet.ParquetFile(f)`, with an error naming `path` for a truncated or non-parquet
    file (pyarrow's own message names no file); `hint` says what to do about it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(f)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable parquet file (truncated or corrupt?): {e}{hint}") from e


def read_parquet(f, path: str, hint: str = ""):
    """The whole table of `open_parquet(f, path)`; a file damaged past its footer is the same error."""
    import pyarrow as pa

    pf = open_parquet(f, path, hint)
    try:
        return pf.read()
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
