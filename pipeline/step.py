"""What an experiment declares: steps, references to other steps' outputs, versioned values.

These are plain data. Nothing here hashes, touches storage or imports a framework, so an
experiment script that only builds steps imports in milliseconds.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Optional, TypeVar

ConfigT = TypeVar("ConfigT")

# A step name is a relative, slash-separated path such as "tokenized/yodas2-en".
_NAME_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@-]*$")
MAX_COMPONENT_LENGTH = 200
MAX_NAME_LENGTH = 512


def validate_step_name(name: str) -> None:
    """Raise ValueError unless `name` is a safe relative path for an output directory."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"step name must be a non-empty string, got {name!r}")
    if name.startswith("/") or "\\" in name or "://" in name:
        raise ValueError(
            f"step name {name!r} must be a relative path like 'tokenized/corpus-en' "
            "(no leading '/', no backslash, no URL scheme)"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"step name {name[:40]!r}... is {len(name)} characters; keep it under {MAX_NAME_LENGTH}")
    for part in name.split("/"):
        if len(part) > MAX_COMPONENT_LENGTH:
            raise ValueError(
                f"step name {name!r}: component {part[:40]!r}... is {len(part)} characters; filesystems allow "
                f"255 per path component and the hash adds 9, so keep each under {MAX_COMPONENT_LENGTH}"
            )
        if part in ("", ".", ".."):
            raise ValueError(f"step name {name!r} has an empty, '.' or '..' component")
        if not _NAME_COMPONENT.match(part):
            raise ValueError(
                f"step name {name!r}: component {part!r} may hold only letters, digits and "
                "'._+=@-', and must start with a letter or digit"
            )


HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray's marker resource of its head node


@dataclass(frozen=True)
class ResourceConfig:
    """What one step asks of the cluster. Never part of a step's identity.

    `tpu` names a slice type such as "v5p-64": the step's function supervises work it launches on
    such a slice (reserved by the slice's head resource `TPU-v5p-64-head`, Ray's TPU convention).
    So that it outlives every slice it uses (preemption), its own task runs on the Ray head node,
    holding no CPU there; `cpus` is then not used, and `gpus`, `memory_gb` or `custom` are refused.
    """

    cpus: float = 1.0
    memory_gb: Optional[float] = None
    gpus: float = 0.0
    tpu: Optional[str] = None
    custom: dict[str, float] = field(default_factory=dict)
    max_retries: int = 0  # Ray retries after a worker or node dies (not after an exception)

    def __post_init__(self) -> None:
        if self.tpu and (self.gpus or self.memory_gb or self.custom):
            raise ValueError(f"ResourceConfig(tpu={self.tpu!r}) runs its step on the Ray head node as the slice's "
                             "supervisor; it cannot also ask for gpus, memory_gb or custom resources there")

    @property
    def slice_head_resource(self) -> Optional[str]:
        """The resource that reserves one slice of `tpu` (its host 0), or None."""
        return f"TPU-{self.tpu}-head" if self.tpu else None

    def ray_options(self) -> dict[str, Any]:
        """The options of the step's own Ray task."""
        if self.tpu:  # the supervisor: on the head node, off every slice
            return {"num_cpus": 0, "max_retries": self.max_retries, "resources": {HEAD_NODE_RESOURCE: 0.001}}
        resources = dict(self.custom)
        options: dict[str, Any] = {
            "num_cpus": self.cpus,
            "num_gpus": self.gpus,
            "max_retries": self.max_retries,
        }
        if self.memory_gb:
            options["memory"] = int(self.memory_gb * 1024**3)
        if resources:
            options["resources"] = resources
        return options


@dataclass(frozen=True)
class VersionedValue(Generic[ConfigT]):
    """A config value that is part of the step's identity (see `versioned`)."""

    value: ConfigT


def unwrap_versioned(value: Any) -> Any:
    """The plain value inside a `versioned(...)` marker, or `value` itself (for checks at declaration)."""
    return value.value if isinstance(value, VersionedValue) else value


def versioned(value: ConfigT) -> ConfigT:
    """Mark `value` as changing what the step computes: it enters the step's hash."""
    if isinstance(value, (VersionedValue, InputName, OutputName, ExecutorStep)):
        raise TypeError(f"versioned() takes a plain value, not {type(value).__name__}")
    return VersionedValue(value)  # type: ignore[return-value]


@dataclass(frozen=True)
class InputName:
    """The output directory of `step`, or the sub-path `name` inside it.

    By default `step` is a dependency: it runs first, and the reading step waits for it. A
    `nonblocking()` reference (`block_on_step=False`) still enters the reader's hash, but the
    reader neither waits for `step` nor runs it (Marin's pseudo-dependency).
    """

    step: "ExecutorStep"
    name: Optional[str] = None
    block_on_step: bool = True

    def __post_init__(self) -> None:
        if self.name is not None:
            _validate_sub_path(self.name)

    def cd(self, name: str) -> "InputName":
        return dataclasses.replace(self, name=_join(self.name, name))  # keeps block_on_step

    def __truediv__(self, name: str) -> "InputName":
        return self.cd(name)

    def nonblocking(self) -> "InputName":
        """The same path, read without waiting for its step (e.g. a checkpoint of a run still training).

        The path still enters the reader's hash. The step itself runs only if another step reads it
        blocking or `--run-only` names it; the reader may see its output unfinished or absent.
        """
        return dataclasses.replace(self, block_on_step=False)


@dataclass(frozen=True)
class OutputName:
    """The running step's own output directory, or a sub-path inside it."""

    name: Optional[str] = None

    def __post_init__(self) -> None:
        if self.name is not None:
            _validate_sub_path(self.name)


def output_path_of(step: "ExecutorStep", name: Optional[str] = None) -> InputName:
    """A reference to `step`'s output (or `name` inside it); it makes `step` a dependency
    (add `.nonblocking()` to read the path without waiting for `step`)."""
    if not isinstance(step, ExecutorStep):
        raise TypeError(f"output_path_of() takes an ExecutorStep, got {type(step).__name__}")
    return InputName(step, name)


def this_output_path(name: Optional[str] = None) -> Any:
    """The output directory of the step whose config holds this value."""
    return OutputName(name)


@dataclass(frozen=True, eq=False)
class ExecutorStep(Generic[ConfigT]):
    """One node of the DAG: `fn(config)` writes its output under `{prefix}/{name}-{hash}`.

    Steps compare by identity; two declarations with the same name and the same hash are
    merged when they would compute the same thing, and rejected otherwise.

    `plumbing`: why this step's outputs are not meaningful (random weights, toy data), if they are not.
    The experiment log marks such a step, and every step built on its outputs, as a plumbing run. It is
    not part of the step's hash (the config that makes it so is).
    """

    name: str
    fn: Callable[[ConfigT], Any]
    config: ConfigT
    description: Optional[str] = None
    resources: Optional[ResourceConfig] = None
    override_output_path: Optional[str] = None
    plumbing: Optional[str] = None

    def __post_init__(self) -> None:
        validate_step_name(self.name)
        if not callable(self.fn):
            raise TypeError(f"step {self.name!r}: fn must be callable, got {type(self.fn).__name__}")
        if self.resources is not None and not isinstance(self.resources, ResourceConfig):
            raise TypeError(f"step {self.name!r}: resources must be a ResourceConfig")
        if self.plumbing is not None and not (isinstance(self.plumbing, str) and self.plumbing.strip()):
            raise TypeError(f"step {self.name!r}: plumbing must be a reason (a non-empty string) or None")

    def cd(self, name: str) -> InputName:
        return InputName(self, name)

    def __truediv__(self, name: str) -> InputName:
        return InputName(self, name)

    def with_output_path(self, path: str) -> "ExecutorStep[ConfigT]":
        return dataclasses.replace(self, override_output_path=path)

    def __repr__(self) -> str:
        return f"ExecutorStep({self.name!r})"


def _validate_sub_path(name: str) -> None:
    if not isinstance(name, str) or not name or name.startswith("/"):
        raise ValueError(f"sub-path must be a non-empty relative path, got {name!r}")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError(f"sub-path {name!r} has an empty, '.' or '..' component")


def _join(a: Optional[str], b: str) -> str:
    return b if a is None else f"{a}/{b}"
