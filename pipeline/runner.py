"""Running step functions as Ray tasks.

Ray is imported and started only when the first step must actually run: a dry run or an
all-cached rerun never pays for it. With no address, an embedded local Ray is started and shut
down with the executor; `RAY_ADDRESS` or `--ray-address` sends the same tasks to a cluster.

Ray allows one runtime per process, so executors running at once in one process (threads of a
notebook or a test) share it: the first to need it starts it, and the last to finish shuts it
down if one of them started it (never a runtime the caller's own `ray.init` started).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from pipeline.step import ResourceConfig
from pipeline.placement import node_types_from_live_cluster, placement_problems, wanted_resources
from pipeline.progress import step_context
from pipeline.redacted_output import redacted_output
from pipeline.redaction import redact
from pipeline.step_log import capture_step_output

logger = logging.getLogger(__name__)

_RUNTIME_LOCK = threading.Lock()  # guards ray.init/shutdown and the values below
_runtime_users = 0  # RayRunners of this process attached to the current Ray runtime
_runtime_started: Optional[tuple[Optional[str]]] = None  # (address,) when a RayRunner started it
_runtime_thread_done: Optional[threading.Event] = None  # ends the thread that started it, if not the main one
_runtime_generation = 0  # counts the runtimes this process started or found; a runner detaches from its own


def _init_ray(**kwargs: Any) -> None:
    """ray.init, from a thread that lives until `_shutdown_ray`. The embedded Ray's head processes get
    Linux's parent-death signal when the *thread* that started them ends, so a runtime started by an
    executor in a worker thread would die with that thread while other executors still use it."""
    global _runtime_thread_done
    import ray

    if _runtime_thread_done is not None:  # its runtime was shut down by someone else's ray.shutdown()
        _runtime_thread_done.set()
        _runtime_thread_done = None
    if threading.current_thread() is threading.main_thread():  # it lasts as long as the process
        ray.init(**kwargs)
        return
    started, done, failure = threading.Event(), threading.Event(), []

    def hold() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            failure.append(e)
            return
        finally:
            started.set()
        done.wait()

    threading.Thread(target=hold, name="pipeline-ray-runtime", daemon=True).start()
    started.wait()
    if failure:
        raise failure[0]
    _runtime_thread_done = done


def _shutdown_ray() -> None:
    global _runtime_thread_done
    import ray

    ray.shutdown()
    if _runtime_thread_done is not None:
        _runtime_thread_done.set()
        _runtime_thread_done = None


class StepFailed(Exception):
    """A step's exception, as its redacted traceback text: what leaves the Ray task names no secret."""


def _call_step(fn: Callable[[Any], Any], config: Any, name: str, output_path: Optional[str] = None) -> None:
    """Body of the Ray task: run one step function (its return value is dropped).

    What the step prints and logs goes, redacted, to its log `{output_path}/.executor_log`
    (pipeline.step_log) and to the worker's log files, which Ray forwards to the driver's console
    only with --verbose. Its exception leaves the task redacted too (pipeline.redacted_output).
    Within it the step is this process's current step (pipeline.progress): `report_progress` and
    `pipeline.step_log.in_step_log` know where its output and log are."""
    import contextlib
    import traceback

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("pipeline")
    captured = capture_step_output(output_path, name) if output_path else contextlib.nullcontext()
    current = step_context(output_path, name, announce=True) if output_path else contextlib.nullcontext()
    with captured, redacted_output(), current:
        log.info("step %s started", name)
        started = time.time()
        try:
            fn(config)
        except Exception as e:  # not KeyboardInterrupt: Ray's cancellation must stay what it is
            text = redact("".join(traceback.format_exception(e))).rstrip()
            log.error("step %s failed after %.1fs:\n%s", name, time.time() - started, text)
            raise StepFailed(text) from None
        log.info("step %s finished in %.1fs", name, time.time() - started)


@dataclass
class Finished:
    handle: Any
    error: Optional[BaseException] = None
    traceback: Optional[str] = None


class RayRunner:
    def __init__(self, address: Optional[str] = None, env: Optional[dict[str, str]] = None, verbose: bool = False):
        self.verbose = verbose  # forward the workers' output to this console (else it is only in the step logs)
        self.address = (address if address is not None else os.environ.get("RAY_ADDRESS")) or None  # None: embedded
        self.env = dict(env or {})  # environment variables of every step's task (and the tasks it starts)
        self._attached: Optional[int] = None  # the _runtime_generation it is counted in (_runtime_users)
        self._remote = None
        self._submitted: dict[Any, tuple[str, int]] = {}  # handle -> (step, max_retries)
        self._nodes: tuple[float, list[dict]] = (0.0, [])  # (when, live nodes' resources)
        self._can_grow: Optional[bool] = None

    def _ensure_started(self) -> None:
        global _runtime_users, _runtime_started, _runtime_generation
        if self._remote is not None:
            return
        import ray

        with _RUNTIME_LOCK:
            if self._remote is not None:
                return
            if not ray.is_initialized():
                # whoever attached before used a runtime that is gone (someone's ray.shutdown())
                _runtime_users, _runtime_started, _runtime_generation = 0, None, _runtime_generation + 1
                if self.address:
                    logger.info("connecting to Ray cluster at %s", self.address)
                    _init_ray(address=self.address, log_to_driver=self.verbose)
                else:
                    logger.info("starting an embedded local Ray")
                    # address="local": always a new instance, never whatever cluster
                    # /tmp/ray/ray_current_cluster names (a stale one would hang us).
                    _init_ray(address="local", include_dashboard=False, log_to_driver=self.verbose,
                              configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}})
                _runtime_started = (self.address,)
            elif _runtime_started is not None and _runtime_started[0] != self.address:
                def where(address: Optional[str]) -> str:
                    return f"the Ray cluster at {address}" if address else "an embedded local Ray"

                raise RuntimeError(
                    f"this executor wants {where(self.address)}, but another executor in this process is using "
                    f"{where(_runtime_started[0])}, and Ray allows one runtime per process. Run the two in "
                    "separate processes, or give them the same --ray-address.")
            _runtime_users += 1
            self._attached = _runtime_generation
            self._remote = ray.remote(_call_step)

    def check_resources(self, name: str, resources: ResourceConfig, fn: Optional[Callable[[Any], Any]] = None,
                        config: Any = None) -> None:
        """Refuse a step that no node of the connected cluster could ever run: no live node, nor any node
        group its autoscaler publishes, has all its resources (or, given `fn` and `config`, passes the
        step function's `placement_problems` rule; see pipeline.placement).

        An autoscaler that publishes no node groups (Ray's own `ray up` monitors do not) may add nodes,
        but nothing says which, and a task no node fits waits forever: such steps are refused too, and
        the error says to pass the cluster's YAML (`--cluster FILE`) so the check knows its node types.
        $SODA_RAY_AUTOSCALING only says whether the cluster autoscales (see _cluster_can_grow), for
        that advice; it no longer lets such steps through.
        """
        self._ensure_started()
        node_types = node_types_from_live_cluster(self._live_nodes())
        problem = placement_problems([(name, fn, config, resources)], node_types).get(name)
        if problem is None:
            return
        wanted = wanted_resources(resources)
        where = f"the Ray cluster at {self.address}" if self.address else "the local Ray"
        if self.address and self._can_grow is None:
            self._can_grow = _cluster_can_grow()
        grows = ""
        if self.address and self._can_grow and not any(t.source == "autoscaler" for t in node_types):
            grows = (" The cluster's autoscaler may add nodes, but it publishes no node types, so nothing says it "
                     "would ever add one that fits (the task would wait forever); pass --cluster <the cluster "
                     "YAML it was started with> to check against its node types instead.")
        if any(t.fits(wanted) for t in node_types):  # the resources are there; the step's own rule says no
            raise RuntimeError(f"step {name!r} cannot run on any node of {where}: {problem}.{grows}")
        raise RuntimeError(
            f"step {name!r} needs {_fmt(wanted)} on one node, but no node of {where} has that: {problem}.{grows} "
            "Run it on a cluster that has them (--ray-address / RAY_ADDRESS, with --cluster FILE for one that "
            "adds nodes on demand) or lower the step's ResourceConfig."
        )

    def _live_nodes(self, max_age: float = 10.0) -> list[dict]:
        import ray

        when, nodes = self._nodes
        if time.time() - when > max_age or not nodes:
            nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
            self._nodes = (time.time(), nodes)
        return nodes

    def check_shippable(self, fn: Callable[[Any], Any], config: Any) -> Optional[str]:
        """Why `fn(config)` cannot be sent to a Ray worker (it does not pickle), or None."""
        from ray import cloudpickle

        try:
            cloudpickle.dumps((fn, config))
        except Exception as e:
            return (f"its function or config cannot be sent to a Ray worker ({type(e).__name__}: {e}); "
                    "configs must hold plain data (no open files, locks, clients or generators)")
        return None

    def submit(self, fn: Callable[[Any], Any], config: Any, name: str, resources: ResourceConfig,
               output_path: Optional[str] = None) -> Any:
        self._ensure_started()
        options = resources.ray_options()
        options["name"] = name
        if self.env:
            options["runtime_env"] = {"env_vars": dict(self.env)}
        handle = self._remote.options(**options).remote(fn, config, name, output_path)
        self._submitted[handle] = (name, resources.max_retries)
        return handle

    def wait(self, handles: list[Any], timeout: float) -> list[Finished]:
        import ray

        first, _ = ray.wait(handles, num_returns=1, timeout=timeout)
        if not first:
            return []
        done, _ = ray.wait(handles, num_returns=len(handles), timeout=0)
        finished = []
        for handle in done:
            name, retries = self._submitted.pop(handle, ("?", 0))
            try:
                ray.get(handle)
                finished.append(Finished(handle))
            except Exception as e:  # a step's failure is data here, not a crash of the executor
                finished.append(Finished(handle, e, _format_remote_error(e, name, retries)))
        return finished

    def cancel(self, handles: list[Any]) -> None:
        """Stop running steps (Ctrl-C): their Ray tasks are cancelled, their workers killed."""
        if not handles:
            return
        import ray

        for handle in handles:
            self._submitted.pop(handle, None)
            try:
                ray.cancel(handle, force=True)
            except Exception as e:  # noqa: BLE001 (already finished, or Ray is going down)
                logger.debug("could not cancel %s: %s", handle, e)

    def shutdown(self) -> None:
        """Detach from the process's Ray runtime; the last runner out shuts down one that a runner started."""
        global _runtime_users, _runtime_started
        with _RUNTIME_LOCK:
            attached, self._attached, self._remote = self._attached, None, None
            if attached != _runtime_generation:  # not attached, or to a runtime that is gone
                return
            _runtime_users -= 1
            if _runtime_users == 0 and _runtime_started is not None:
                _shutdown_ray()
                _runtime_started = None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


_DIED = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "OutOfMemoryError", "TaskCancelledError",
         "ObjectLostError", "OwnerDiedError", "RaySystemError")


def _format_remote_error(e: BaseException, name: str = "?", retries: int = 0) -> str:
    """A plain-text traceback of a step's failure inside its Ray task, or why its process died."""
    import traceback

    kinds = {cls.__name__ for cls in type(e).__mro__}
    if kinds & set(_DIED) and "RayTaskError" not in kinds:
        said = _ANSI.sub("", str(e)).strip().splitlines()
        tries = f"after {retries} retr{'y' if retries == 1 else 'ies'} (ResourceConfig.max_retries)" if retries \
            else "and ResourceConfig.max_retries is 0, so Ray did not retry it"
        return (f"{type(e).__name__}: Ray said: {said[0] if said else type(e).__name__}\n"
                f"The Ray worker process running step {name} died before the step returned (killed by a "
                f"signal such as kill -9 or the OOM killer, or its node was lost), {tries}. Its output is "
                "unfinished and not marked done; rerun to resume it.")
    text = _ANSI.sub("", str(e)).strip()
    if not text:
        return "".join(traceback.format_exception(e))
    first, _, rest = text.partition("\n")
    cause = getattr(e, "cause", None)
    if isinstance(cause, StepFailed) and first.startswith("ray::"):  # the step's own (redacted) traceback
        frames = str(cause).partition("\n")[2]  # without its "Traceback (most recent call last):" line
        return f"Traceback (most recent call last), in Ray task {first[5:]}:\n{frames}"
    if first.startswith("ray::"):  # Ray's header: "ray::name() (pid=..., ip=...)", then the frames
        return f"Traceback (most recent call last), in Ray task {first[5:]}:\n{rest}"
    return text


def _fmt(resources: dict[str, float]) -> str:
    def value(k: str, v: float) -> str:
        return f"{v / 1024**3:.1f}GiB" if k == "memory" else f"{v:g}"

    return "{" + ", ".join(f"{k}: {value(k, v)}" for k, v in sorted(resources.items())) + "}"


def _cluster_can_grow() -> bool:
    """Whether the connected cluster has an autoscaler that may add nodes ($SODA_RAY_AUTOSCALING overrides).

    A plain `ray start --head` runs the monitor read-only: its node types are named after the node
    ids. A configured autoscaler (`ray up`) names them after the cluster config's node types.
    """
    forced = os.environ.get("SODA_RAY_AUTOSCALING")
    if forced is not None:
        return forced.lower() in ("1", "true", "yes")
    try:
        import json

        from ray.autoscaler.v2.utils import is_autoscaler_v2
        from ray.experimental.internal_kv import _internal_kv_get

        if is_autoscaler_v2(fetch_from_server=True):
            return True
        raw = _internal_kv_get("__autoscaling_status")
        if not raw:
            return False  # no monitor at all: nothing can add nodes
        mapping = json.loads(raw).get("autoscaler_report", {}).get("node_type_mapping") or {}
        return any(node_type != f"node_{node_id}" for node_id, node_type in mapping.items())
    except Exception:  # cannot tell (e.g. Ray client): do not block a cluster that might grow
        return True


def _pythonpath() -> str:
    entries = [p for p in sys.path if p and os.path.isdir(p)]
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join(([existing] if existing else []) + entries)
