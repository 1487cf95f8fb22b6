"""The node types a Ray cluster has or may add, as Ray will see them: from a cluster YAML or the live cluster.

A `NodeType` holds the resources that ONE node of the type advertises to Ray, how many of them
the autoscaler may start, and for accelerators what a step on it gets: a TPU slice's type, hosts
and devices, a GPU machine's GPUs, and the memory of one device when known.

Ray's conventions this follows (Ray 2.60):
- Every host of a TPU slice advertises `TPU: <chips per host>`, `accelerator_type:TPU-<GEN>: 1` and
  `<slice name>: 1`; host 0 also `TPU-<type>-head: 1` (ray/_private/accelerators/tpu.py:
  `get_current_node_additional_resources`, `get_current_node_accelerator_type`; the
  `accelerator_type:` prefix in ray/_private/resource_and_label_spec.py). Chips per host are 4,
  except single-host v5litepod/v6e slices of up to 8 chips, which have all of them
  (`get_num_tpu_visible_chips_per_host`); v2/v3/v4/v5p count 2 cores per chip, v5litepod/v6e 1
  (`get_tpu_cores_per_chip`).
- A cluster launcher YAML's GCP TPU node type (`node_config.acceleratorType: v5p-64`, or
  `acceleratorConfig: {type, topology}`) is one slice: the GCP node provider adds
  `TPU-<type>-head: 1` to its resources (ray/autoscaler/_private/gcp/node_provider.py,
  `fillout_available_node_types_resources`), the type's declared `resources` are given to every
  host and the head resource is then removed from hosts other than 0
  (ray/autoscaler/_private/gcp/tpu_command_runner.py, `_maybe_remove_head_resource`). A declared
  `TPU` count wins over the detected one. So a slice node type here is its host 0. The slice name
  exists only once the slice does, so a node type from a file does not carry it.
- A GCE VM with `guestAccelerators` advertises its GPUs as `GPU` (detected, unless `resources`
  declares a count, which wins).
- An autoscaler may publish its node groups in the GCS (ray/_private/state.py,
  `GlobalState.get_cluster_config`: `node_group_configs` with `name`, `resources`, `max_count`,
  -1 meaning unbounded). Ray 2.60's own monitors (v1 and v2, `ray up`) do not publish them; other
  autoscalers may. Read through a private API, so any failure reads as "nothing published".

Not checked: a resource that a YAML node type leaves to Ray's detection at start (`CPU` or
`memory` not declared in `resources`) is unknown, and never a reason to refuse.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

logger = logging.getLogger(__name__)

HEAD_RESOURCE = re.compile(r"TPU-(.+)-head")


class ClusterFileError(ValueError):
    """A cluster YAML that cannot be read as a Ray cluster launcher config."""


@dataclass(frozen=True)
class TpuGeneration:
    cores_per_chip: int  # Ray's get_tpu_cores_per_chip
    devices_per_chip: int  # JAX devices: one per chip with megacore (v4, v5p) or one core per chip (v5e, v6e)
    hbm_gib_per_chip: float
    single_host_chips: int = 4  # the most chips one host of the generation holds


# HBM per chip, as Google lists it (cloud.google.com/tpu/docs/v2, v3, v4, v5p, v5e, v6e: "HBM
# capacity per chip"); for v5p the 95 GiB listed is what JAX can allocate of the 96 GiB physical.
# v2/v3 chips expose each of their 2 TensorCores as a JAX device, with half the chip's HBM each.
TPU_GENERATIONS: dict[str, TpuGeneration] = {
    "v2": TpuGeneration(2, 2, 16),
    "v3": TpuGeneration(2, 2, 32),
    "v4": TpuGeneration(2, 1, 32),
    "v5p": TpuGeneration(2, 1, 95),
    "v5litepod": TpuGeneration(1, 1, 16, single_host_chips=8),
    "v5e": TpuGeneration(1, 1, 16, single_host_chips=8),
    "v6e": TpuGeneration(1, 1, 32, single_host_chips=8),
}

# GPU memory by GCE accelerator name (cloud.google.com/compute/docs/gpus), GiB per GPU.
GPU_MEMORY_GIB: dict[str, float] = {
    "nvidia-tesla-t4": 16, "nvidia-tesla-v100": 16, "nvidia-tesla-p100": 16, "nvidia-l4": 24,
    "nvidia-tesla-a100": 40, "nvidia-a100-80gb": 80, "nvidia-h100-80gb": 80, "nvidia-h100-mega-80gb": 80,
}


@dataclass(frozen=True)
class TpuSlice:
    tpu_type: str  # "v5p-64"
    generation: str  # "v5p"
    chips: int
    hosts: int
    chips_per_host: int
    devices: int  # JAX devices in the whole slice
    device_memory_gib: float

    @property
    def head_resource(self) -> str:
        return f"TPU-{self.tpu_type}-head"


def tpu_slice(tpu_type: str) -> TpuSlice:
    """Chips, hosts, devices and device memory of a slice type such as "v5p-64" (cores) or "v6e-16" (chips)."""
    m = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", tpu_type or "")
    if not m or m.group(1) not in TPU_GENERATIONS:
        raise ValueError(f"TPU type {tpu_type!r} is not like 'v5p-64' or 'v6e-16' (generations: "
                         f"{', '.join(TPU_GENERATIONS)})")
    gen = TPU_GENERATIONS[m.group(1)]
    chips = int(m.group(2)) // gen.cores_per_chip
    if chips < 1:
        raise ValueError(f"TPU type {tpu_type!r} has no whole chip")
    per_host = chips if gen.single_host_chips > 4 and chips <= gen.single_host_chips else 4
    return TpuSlice(tpu_type, m.group(1), chips, math.ceil(chips / per_host), min(per_host, chips),
                    chips * gen.devices_per_chip, gen.hbm_gib_per_chip / gen.devices_per_chip)


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: Mapping[str, float]  # what ONE node advertises to Ray (a slice: its host 0); memory in bytes
    max_workers: Optional[int] = None  # how many the autoscaler may start; None: no stated bound
    accelerator: Optional[str] = None  # a TPU slice type ("v5p-64") or a GCE GPU name ("nvidia-tesla-a100")
    hosts: int = 1
    devices: int = 0  # accelerator devices: JAX devices of the whole slice, or GPUs of the node
    device_memory_gib: Optional[float] = None
    unknown: tuple[str, ...] = ()  # resources left to Ray's detection at start: not checked
    source: str = ""  # "cluster file PATH", "autoscaler", "live node"

    @property
    def is_tpu_slice(self) -> bool:
        return self.accelerator is not None and f"TPU-{self.accelerator}-head" in self.resources

    def fits(self, wanted: Mapping[str, float]) -> bool:
        return all(key in self.unknown or self.resources.get(key, 0) >= amount for key, amount in wanted.items())


def node_types_from_cluster_file(path: str) -> list[NodeType]:
    """The node types of a Ray cluster launcher YAML (`ray up`), as their nodes will advertise themselves."""
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ClusterFileError(f"cannot read the cluster file {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ClusterFileError(f"the cluster file {path} is not valid YAML: {e}") from e
    types = data.get("available_node_types") if isinstance(data, dict) else None
    if not isinstance(types, dict) or not types:
        raise ClusterFileError(f"the cluster file {path} has no `available_node_types`; a Ray cluster launcher "
                               "YAML lists each node type there with its `resources` and `node_config`")
    default_max = data.get("max_workers")
    head = data.get("head_node_type")
    return [_from_yaml(path, name, entry, default_max, name == head) for name, entry in types.items()]


def _from_yaml(path: str, name: str, entry: Any, default_max: Any, is_head: bool) -> NodeType:
    where = f"{path}: node type {name!r}"
    if not isinstance(entry, dict):
        raise ClusterFileError(f"{where} must be a mapping with `resources` and `node_config`")
    declared = entry.get("resources") or {}
    if not isinstance(declared, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in declared.values()):
        raise ClusterFileError(f"{where}: `resources` must map resource names to numbers, got {declared!r}")
    node = entry.get("node_config") or {}
    max_workers = 1 if is_head else entry.get("max_workers", default_max)
    unknown = tuple(k for k in ("CPU", "memory") if k not in declared)
    common = dict(max_workers=max_workers, unknown=unknown, source=f"cluster file {path}")
    tpu_type = _tpu_type(where, node)
    if tpu_type:
        try:
            spec = tpu_slice(tpu_type)
        except ValueError as e:
            raise ClusterFileError(f"{where}: {e}") from e
        resources = {"TPU": float(spec.chips_per_host), f"accelerator_type:TPU-{spec.generation.upper()}": 1.0}
        resources.update({k: float(v) for k, v in declared.items()})
        resources[spec.head_resource] = 1.0
        return NodeType(name, resources, accelerator=tpu_type, hosts=spec.hosts, devices=spec.devices,
                        device_memory_gib=spec.device_memory_gib, **common)
    resources = {k: float(v) for k, v in declared.items()}
    gpu_name, gpus = _guest_gpus(where, node)
    if gpus and "GPU" not in resources:
        resources["GPU"] = float(gpus)
    if resources.get("GPU"):
        return NodeType(name, resources, accelerator=gpu_name, devices=int(resources["GPU"]),
                        device_memory_gib=GPU_MEMORY_GIB.get(gpu_name or ""), **common)
    return NodeType(name, resources, **common)


def _tpu_type(where: str, node: dict) -> Optional[str]:
    if node.get("acceleratorType"):
        return str(node["acceleratorType"])
    config = node.get("acceleratorConfig")
    if not config:
        return None
    try:  # {type: V5P, topology: 4x4x4} -> v5p-128 (cores), as Ray's tpu_accelerator_config_to_type
        gen = str(config["type"]).lower().replace("v5lite_pod", "v5litepod")
        chips = math.prod(int(d) for d in str(config["topology"]).split("x"))
        return f"{gen}-{chips * TPU_GENERATIONS[gen].cores_per_chip}"
    except (KeyError, ValueError, TypeError) as e:
        raise ClusterFileError(f"{where}: acceleratorConfig {config!r} is not {{type: V5P, topology: 4x4x4}}") from e


def _guest_gpus(where: str, node: dict) -> tuple[Optional[str], int]:
    """(GCE accelerator name, count) of `node_config.guestAccelerators`."""
    entries = node.get("guestAccelerators") or []
    if not isinstance(entries, list):
        raise ClusterFileError(f"{where}: guestAccelerators must be a list of {{acceleratorType, acceleratorCount}}")
    names, count = [], 0
    for entry in entries:
        try:
            names.append(str(entry["acceleratorType"]).rstrip("/").rsplit("/", 1)[-1])
            count += int(entry.get("acceleratorCount", 1))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ClusterFileError(f"{where}: guestAccelerators entry {entry!r} needs acceleratorType and "
                                   "acceleratorCount") from e
    return (names[0] if names else None), count


def node_types_from_live_cluster(nodes: Optional[Sequence[Mapping[str, float]]] = None) -> list[NodeType]:
    """The connected Ray's node groups that its autoscaler published (when it does), then one node type
    per live node. `nodes`: the live nodes' resources (default: `ray.nodes()`'s alive ones)."""
    types = _published_node_groups()
    if nodes is None:
        import ray

        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for i, resources in enumerate(nodes):
        ips = [k[5:] for k in resources if k.startswith("node:") and not k.startswith("node:__")]
        shown = {k: float(v) for k, v in resources.items() if not k.startswith("node:")}
        types.append(_with_accelerator(NodeType(f"node {ips[0] if ips else i}", shown, max_workers=1,
                                                source="live node")))
    return types


def _published_node_groups() -> list[NodeType]:
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception as e:  # a private API: Ray Client, an older or newer Ray, no GCS access
        logger.debug("no autoscaler node groups readable: %s", e)
        return []
    if config is None:
        return []
    return [_with_accelerator(NodeType(group.name or f"group {i}", {k: float(v) for k, v in group.resources.items()},
                                       max_workers=None if group.max_count < 0 else group.max_count,
                                       source="autoscaler"))
            for i, group in enumerate(config.node_group_configs)]


def _with_accelerator(node_type: NodeType) -> NodeType:
    """A node type whose resources hold a slice head resource, completed with that slice's devices."""
    import dataclasses

    for key in node_type.resources:
        m = HEAD_RESOURCE.fullmatch(key)
        if m:
            try:
                spec = tpu_slice(m.group(1))
            except ValueError:
                return dataclasses.replace(node_type, accelerator=m.group(1))
            return dataclasses.replace(node_type, accelerator=spec.tpu_type, hosts=spec.hosts, devices=spec.devices,
                                       device_memory_gib=spec.device_memory_gib)
    return node_type
