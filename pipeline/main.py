"""`executor_main`: the command line of every experiment script.

    python experiments/exp1699_soda_all.py [--dry-run] [--prefix P] [--run-only REGEX ...]
        [--force-run-failed BOOL] [--max-concurrent N] [--ray-address ADDR] [--cluster FILE]

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

from pipeline.step import ExecutorStep


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

    args = normalize_argv(sys.argv[1:] if argv is None else argv, cls)
    return draccus.parse(cls, args=args)


def executor_main(steps: Sequence[ExecutorStep], description: Optional[str] = None,
                  config: Optional[ExecutorMainConfig] = None, argv: Optional[Sequence[str]] = None,
                  experiment_name: Optional[str] = None, env: Optional[dict[str, str]] = None) -> int:
    """Plan and run `steps` as the command line asks; exit non-zero naming failed steps.

    `env`: environment variables every step's Ray task gets (on a cluster, workers do not inherit the
    driver's environment)."""
    from pipeline.executor import Executor, ExecutorError
    from pipeline.experiment_log import default_prefix
    from pipeline.placement import ClusterFileError
    from pipeline.plan import PlanError

    if config is None:
        config = parse_main_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prefix = config.prefix or default_prefix()
    executor = Executor(prefix, experiment_name=experiment_name, description=description,
                        ray_address=config.ray_address, env=env, cluster_file=config.cluster)
    try:
        result = executor.run(list(steps), dry_run=config.dry_run, run_only=config.run_only,
                              force_run_failed=config.force_run_failed, max_concurrent=config.max_concurrent)
    except (ExecutorError, PlanError, OSError, ClusterFileError) as e:
        print(f"\n{e}", file=sys.stderr)
        raise SystemExit(1)
    if result.unplaceable:  # a dry run with --cluster: these steps would wait forever
        print(f"\n{len(result.unplaceable)} step(s) can never run on the node types of {config.cluster}",
              file=sys.stderr)
        raise SystemExit(1)
    if not config.dry_run:
        print(f"experiment log: {result.record_url[:-5]}.html (summary: soda log {result.record_url})")
    return 0
