"""A step's identity: canonical encoding of values and the content hash of a step.

The hash covers the step name, its versioned values keyed by dotted config path, and each
dependency's `name-hash` with the sub-path it reads (marked when the reference is nonblocking).
It never covers physical paths, the prefix, resources or the accelerator, so the same
experiment has the same hashes on a laptop and on a TPU cluster. The encoding is canonical
JSON (sorted keys, no whitespace, Python's shortest float repr), so it is stable across
processes, PYTHONHASHSEED and machines; golden tests pin it across releases.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import pathlib
from typing import Any, Callable, Iterator

from pipeline.step import ExecutorStep, InputName, OutputName, VersionedValue

HASH_LENGTH = 8
IDENTITY_SCHEMA = 1  # bump only with a migration note: it changes every hash
# Appended to a nonblocking reference's "name-hash[/sub]": as in Marin, reading a step without
# waiting for it is another identity than depending on it, while hashes without one are unchanged.
NONBLOCKING_MARK = " (nonblocking)"


class EncodingError(TypeError):
    """A value that has no deterministic encoding was asked to enter a hash."""


def canonical(value: Any, where: str = "value") -> Any:
    """Turn `value` into plain JSON data with one deterministic form, or raise EncodingError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EncodingError(f"{where}: {value!r} has no canonical encoding (NaN/inf)")
        return value
    if isinstance(value, enum.Enum):
        return {"__enum__": f"{type(value).__name__}.{value.name}"}
    if isinstance(value, bytes):
        return {"__bytes__": value.hex()}
    if isinstance(value, pathlib.PurePath):
        return value.as_posix()
    if isinstance(value, (list, tuple)):
        return [canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [canonical(v, f"{where}{{}}") for v in value]
        return {"__set__": sorted(items, key=dumps)}
    if isinstance(value, dict):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise EncodingError(f"{where}: dict key {key!r} is not a string")
            out[key] = canonical(v, f"{where}.{key}")
        return out
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name), f"{where}.{f.name}")
                for f in dataclasses.fields(value)}
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return canonical(value.item(), where)  # numpy scalars
    raise EncodingError(
        f"{where}: a {type(value).__module__}.{type(value).__qualname__} has no deterministic "
        "encoding; use plain data (str, int, float, bool, None, list, dict, dataclass, enum)"
    )


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def digest(value: Any, length: int = HASH_LENGTH) -> str:
    return hashlib.sha256(dumps(value).encode()).hexdigest()[:length]


def walk_config(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Yield (dotted path, leaf) for every leaf of a config tree, markers included as leaves."""
    if isinstance(obj, (VersionedValue, InputName, OutputName, ExecutorStep)):
        yield path, obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from walk_config(getattr(obj, f.name), _dot(path, f.name))
    elif isinstance(obj, dict):
        for key, v in obj.items():
            yield from walk_config(v, _dot(path, str(key)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from walk_config(v, _dot(path, str(i)))
    else:
        yield path, obj


def map_config(obj: Any, leaf: Callable[[Any], Any]) -> Any:
    """Rebuild a config tree with each marker (versioned value, input, output) replaced."""
    if isinstance(obj, (VersionedValue, InputName, OutputName, ExecutorStep)):
        return leaf(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: map_config(getattr(obj, f.name), leaf)
                   for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, dict):
        return type(obj)((k, map_config(v, leaf)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(map_config(v, leaf) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_config(v, leaf) for v in obj)
    return obj


def as_input(marker: Any) -> InputName | None:
    if isinstance(marker, ExecutorStep):
        return InputName(marker)
    if isinstance(marker, InputName):
        return marker
    return None


def dependencies_of(step: ExecutorStep, nonblocking: bool = True) -> list[ExecutorStep]:
    """The distinct steps whose outputs `step`'s config reads, in order of first use.

    With `nonblocking=False`, only those it waits for: a step read only through `.nonblocking()`
    references is left out.
    """
    seen: dict[int, ExecutorStep] = {}
    for _, leaf in walk_config(step.config):
        ref = as_input(leaf)
        if ref is not None and (nonblocking or ref.block_on_step):
            seen.setdefault(id(ref.step), ref.step)
    return list(seen.values())


@dataclasses.dataclass(frozen=True)
class StepIdentity:
    """Everything that determines a step's hash, kept for explanations and diffs."""

    name: str
    versioned: dict[str, Any]  # dotted config path -> canonical value
    dependencies: dict[str, str]  # dotted config path -> "name-hash[/sub]", + NONBLOCKING_MARK if so
    hash: str

    @property
    def versioned_name(self) -> str:
        return f"{self.name}-{self.hash}"

    def nonblocking_inputs(self) -> dict[str, str]:
        """Dotted config path -> "name-hash[/sub]" of each reference read without waiting."""
        return {path: ref[: -len(NONBLOCKING_MARK)] for path, ref in self.dependencies.items()
                if ref.endswith(NONBLOCKING_MARK)}


def compute_identity(step: ExecutorStep, dep_ids: dict[int, StepIdentity]) -> StepIdentity:
    """Hash `step`; `dep_ids` maps id(dependency) to its already computed identity."""
    versioned: dict[str, Any] = {}
    deps: dict[str, str] = {}
    for path, leaf in walk_config(step.config):
        where = f"step {step.name!r}, config field {path or '<root>'!r}"
        if isinstance(leaf, VersionedValue):
            versioned[path] = canonical(leaf.value, where)
        elif (ref := as_input(leaf)) is not None:
            dep = dep_ids[id(ref.step)]
            deps[path] = dep.versioned_name + (f"/{ref.name}" if ref.name else "") + \
                ("" if ref.block_on_step else NONBLOCKING_MARK)
    payload = {"schema": IDENTITY_SCHEMA, "name": step.name, "versioned": versioned, "dependencies": deps}
    return StepIdentity(step.name, versioned, deps, digest(payload))


def describe_config(config: Any, resolve: Callable[[Any], Any]) -> dict[str, Any]:
    """A flat {dotted path: JSON value} view of a whole config, for records and diffs.

    Unlike identities this never fails: a value with no deterministic encoding is recorded by
    its type name, which is enough to say that a field changed type.
    """
    flat: dict[str, Any] = {}
    for path, leaf in walk_config(config):
        value = resolve(leaf)
        try:
            flat[path or "<root>"] = canonical(value)
        except EncodingError:
            flat[path or "<root>"] = {"__type__": f"{type(value).__module__}.{type(value).__qualname__}"}
    return flat


def _dot(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
