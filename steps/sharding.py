"""The shard module: shard-parallel steps run one task per shard on Ray (when Ray is initialised)
or in-process (unit tests, laptops), retry transient errors, and resume per shard (a shard whose
done marker exists is not redone).

Paths are local paths or fsspec URLs (gs://...), read and written through pipeline.fileio. Nothing
heavy is imported at module level.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Optional, Sequence

from pipeline.fileio import exists, read_json
from pipeline.step_log import in_step_log

logger = logging.getLogger(__name__)


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
    env: Optional[dict[str, str]] = None,
) -> list[Any]:
    """Run `fn(*job)` for every job and return the results in job order.

    With Ray initialised, each job is one Ray task (`num_cpus`, `num_gpus`, `memory_gb` per task,
    retried `max_retries` times if its worker dies; `env`: environment variables its worker process
    starts with, Ray's runtime_env);
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
        if env:
            options["runtime_env"] = {"env_vars": dict(env)}

        remote_fn = ray.remote(in_step_log(_run_job)).options(**options)
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
