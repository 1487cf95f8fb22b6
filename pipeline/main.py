"""`executor_main`: the command line of every experiment script.

    python experiments/exp1699_soda_all.py [--dry-run] [--prefix P] [--run-only REGEX ...]
        [--force-run-failed BOOL] [--max-concurrent N] [--ray-address ADDR] [--cluster FILE] [--verbose]
        [--console live|plain]

The options are the fields of `ExecutorMainConfig`, parsed by draccus (so a YAML file works
too, via --config_path). Hyphenated names, bare boolean flags and space-separated lists are
accepted and rewritten into draccus's form first.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import typing
from dataclasses import dataclass
from typing import Optional, Sequence

from pipeline.experiment_log import ReportBuilder
from pipeline.step import ExecutorStep
from pipeline.executor import Executor, ExecutorError, RelativePrefixError, RunInterrupted
from pipeline.placement import ClusterFileError
from pipeline.plan import PlanError
from pipeline.record_store import default_prefix
from pipeline.redacted_output import redacted_output
from pipeline.redaction import redact


@dataclass(frozen=True)
class ExecutorMainConfig:
    prefix: Optional[str] = None
    """Where outputs go (local dir or gs://...). Default: $SODA_PREFIX, else ./soda-out."""
    dry_run: bool = False
    """Print what would run and why; write nothing, start nothing."""
    run_only: Optional[list[str]] = None
    """Regexes over step names: run only matching steps and their dependencies."""
    force_run_failed: bool = True
    """Rerun steps whose last run failed (false: report them failed instead)."""
    max_concurrent: Optional[int] = None
    """Most steps of this experiment running at once (default: as many as Ray schedules)."""
    ray_address: Optional[str] = None
    """An existing Ray cluster (default: $RAY_ADDRESS, else an embedded local Ray)."""
    cluster: Optional[str] = None
    """A Ray cluster YAML whose node types every pending step must fit: a dry run lists (and exits 1 for)
    steps that could never run there; a real run refuses them before anything starts."""
    verbose: bool = False
    """Also show what the steps print and log on this console, as Ray forwards it (interleaved). It always
    goes to each step's log, `{output}/.executor_log`: read it with `soda logs STEP`."""
    console: Optional[str] = None
    """`live`: one view of the run redrawn in place; `plain`: a log line per state change. Default: live
    when stderr is a terminal (or $PIPELINE_CONSOLE)."""


def normalize_argv(argv: Sequence[str], cls: type = ExecutorMainConfig) -> list[str]:
    """Rewrite `--dry-run`, `--run-only a b`, `--max-concurrent=3` into draccus's form."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not token.startswith("--"):
            out.append(token)
            continue
        key, has_value, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if key not in names:
            out.append(token)
            continue
        values = [value] if has_value else []
        if not has_value:
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
        kind = str(hints[key])
        if hints[key] is bool:
            if len(values) > 1:
                raise SystemExit(f"--{key} takes at most one value (true/false), got {values}")
            values = values or ["true"]
        elif "list" in kind:
            if len(values) == 1 and values[0].startswith("["):
                pass  # already a YAML list
            else:
                values = [json.dumps(values)]
        elif len(values) != 1:
            raise SystemExit(f"--{key.replace('_', '-')} takes exactly one value, got {values or 'none'}")
        out += [f"--{key}", values[0]]
    return out


def parse_main_config(argv: Optional[Sequence[str]] = None, cls: type = ExecutorMainConfig) -> ExecutorMainConfig:
    """Parse a command line into `cls`: ExecutorMainConfig or a subclass adding a project's own options."""
    import draccus
    from draccus.utils import DecodingError

    args = normalize_argv(sys.argv[1:] if argv is None else argv, cls)
    try:
        config = draccus.parse(cls, args=args)
    except DecodingError as e:  # `--max-concurrent abc`: one line naming the flag, not a traceback
        flag = "--" + ".".join(e.key_path).replace("_", "-") if e.key_path else "an option"
        reason = " ".join(line.strip() for line in e.message.splitlines() if line.strip())
        raise SystemExit(f"{flag}: {reason}") from None
    check_main_config(config)
    return config


def check_main_config(config: ExecutorMainConfig) -> None:
    """Refuse values no run can mean, with one line: an empty step selection, a concurrency below 1."""
    if config.run_only is not None:
        empty = [p for p in config.run_only if not str(p).strip()]
        if not config.run_only or empty:
            raise SystemExit("--run-only was given no pattern (an unset variable?), which would select every step. "
                             "Give regexes over step names, or leave --run-only out to run the whole DAG.")
    if config.max_concurrent is not None and config.max_concurrent < 1:
        raise SystemExit(f"--max-concurrent must be at least 1, got {config.max_concurrent}")
    if config.console is not None and config.console not in ("live", "plain"):
        raise SystemExit(f"--console must be live or plain, got {config.console!r}")
    for name in ("prefix", "ray_address", "cluster"):
        value = getattr(config, name)
        if value is not None and not str(value).strip():
            raise SystemExit(f"--{name.replace('_', '-')} was given an empty value (an unset variable?)")


def executor_main(steps: Sequence[ExecutorStep], description: Optional[str] = None,
                  config: Optional[ExecutorMainConfig] = None, argv: Optional[Sequence[str]] = None,
                  experiment_name: Optional[str] = None, env: Optional[dict[str, str]] = None,
                  report: Optional[ReportBuilder] = None) -> int:
    """Plan and run `steps` as the command line asks; exit non-zero naming failed steps.

    `env`: environment variables every step's Ray task gets (on a cluster, workers do not inherit the
    driver's environment). `report`: builds the experiment log's report sections from its record at
    the end of the run (pipeline.experiment_log.add_report).

    Everything it prints and logs, and what Ray forwards from the steps, is redacted like the files
    under the prefix (pipeline.redacted_output)."""
    try:
        if config is None:
            config = parse_main_config(argv)
        else:
            check_main_config(config)
    except SystemExit as e:  # its message echoes flag values
        raise SystemExit(redact(e.code) if isinstance(e.code, str) else e.code) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with redacted_output():
        return _run_main(steps, description, config, experiment_name, env, report)


def _run_main(steps: Sequence[ExecutorStep], description: Optional[str], config: ExecutorMainConfig,
              experiment_name: Optional[str], env: Optional[dict[str, str]], report: Optional[ReportBuilder]) -> int:
    prefix = config.prefix or default_prefix()
    try:
        executor = Executor(prefix, experiment_name=experiment_name, description=description,
                            ray_address=config.ray_address, env=env, cluster_file=config.cluster,
                            verbose=config.verbose, report=report, console=config.console)
        result = executor.run(list(steps), dry_run=config.dry_run, run_only=config.run_only,
                              force_run_failed=config.force_run_failed, max_concurrent=config.max_concurrent)
    except (ExecutorError, PlanError, OSError, ClusterFileError, RelativePrefixError) as e:
        print(f"\n{e}", file=sys.stderr)
        raise SystemExit(1)
    except RunInterrupted as e:
        print(f"\n{e}", file=sys.stderr)
        raise SystemExit(130)
    except KeyboardInterrupt:  # before any step started (planning, connecting to Ray)
        print("\ninterrupted before any step started; nothing was marked. Rerun the same command.", file=sys.stderr)
        raise SystemExit(130)
    if result.unplaceable:  # a dry run with --cluster: these steps would wait forever
        print(f"\n{len(result.unplaceable)} step(s) can never run on the node types of {config.cluster}",
              file=sys.stderr)
        raise SystemExit(1)
    if not config.dry_run:
        print(f"experiment log: {result.record_url[:-5]}.html (summary: soda log {result.record_url})")
    return 0
