"""The SODA experiment scripts' shared main: the executor's command line plus SODA's own options.

    python experiments/<script>.py [executor options] [--data-mirror URL] [--rehearsal]

- `--data-mirror URL` (or `$SODA_DATA_MIRROR`): downloads read through a mirror of the Hub and
  Common Crawl (steps.mirror); the setting reaches every step's Ray task. It changes no step's hash.
- `--rehearsal`: the declared DAG at toy scale (experiments.rehearsal); `soda rehearse` sets it.

Every run's experiment log ends with SODA's report (steps.report): results beside the paper's,
training runs, scaling fits and correlations.

Scripts call `executor_main(steps=..., description=...)` exactly as with `pipeline.executor_main`;
what a run, a rehearsal or a mirrored run means is decided here, never inside a script.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

from pipeline import ExecutorStep
from pipeline import main as pipeline_main
from steps.mirror import MIRROR_ENV
from steps.report import build_sections
from experiments.rehearsal import rehearsal_dag


@dataclass(frozen=True)
class SodaMainConfig(pipeline_main.ExecutorMainConfig):
    data_mirror: Optional[str] = None
    """Root of a dataset mirror (local dir, gs://...): downloads read there. Default: $SODA_DATA_MIRROR."""
    rehearsal: bool = False
    """Run the DAG at toy scale (tiny models, few examples, small slices): see experiments/rehearsal.py."""


def executor_main(steps: Sequence[ExecutorStep], description: Optional[str] = None,
                  argv: Optional[Sequence[str]] = None, experiment_name: Optional[str] = None) -> int:
    config = pipeline_main.parse_main_config(argv, SodaMainConfig)
    env: dict[str, str] = {}
    mirror = config.data_mirror or os.environ.get(MIRROR_ENV)
    if mirror:
        os.environ[MIRROR_ENV] = mirror  # steps run in-process on an embedded Ray read it too
        env[MIRROR_ENV] = mirror
    steps = list(steps)
    if config.rehearsal:
        steps = rehearsal_dag(steps)
        description = f"REHEARSAL at toy scale: {description or ''}".rstrip(": ")
    return pipeline_main.executor_main(steps, description, config=config, experiment_name=experiment_name, env=env,
                                       report=build_sections)
