"""A local multi-node Ray cluster (every node a raylet process on this machine) with fake TPU and GPU
hosts, for rehearsals and tests.

A fake TPU host advertises what Ray's TPU support advertises on a real slice's host
(ray/_private/accelerators/tpu.py): `TPU: <chips per host>`, `<slice name>: 1`,
`accelerator_type:TPU-<GEN>: 1`, and on host 0 `TPU-<type>-head: 1`, with the node labels
`ray.io/tpu-slice-name`, `ray.io/tpu-worker-id` and `ray.io/tpu-pod-type`. Its processes see one
CPU JAX device per chip (`XLA_FLAGS=--xla_force_host_platform_device_count=<chips per host>`), so
a slice's hosts form one multi-process JAX mesh of the slice's device count. A fake GPU host
advertises `GPU: n` (torch finds no CUDA and runs on the CPU).

    with LocalTpuCluster(tpu_type="v5p-16") as cluster:      # 2 fake hosts of 4 chips
        ray.init(address=cluster.address)

    LocalCluster([LocalNode("cpu_worker", num_cpus=2), *fake_tpu_slice("v5p-16", "rehearsal-v5p-16-0")])

CLI: `python -m infra.local_cluster --tpu-type v5p-16 [--slices 1]` starts it, prints the address
(`RAY_ADDRESS=...`), and stops it on Ctrl-C. `stop()` ends only this cluster's processes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional
from steps.training.launch import slice_spec

logger = logging.getLogger(__name__)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class LocalNode:
    """One raylet: its node type (for reports), what it advertises to Ray, and its processes' environment."""

    node_type: str
    num_cpus: float = 1
    num_gpus: float = 0
    resources: dict[str, float] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def fake_tpu_slice(tpu_type: str, slice_name: str, node_type: Optional[str] = None,
                   cpus_per_host: float = 1) -> list[LocalNode]:
    """The hosts of one fake `tpu_type` slice named `slice_name`, host 0 first."""
    spec = slice_spec(tpu_type)
    hosts = []
    for host in range(spec.hosts):
        resources = {"TPU": float(spec.chips_per_host), slice_name: 1.0,
                     f"accelerator_type:TPU-{spec.generation.upper()}": 1.0}
        if host == 0:
            resources[spec.head_resource] = 1.0
        hosts.append(LocalNode(
            node_type=node_type or f"tpu_{tpu_type}", num_cpus=cpus_per_host, resources=resources,
            env={"JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={spec.chips_per_host}"},
            labels={"ray.io/tpu-slice-name": slice_name, "ray.io/tpu-worker-id": str(host),
                    "ray.io/tpu-pod-type": tpu_type}))
    return hosts


class LocalCluster:
    def __init__(self, nodes: list[LocalNode], head_cpus: float = 0, object_store_mb: int = 80):
        """`nodes`: the worker nodes; the head has `head_cpus` CPUs. The cluster keeps its session files
        (and its `ray_current_cluster`) in a temp dir of its own, so a `ray.init()` elsewhere on this
        machine never joins it by accident."""
        self.nodes = list(nodes)
        self.temp_dir: Optional[str] = None
        self.head_cpus = head_cpus
        self.object_store_bytes = object_store_mb * 1024 * 1024
        self._cluster = None
        self.started: list[tuple[LocalNode, object]] = []  # (spec, ray node)

    @property
    def address(self) -> str:
        return self._cluster.address

    def start(self) -> "LocalCluster":
        from ray.cluster_utils import Cluster

        # Worker processes inherit the raylets' environment: make the repo importable there.
        path = os.environ.get("PYTHONPATH", "")
        if REPO not in path.split(os.pathsep):
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, path) if p)
        # Every node is a local process. Ray's client rewrites 127.0.0.1 to this machine's own
        # address when it connects, so the nodes keep Ray's default (local) node address.
        import tempfile

        self.temp_dir = tempfile.mkdtemp(prefix="soda-ray-", dir="/tmp")  # short: Ray's socket paths are limited
        common = dict(object_store_memory=self.object_store_bytes, temp_dir=self.temp_dir)
        self._cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=self.head_cpus,
                                                                          include_dashboard=False, **common))
        try:
            for node in self.nodes:
                ray_node = self._cluster.add_node(
                    num_cpus=node.num_cpus, num_gpus=node.num_gpus, resources=dict(node.resources),
                    env_vars=dict(node.env) or None, labels=dict(node.labels) or None, **common)
                self.started.append((node, ray_node))
            self._cluster.wait_for_nodes()
        except BaseException:
            self.stop()
            raise
        logger.info("local Ray cluster at %s: %d nodes (%s)", self.address, len(self.nodes) + 1,
                    ", ".join(sorted({n.node_type for n in self.nodes})))
        return self

    def stop(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None
        self.started = []
        if self.temp_dir:
            import shutil

            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LocalTpuCluster(LocalCluster):
    """A head (CPUs only) plus `slices` fake `tpu_type` slices."""

    def __init__(self, tpu_type: str = "v5p-16", slices: int = 1, cpus_per_host: int = 1,
                 head_cpus: int = 1, slice_prefix: str = "fake-tpu", object_store_mb: int = 80):
        self.spec = slice_spec(tpu_type)
        self.slice_names = [f"{slice_prefix}-{tpu_type}-{i}" for i in range(slices)]
        nodes = [host for name in self.slice_names for host in fake_tpu_slice(tpu_type, name, cpus_per_host=cpus_per_host)]
        super().__init__(nodes, head_cpus=head_cpus, object_store_mb=object_store_mb)

    @property
    def host_nodes(self) -> dict[str, list]:
        """slice name -> its Ray nodes, host 0 first."""
        out: dict[str, list] = {name: [] for name in self.slice_names}
        for spec, ray_node in self.started:
            out[spec.labels["ray.io/tpu-slice-name"]].append(ray_node)
        return out


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local_cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tpu-type", default="v5p-16")
    parser.add_argument("--slices", type=int, default=1)
    parser.add_argument("--cpus-per-host", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)")
    args = parser.parse_args(argv)
    cluster = LocalTpuCluster(args.tpu_type, args.slices, args.cpus_per_host).start()
    print(f"RAY_ADDRESS={cluster.address}  ({args.slices} x {args.tpu_type}: {', '.join(cluster.slice_names)})")
    try:
        deadline: Optional[float] = time.time() + args.seconds if args.seconds else None
        while deadline is None or time.time() < deadline:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
