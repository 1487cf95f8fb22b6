"""A train step's output directory, and the one place its layout is known.

    TrainOutput(path).latest_checkpoint()    {path}/checkpoints/step-N with the largest complete N
    TrainOutput(path).latest_hf_export()     {path}/hf/step-N with the largest N holding config.json
    TrainOutput(path).summary()              {path}/summary.json
    TrainOutput.of(model_path)               the run a checkpoint or HF export belongs to

Layout (written by steps.training.train and steps.training.finetune, local or gs://):
    checkpoints/step-N/       Levanter checkpoints; metadata.json is written last: the step is complete
    hf/step-N/                HF exports; config.json marks one
    metrics.jsonl, metrics/   the logged rows (steps.training.metrics.read_metrics reads both)
    train_sessions.jsonl      one line per (re)start
    slice_events.jsonl        slice attempts that ended early
    summary.json              written last by the step
Every reader of a run (evaluation, fine-tuning, annealing, the scaling analysis) goes through here.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from pipeline.fileio import exists, join, read_json, url_to_fs

CHECKPOINTS = "checkpoints"
HF_EXPORTS = "hf"
SUMMARY = "summary.json"
CHECKPOINT_MARKER = "metadata.json"  # Levanter writes it last
HF_MARKER = "config.json"


def is_checkpoint(path: str) -> bool:
    """Whether `path` is one complete Levanter checkpoint."""
    return exists(join(path, CHECKPOINT_MARKER))


def is_hf_dir(path: str) -> bool:
    """Whether `path` is an HF model directory."""
    return exists(join(path, HF_MARKER))


class TrainOutput:
    """The output directory of one train (or fine-tune) step."""

    def __init__(self, path: str):
        self.path = path.rstrip("/")

    def __repr__(self) -> str:
        return f"TrainOutput({self.path!r})"

    @classmethod
    def of(cls, path: str) -> Optional["TrainOutput"]:
        """The run `path` is, or holds as `checkpoints/step-N` or `hf/step-N`; None when it is no run's."""
        if not path:
            return None
        candidates = [path.rstrip("/")]
        parts = candidates[0].rsplit("/", 2)
        if len(parts) == 3 and parts[1] in (CHECKPOINTS, HF_EXPORTS) and re.fullmatch(r"step-\d+", parts[2]):
            candidates.append(parts[0])
        for candidate in candidates:
            if exists(join(candidate, SUMMARY)):
                return cls(candidate)
        return None

    # ---- files ---------------------------------------------------------------------------------

    @property
    def checkpoints_dir(self) -> str:
        return join(self.path, CHECKPOINTS)

    @property
    def hf_dir(self) -> str:
        return join(self.path, HF_EXPORTS)

    def file(self, name: str) -> str:
        return join(self.path, name)

    def has_summary(self) -> bool:
        return exists(self.file(SUMMARY))

    def summary(self) -> dict[str, Any]:
        """summary.json (FileNotFoundError naming it before the step has finished)."""
        return read_json(self.file(SUMMARY))

    def is_plumbing(self) -> bool:
        """Whether the finished run says its outputs are a plumbing run's."""
        summary = read_json(self.file(SUMMARY), default=None)
        return bool(summary and summary.get("plumbing_run"))

    # ---- checkpoints and exports ---------------------------------------------------------------

    def checkpoints(self) -> list[tuple[int, str]]:
        """(step, path) of the complete Levanter checkpoints, by step."""
        return _complete_steps(self.checkpoints_dir, CHECKPOINT_MARKER)

    def latest_checkpoint(self) -> Optional[str]:
        found = self.checkpoints()
        return found[-1][1] if found else None

    def hf_exports(self) -> list[tuple[int, str]]:
        """(step, path) of the HF exports, by step."""
        return _complete_steps(self.hf_dir, HF_MARKER)

    def latest_hf_export(self) -> Optional[str]:
        found = self.hf_exports()
        return found[-1][1] if found else None


def latest_checkpoint_of(path: str) -> str:
    """`path` if it is one checkpoint, else the latest checkpoint of the run it names (or of a bare
    directory of `step-N` checkpoints); FileNotFoundError when there is none."""
    if is_checkpoint(path):
        return path
    run = TrainOutput(path)
    found = run.checkpoints() or _complete_steps(path, CHECKPOINT_MARKER)
    if not found:
        raise FileNotFoundError(f"no Levanter checkpoint ({CHECKPOINTS}/step-N/{CHECKPOINT_MARKER}) under {path!r}")
    return found[-1][1]


def _complete_steps(base: str, marker: str) -> list[tuple[int, str]]:
    """(N, path) of `{base}/step-N` holding `marker` (written last: the step is complete), by N."""
    if not exists(base):
        return []
    fs, p = url_to_fs(base)
    found = []
    for entry in fs.ls(p, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if re.fullmatch(r"step-\d+", name) and exists(join(base, name, marker)):
            found.append((int(name[5:]), join(base, name)))
    return sorted(found)
