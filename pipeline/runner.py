"""Running step functions as Ray tasks.

Ray is imported and started only when the first step must actually run: a dry run or an
all-cached rerun never pays for it. With no address, an embedded local Ray is started and shut
down with the executor; `RAY_ADDRESS` or `--ray-address` sends the same tasks to a cluster.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from pipeline.step import ResourceConfig

logger = logging.getLogger(__name__)


def _call_step(fn: Callable[[Any], Any], config: Any, name: str) -> None:
    """Body of the Ray task: run one step function (its return value is dropped)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipeline").info("step %s started", name)
    started = time.time()
    fn(config)
    logging.getLogger("pipeline").info("step %s finished in %.1fs", name, time.time() - started)


@dataclass
class Finished:
    handle: Any
    error: Optional[BaseException] = None
    traceback: Optional[str] = None


class RayRunner:
    def __init__(self, address: Optional[str] = None):
        self.address = address if address is not None else os.environ.get("RAY_ADDRESS")
        self._started_here = False
        self._remote = None

    def _ensure_started(self) -> None:
        if self._remote is not None:
            return
        import ray

        if not ray.is_initialized():
            if self.address:
                logger.info("connecting to Ray cluster at %s", self.address)
                ray.init(address=self.address, log_to_driver=True)
            else:
                logger.info("starting an embedded local Ray")
                # address="local": always a new instance, never whatever cluster
                # /tmp/ray/ray_current_cluster names (a stale one would hang us).
                ray.init(address="local", include_dashboard=False, log_to_driver=True, configure_logging=False,
                         runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}})
            self._started_here = True
        self._remote = ray.remote(_call_step)

    def check_resources(self, name: str, resources: ResourceConfig) -> None:
        """Refuse a step that could never be scheduled on a fixed local cluster."""
        import ray

        self._ensure_started()
        if self.address:
            return  # a real cluster may autoscale; Ray reports infeasible tasks itself
        total = ray.cluster_resources()
        wanted = dict(resources.ray_options().get("resources", {}))
        wanted["CPU"] = resources.cpus
        wanted["GPU"] = resources.gpus
        short = {k: v for k, v in wanted.items() if v and total.get(k, 0) < v}
        if short:
            have = ", ".join(f"{k}={v:g}" for k, v in sorted(total.items()) if not k.startswith("node:"))
            raise RuntimeError(
                f"step {name!r} needs {short} but the local Ray has only {have}; run it on a "
                "cluster that has them (--ray-address / RAY_ADDRESS) or lower its resources"
            )

    def submit(self, fn: Callable[[Any], Any], config: Any, name: str, resources: ResourceConfig) -> Any:
        self._ensure_started()
        options = resources.ray_options()
        options["name"] = name
        return self._remote.options(**options).remote(fn, config, name)

    def wait(self, handles: list[Any], timeout: float) -> list[Finished]:
        import ray

        first, _ = ray.wait(handles, num_returns=1, timeout=timeout)
        if not first:
            return []
        done, _ = ray.wait(handles, num_returns=len(handles), timeout=0)
        finished = []
        for handle in done:
            try:
                ray.get(handle)
                finished.append(Finished(handle))
            except Exception as e:  # a step's failure is data here, not a crash of the executor
                finished.append(Finished(handle, e, _format_remote_error(e)))
        return finished

    def shutdown(self) -> None:
        if self._started_here:
            import ray

            ray.shutdown()
            self._started_here = False
            self._remote = None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _format_remote_error(e: BaseException) -> str:
    """A plain-text traceback of a step's failure inside its Ray task."""
    import traceback

    text = _ANSI.sub("", str(e)).strip()
    if not text:
        return "".join(traceback.format_exception(e))
    first, _, rest = text.partition("\n")
    if first.startswith("ray::"):  # Ray's header: "ray::name() (pid=..., ip=...)", then the frames
        return f"Traceback (most recent call last), in Ray task {first[5:]}:\n{rest}"
    return text


def _pythonpath() -> str:
    entries = [p for p in sys.path if p and os.path.isdir(p)]
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join(([existing] if existing else []) + entries)
