"""Rewriting a declared DAG: the same steps and edges, each step possibly replaced.

A transformation such as a rehearsal's scale-down is a function `rule(step) -> step` applied to
every step reachable from the roots, dependencies first. The rule sees a step whose config
already points at the rewritten dependencies, and returns it unchanged, or a copy with another
config or resources (it may even reference new steps, which then join the DAG). Experiment
scripts stay untouched: the shared main applies the transformation to what they declare.

    steps = rewrite_dag(steps, lambda step: RULES.get(step.fn, keep)(step))
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from pipeline.identity import as_input, map_config
from pipeline.plan import topological_order
from pipeline.step import ExecutorStep

Rule = Callable[[ExecutorStep], ExecutorStep]


def rewrite_dag(roots: Sequence[ExecutorStep], rule: Rule) -> list[ExecutorStep]:
    """The DAG under `roots` with every step passed through `rule`; returns the new roots in order.

    Each step is rewritten once, however many steps depend on it, so shared dependencies stay
    shared. A rule must return an ExecutorStep (TypeError naming the step otherwise).
    """
    new: dict[int, ExecutorStep] = {}

    def relink(marker):
        ref = as_input(marker)
        if ref is None or id(ref.step) not in new:
            return marker
        target = new[id(ref.step)]
        return target if isinstance(marker, ExecutorStep) else dataclasses.replace(marker, step=target)

    for step in topological_order(roots):
        linked = dataclasses.replace(step, config=map_config(step.config, relink))
        result = rule(linked)
        if not isinstance(result, ExecutorStep):
            raise TypeError(f"rewrite rule returned {type(result).__name__} for step {step.name!r}; "
                            "it must return an ExecutorStep")
        new[id(step)] = result
    return [new[id(root)] for root in roots]
