"""The executor: plan the DAG, skip what is cached, run the rest on Ray, record everything.

    executor = Executor(prefix="gs://bucket/soda", experiment_name="exp1699_soda_all")
    executor.run(steps, dry_run=False, run_only=None, force_run_failed=True, max_concurrent=None)

A step runs when all its dependencies succeeded and its status is not SUCCESS. Before running
it the executor takes the step's lease and reads the status again, so of several executors on
the same DAG exactly one runs each step and the others wait for it. SUCCESS is written only
after the step's function returned; a failure stops only the failed step's descendants.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence, TextIO

from pipeline import explain, fileio, placement, storage
from pipeline.console import RunView, live_wanted
from pipeline.experiment_log import ExperimentRecord, ReportBuilder
from pipeline.record_store import previous_steps
from pipeline.run_state import RunState
from pipeline.identity import canonical, digest, EncodingError
from pipeline.lease import Lease, lease_for, new_owner_id
from pipeline.plan import Plan, PlanError, PlannedStep, build_plan, topological_order
from pipeline.step import ExecutorStep, ResourceConfig
from pipeline.step_log import log_path, redact_log
from pipeline.runner import RayRunner

logger = logging.getLogger("pipeline.executor")

DONE = (RunState.CACHED, RunState.SUCCEEDED)
_LISTED = 10  # failed and blocked steps an ExecutorError names; the experiment log has them all


class ExecutorError(RuntimeError):
    """Some steps failed; their descendants did not run."""

    def __init__(self, failed: dict[str, str], blocked: list[str], record_url: Optional[str]):
        self.failed, self.blocked, self.record_url = failed, blocked, record_url
        lines = [f"{len(failed)} step(s) failed:"]
        lines += [f"  {name}: {error.strip().splitlines()[-1] if error.strip() else 'error'}"
                  for name, error in list(failed.items())[:_LISTED]]
        if len(failed) > _LISTED:
            lines.append(f"  ... and {len(failed) - _LISTED} more (each in the log below)")
        if blocked:
            lines.append(f"{len(blocked)} step(s) did not run because a dependency failed: " + ", ".join(blocked[:_LISTED])
                         + (f", ... and {len(blocked) - _LISTED} more" if len(blocked) > _LISTED else ""))
        if record_url:
            lines.append(f"tracebacks: each failed step's .executor_status, and the log {record_url[:-5]}.html")
        super().__init__("\n".join(lines))


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: `steps` were running, are marked INTERRUPTED and run again on a rerun."""

    def __init__(self, steps: list[str], record_url: Optional[str]):
        self.steps, self.record_url = steps, record_url
        what = (f"{len(steps)} running step(s) marked interrupted ({', '.join(steps[:3])}"
                f"{', ...' if len(steps) > 3 else ''})" if steps else "no step was running")
        super().__init__(f"interrupted: {what}; rerun the same command to resume (finished steps are cached)")


class RelativePrefixError(ValueError):
    """A prefix relative to the driver's directory, for steps that run on another machine."""


class PreflightError(ExecutorError):
    """Some steps could never run (resources the cluster lacks, a config Ray cannot ship): nothing ran."""

    def __init__(self, problems: dict[str, str]):
        self.failed, self.blocked, self.record_url = problems, [], None
        lines = [f"{len(problems)} step(s) cannot run, so nothing was started:"]
        lines += [f"  {name}: {problem}" for name, problem in problems.items()]
        RuntimeError.__init__(self, "\n".join(lines))


@dataclass
class RunResult:
    plan: Plan
    states: dict[str, str]  # versioned name -> cached | succeeded | failed | blocked | not selected | planned
    actions: dict[str, explain.Action] = field(default_factory=dict)
    record_url: Optional[str] = None
    unplaceable: dict[str, str] = field(default_factory=dict)  # dry run with a cluster file: step -> why it never runs

    def names(self, state: str) -> list[str]:
        return [name for name, s in self.states.items() if s == state]

    @property
    def ran(self) -> list[str]:
        return self.names(RunState.SUCCEEDED) + self.names(RunState.FAILED)


class Executor:
    def __init__(self, prefix: str, experiment_name: Optional[str] = None, description: Optional[str] = None,
                 ray_address: Optional[str] = None, poll_interval: float = 0.5, env: Optional[dict[str, str]] = None,
                 cluster_file: Optional[str] = None, verbose: bool = False,
                 report: Optional[ReportBuilder] = None, console: Optional[str] = None):
        if not prefix:
            raise ValueError("Executor needs a prefix (a local directory or e.g. gs://bucket/path)")
        address = ray_address if ray_address is not None else os.environ.get("RAY_ADDRESS")
        if fileio.is_relative(prefix) and _is_remote(address):
            raise RelativePrefixError(
                f"the prefix {prefix!r} is a path relative to this machine's current directory, but the steps "
                f"run on the Ray cluster at {address}, whose workers would resolve it against their own. Give "
                "a prefix every node shares: --prefix gs://BUCKET/PATH (or $SODA_PREFIX), or an absolute path "
                "on a filesystem mounted on every node.")
        self.prefix = fileio.absolute(prefix).rstrip("/")  # once: every output path below it is absolute
        self.experiment_name = experiment_name or _script_name()
        self.description = description
        self.ray_address = ray_address
        self.env = dict(env or {})  # set in every step's Ray task
        self.cluster_file = cluster_file  # a Ray cluster YAML whose node types every pending step must fit
        self.verbose = verbose  # steps' output on this console too (it always goes to each step's .executor_log)
        self.console = console  # "live" (a view redrawn in place), "plain" (lines), None: live on a terminal
        self.report = report  # builds the experiment log's report sections at the end of a run
        self._node_types: Optional[list[placement.NodeType]] = None
        self.poll_interval = poll_interval
        self.plan: Optional[Plan] = None
        self.steps: list[ExecutorStep] = []
        self.output_paths: dict[ExecutorStep, str] = {}

    def compute_versions(self, steps: Sequence[ExecutorStep], run_only: Optional[Sequence[str]] = None) -> Plan:
        plan = build_plan(steps, self.prefix, run_only)
        self.plan = plan
        self.steps = [p.step for p in plan.steps]
        self.output_paths = {s: plan.of(s).output_path for s in topological_order(steps)}
        return plan

    def run(self, steps: Sequence[ExecutorStep], dry_run: bool = False, run_only: Optional[Sequence[str]] = None,
            force_run_failed: bool = True, max_concurrent: Optional[int] = None,
            out: Optional[TextIO] = None) -> RunResult:
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        if isinstance(run_only, str):
            run_only = [run_only]
        if run_only is not None and (not run_only or any(not str(p).strip() for p in run_only)):
            raise PlanError(f"run_only={list(run_only)!r} names no step pattern, which would select every step; "
                            "give regexes over step names, or None to run the whole DAG")
        plan = self.compute_versions(steps, run_only)
        self.cluster_node_types()  # a bad cluster file is refused before anything else
        storage.ensure_reachable(self.prefix)
        previous = previous_steps(self.prefix, self.experiment_name)
        changes = {p.versioned_name: explain.explain_changes(p, previous) for p in plan.steps}
        if dry_run:
            return self._dry_run(plan, force_run_failed, changes, out or sys.stdout)
        storage.ensure_writable(self.prefix)
        return _Run(self, plan, force_run_failed, max_concurrent, changes).execute()

    def cluster_node_types(self) -> Optional[list[placement.NodeType]]:
        """The node types of `cluster_file` (read once), or None without one."""
        if self.cluster_file is not None and self._node_types is None:
            self._node_types = placement.node_types_from_cluster_file(self.cluster_file)
        return self._node_types

    def unplaceable(self, pending: Sequence[PlannedStep], configs: Optional[dict[str, Any]] = None) -> dict[str, str]:
        """Step -> why no node type of `cluster_file` could ever run it ({} without a cluster file)."""
        node_types = self.cluster_node_types()
        if node_types is None or self.plan is None:
            return {}
        configs = configs or {}
        return placement.placement_problems(
            ((p.versioned_name, p.step.fn, configs[p.versioned_name] if p.versioned_name in configs
              else p.concrete_config(self.plan.paths), p.step.resources) for p in pending), node_types)

    def _dry_run(self, plan: Plan, force_run_failed: bool, changes: dict[str, list[str]], out: TextIO) -> RunResult:
        actions = [explain.classify(p, force_run_failed) for p in plan.steps]
        explain.print_plan(plan, actions, [changes[p.versioned_name] for p in plan.steps], out)
        unplaceable: dict[str, str] = {}
        if self.cluster_file is not None:
            pending = [p for p, a in zip(plan.steps, actions) if a.kind in (explain.RUN, explain.TAKE_OVER)]
            unplaceable = self.unplaceable(pending)
            explain.print_unplaceable(unplaceable, len(pending), self.cluster_file, out)
        return RunResult(plan, {p.versioned_name: RunState.PLANNED for p in plan.steps},
                         {p.versioned_name: a for p, a in zip(plan.steps, actions)}, unplaceable=unplaceable)


class _Run:
    """One real run of a plan: the scheduling loop and its bookkeeping."""

    def __init__(self, executor: Executor, plan: Plan, force_run_failed: bool, max_concurrent: Optional[int],
                 changes: dict[str, list[str]]):
        self.executor, self.plan = executor, plan
        self.force_run_failed, self.max_concurrent = force_run_failed, max_concurrent
        self.owner = new_owner_id()
        self.runner = RayRunner(executor.ray_address, env=executor.env, verbose=executor.verbose)
        self.record = ExperimentRecord(executor.prefix, executor.experiment_name, plan, executor.description, self.owner,
                                       report=executor.report)
        self.states: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.running: dict[Any, tuple[PlannedStep, Lease, float]] = {}
        self.waiting_logged: set[str] = set()
        self.requeued: list[PlannedStep] = []  # steps whose lease was lost while they ran: back to the to-do list
        self.view = RunView(executor.experiment_name, sum(1 for p in plan.steps if p.selected),
                            live=live_wanted(executor.console))
        for p in plan.steps:
            self.record.update_step(p.versioned_name, changes=changes[p.versioned_name])

    def execute(self) -> RunResult:
        todo = [p for p in self.plan.steps if p.selected]
        try:
            self._preflight(todo)
        except BaseException:
            self.runner.shutdown()
            raise
        for p in self.plan.steps:
            if not p.selected:
                self._set(p, "not selected", action=f"skip: {p.skip_reason}")
        self._save()
        outcome = RunState.INTERRUPTED
        interrupted: list[str] = []
        self.view.start()
        try:
            while todo or self.running:
                todo = [p for p in todo if not self._advance(p)]
                if self.running:
                    self._collect()
                    self._give_up_lost_leases()
                    todo, self.requeued = todo + self.requeued, []
                elif todo:
                    time.sleep(self.executor.poll_interval)  # every ready step is leased elsewhere
            outcome = RunState.FAILED if self.errors else RunState.SUCCEEDED
        except KeyboardInterrupt:
            with _sigint_deferred():  # a second Ctrl-C must not cut the bookkeeping short
                interrupted = self._interrupt()
        finally:
            for p, lease, _ in self.running.values():  # another exception: the steps are not known to be done
                self._set(p, RunState.INTERRUPTED)
                lease.release()
            self.view.close()  # its last frame is the run's summary
            self.runner.shutdown()
            try:
                self.record.finish(outcome)
            except OSError as e:  # a full or read-only prefix: the status files still say what happened
                logger.error("could not write the experiment log %s: %s", self.record.url, e)
        if outcome == "interrupted":
            raise RunInterrupted(interrupted, self.record.url)
        blocked = self._names(RunState.BLOCKED)
        ran = len(self._names(RunState.SUCCEEDED)) + len(self.errors)
        self.view.say(logging.INFO, "%d steps: %d ran, %d cached, %d failed, %d blocked; log: %s.html",
                      len(self.plan.steps), ran, len(self._names(RunState.CACHED)), len(self.errors), len(blocked),
                      self.record.url[:-5])
        result = RunResult(self.plan, self.states, record_url=self.record.url)
        if self.errors:
            raise ExecutorError(self.errors, blocked, self.record.url)
        return result

    def _interrupt(self) -> list[str]:
        """Ctrl-C: keep what finished, mark the steps still running INTERRUPTED, stop them, free their leases."""
        try:
            self._collect(timeout=0)  # steps that returned before the interrupt keep their SUCCESS
        except Exception as e:  # noqa: BLE001 (the interrupt, not this, is what the user must hear about)
            logger.warning("while stopping: could not collect finished steps: %s", e)
        names = []
        self.runner.cancel(list(self.running))
        for handle, (p, lease, _) in list(self.running.items()):
            try:
                storage.write_status(p.output_path, storage.INTERRUPTED, self.owner,
                                     error="interrupted (Ctrl-C) while running; a rerun runs it again")
            except OSError as e:  # still RUNNING on disk: a rerun takes it over as a stale lease
                logger.warning("could not mark %s interrupted: %s", p.versioned_name, e)
            self._set(p, RunState.INTERRUPTED, end=time.time())
            lease.release()
            del self.running[handle]
            names.append(p.versioned_name)
        return names

    def _preflight(self, todo: list[PlannedStep]) -> None:
        """Refuse, before anything runs, steps that could never be shipped to Ray or scheduled."""
        pending = [p for p, s in zip(todo, storage.read_statuses([p.output_path for p in todo]))
                   if s is None or s.status != storage.SUCCESS]
        problems: dict[str, str] = {}
        configs = {p.versioned_name: p.concrete_config(self.plan.paths) for p in pending}
        for p in pending:  # first what needs no cluster
            problem = self.runner.check_shippable(p.step.fn, configs[p.versioned_name])
            if problem:
                problems[p.versioned_name] = problem
        if not problems and self.executor.cluster_file is not None:  # the node types the cluster may add
            problems = {name: f"{reason} (node types of {self.executor.cluster_file}; add one that fits there, "
                              "or change the step's ResourceConfig)"
                        for name, reason in self.executor.unplaceable(pending, configs).items()}
        elif not problems:  # the connected cluster's nodes, and its autoscaler's node groups when published
            for p in pending:
                try:
                    self.runner.check_resources(p.versioned_name, p.step.resources or ResourceConfig(),
                                                p.step.fn, configs[p.versioned_name])
                except RuntimeError as e:
                    problems[p.versioned_name] = str(e)
        if problems:
            raise PreflightError(problems)

    def _save(self) -> None:
        try:
            self.record.save()
        except OSError as e:  # the record is a log; status files are what the executor trusts
            logger.warning("could not write the experiment record %s: %s", self.record.url, e)

    def _progress(self) -> str:
        """How far the run is: steps finished (cached, succeeded, failed, blocked) of all selected."""
        selected = sum(1 for p in self.plan.steps if p.selected)
        ended = sum(1 for s in self.states.values()
                    if s in (RunState.CACHED, RunState.SUCCEEDED, RunState.FAILED, RunState.BLOCKED))
        return f"{ended}/{selected} steps done, {len(self.running)} running"

    def _names(self, state: str) -> list[str]:
        return [n for n, s in self.states.items() if s == state]

    def _set(self, p: PlannedStep, state: str, **fields: Any) -> None:
        self.states[p.versioned_name] = state
        self.record.update_step(p.versioned_name, status=state, **fields)
        if state in (RunState.CACHED, RunState.SUCCEEDED, RunState.BLOCKED, RunState.INTERRUPTED):
            self.view.step_ended(p.versioned_name, state)

    def _advance(self, p: PlannedStep) -> bool:
        """Try to move `p` forward; True once it has left the to-do list."""
        dep_states = [self.states.get(d.versioned_name) for d in p.dependencies]
        if any(s in (RunState.FAILED, RunState.BLOCKED, RunState.INTERRUPTED) for s in dep_states):
            self._set(p, RunState.BLOCKED, action="skip: a dependency failed")
            return True
        if not all(s in DONE for s in dep_states):
            return False
        status = storage.read_status(p.output_path)
        if status is not None and status.status == storage.SUCCESS:
            self._cached(p)
            return True
        if self.max_concurrent is not None and len(self.running) >= self.max_concurrent:
            return False
        lease = lease_for(p.output_path, self.owner)
        if not lease.try_acquire():
            if p.versioned_name not in self.waiting_logged:
                self.waiting_logged.add(p.versioned_name)
                holder = lease.probe()
                where = holder.describe() if holder else "lease held"
                self.view.step_waiting_elsewhere(p.versioned_name, where)
                self.view.say(logging.INFO, "waiting for %s: running elsewhere (%s)", p.versioned_name, where)
            return False
        status = storage.read_status(p.output_path)  # again, now that nobody else can change it
        if status is not None and status.status == storage.SUCCESS:
            lease.release()
            self._cached(p)
            return True
        if status is not None and status.status == storage.FAILED and not self.force_run_failed:
            lease.release()
            self._fail(p, f"{status.error} (failed in an earlier run; not rerun because --force-run-failed is false)",
                       write=False)
            return True
        action = {storage.RUNNING: "take over: stale lease", storage.INTERRUPTED: "rerun: interrupted"}.get(
            status.status if status is not None else "", "run")
        storage.remove_stale_temp_files(p.output_path)  # of a run killed while it wrote a status
        try:
            config = p.concrete_config(self.plan.paths)
            resources = p.step.resources or ResourceConfig()
            if self.executor.cluster_file is None:  # else its nodes may be still to come: checked in _preflight
                self.runner.check_resources(p.versioned_name, resources)
            _write_info(p, config, self.owner, self.executor.experiment_name)
            storage.write_status(p.output_path, storage.RUNNING, self.owner)
            handle = self.runner.submit(p.step.fn, config, p.versioned_name, resources, p.output_path)
        except Exception as e:
            try:
                self._fail(p, "".join(traceback.format_exception(e)))
            finally:
                lease.release()  # after FAILED is written, so no other executor sees it half-way
            return True
        started = time.time()
        self.running[handle] = (p, lease, started)
        self._set(p, RunState.RUNNING, action=action, start=started)
        self.view.step_running(p.versioned_name, p.output_path, started)
        self.view.say(logging.INFO, "running %s (%s) -> %s", p.versioned_name, action, p.output_path)
        self._save()
        return True

    def _collect(self, timeout: Optional[float] = None) -> None:
        timeout = self.executor.poll_interval if timeout is None else timeout
        for finished in self.runner.wait(list(self.running), timeout=timeout):
            p, lease, started = self.running.pop(finished.handle)
            if getattr(lease, "lost", False):  # another executor owns the step now: it writes the status
                self._requeue(p, lease)
                continue
            try:
                _redact_step_log(p)  # before its status says it ended: readers then see the log redacted
                if finished.error is None:
                    try:
                        storage.write_status(p.output_path, storage.SUCCESS, self.owner)
                    except OSError as e:
                        self._fail(p, f"step {p.versioned_name} returned, but its output is not marked done because "
                                      f"its SUCCESS status could not be written: "
                                      f"{storage.not_writable(p.output_path, e, 'the step output').strerror}")
                    else:
                        self._set(p, RunState.SUCCEEDED, end=time.time())
                        self.view.say(logging.INFO, "succeeded %s in %.1fs [%s]", p.versioned_name,
                                      time.time() - started, self._progress())
                else:
                    text = (finished.traceback or repr(finished.error)).rstrip()
                    self._fail(p, text + storage.filesystem_hint(text, p.output_path), ran=True)
                self.record.update_step(p.versioned_name, end=time.time())
            finally:
                lease.release()
            self._save()

    def _give_up_lost_leases(self) -> None:
        """Steps whose lease another executor took over (a heartbeat refused on an object store): their Ray
        tasks are cancelled and they go back to waiting, to be found cached or leased elsewhere, or taken
        over again if that executor dies too. Never two runs of a step writing its output at once."""
        lost = [(handle, p, lease) for handle, (p, lease, _) in self.running.items() if getattr(lease, "lost", False)]
        if lost:
            self.runner.cancel([handle for handle, _, _ in lost])
        for handle, p, lease in lost:
            del self.running[handle]
            self._requeue(p, lease)

    def _requeue(self, p: PlannedStep, lease: Lease) -> None:
        lease.release()  # a lost lease is left to its new holder
        self.requeued.append(p)
        self.waiting_logged.discard(p.versioned_name)
        self.view.step_requeued(p.versioned_name)
        self._set(p, RunState.WAITING, action="wait: lost its lease to another executor")
        logger.warning("%s: another executor took over its lease; stopped it here, waiting for that run [%s]",
                       p.versioned_name, self._progress())
        self._save()

    def _fail(self, p: PlannedStep, text: str, write: bool = True, ran: bool = False) -> None:
        text = storage.redact(text)
        last = text.strip().splitlines()[-1] if text.strip() else "error"
        if write:
            try:
                storage.write_status(p.output_path, storage.FAILED, self.owner, error=last, traceback=text)
            except OSError as e:  # e.g. the disk filled up: the step is not SUCCESS, a rerun redoes it
                text += (f"\n(its FAILED status could not be written either: {e}; the output stays unfinished "
                         "and a rerun takes it over)")
        self.errors[p.versioned_name] = text
        self._set(p, RunState.FAILED, error=text)
        self.view.step_ended(p.versioned_name, RunState.FAILED, error=last,
                             log=log_path(p.output_path) if ran else fileio.join(p.output_path, storage.STATUS_FILE))
        self.view.say(logging.ERROR, "failed %s: %s [%s]%s", p.versioned_name, last, self._progress(),
                      f"; its log: soda logs {p.output_path}" if ran else "")

    def _cached(self, p: PlannedStep) -> None:
        self._set(p, RunState.CACHED, action="skip: cached")
        differing = explain.unversioned_differences(p)
        if differing:
            logger.warning(
                "%s is cached, but its output was produced with different unversioned config: %s. "
                "These fields do not change the output path; mark them versioned() if they should.",
                p.versioned_name, ", ".join(differing[:8]))


def _redact_step_log(p: PlannedStep) -> None:
    """Redact a finished step's log with the executor's secrets too (pipeline.step_log.redact_log)."""
    try:
        redact_log(p.output_path)
    except Exception as e:  # noqa: BLE001 - the log is not the step's output: its status still counts
        logger.warning("could not check the log of %s for secrets: %s", p.versioned_name, storage.redact(str(e)))


def _write_info(p: PlannedStep, config: Any, owner: str, experiment: str) -> None:
    try:
        concrete = canonical(config)
    except EncodingError:
        concrete = p.fields  # a config with non-data values: the flat view still records it
    storage.write_json_atomic(fileio.join(p.output_path, storage.INFO_FILE), {
        "name": p.name,
        "hash": p.identity.hash,
        "output_path": p.output_path,
        "description": p.step.description,
        "fn": f"{getattr(p.step.fn, '__module__', '?')}.{getattr(p.step.fn, '__qualname__', '?')}",
        "experiment": experiment,
        "run_id": owner,
        "config": concrete,
        "fields": p.fields,
        "versioned": p.identity.versioned,
        "dependencies": p.identity.dependencies,
        "fingerprint": digest(p.fields),
        "written": time.time(),
    })


def _script_name() -> str:
    import os

    argv0 = sys.argv[0] if sys.argv else ""
    stem = os.path.splitext(os.path.basename(argv0))[0]
    return stem if stem and stem not in ("-c", "pytest", "__main__", "") else "experiment"


def _is_remote(address: Optional[str]) -> bool:
    """Whether a Ray address names another machine. An embedded Ray, `auto`, and any address this
    machine can bind (so one of its own interfaces) are local: their workers share this filesystem."""
    if not address or address in ("auto", "local"):
        return False
    from urllib.parse import urlsplit

    host = urlsplit("//" + address.split("://", 1)[-1]).hostname or ""
    if not host or host == "localhost":
        return False
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError:  # unresolvable here: not this machine
        return True
    for family, kind, _, _, sockaddr in infos:
        try:
            with socket.socket(family, kind) as probe:
                probe.bind((sockaddr[0], 0))
            return False
        except OSError:
            continue
    return True


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a further Ctrl-C until the block is done (only the main thread has signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
