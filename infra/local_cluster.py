"""A local multi-node Ray cluster (all processes on this machine) with fake TPU hosts, for tests and dry runs.

One head node (CPUs only) plus one node per fake TPU host. Host i of slice `name` gets Ray's TPU
resources as on a real pod: `{"TPU": chips_per_host, name: 1}`, and host 0 also
`{"TPU-<type>-head": 1}` (see steps.training.launch). Every node is its own raylet process.

    with LocalTpuCluster(tpu_type="v5p-16") as cluster:      # 2 fake hosts of 4 chips
        ray.init(address=cluster.address)
        ...

CLI: `python -m infra.local_cluster --tpu-type v5p-16 [--slices 1]` starts it, prints the address
(`RAY_ADDRESS=...`), and stops it on Ctrl-C. `stop()` ends only this cluster's processes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Optional

logger = logging.getLogger(__name__)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LocalTpuCluster:
    def __init__(self, tpu_type: str = "v5p-16", slices: int = 1, cpus_per_host: int = 1,
                 head_cpus: int = 1, slice_prefix: str = "fake-tpu", object_store_mb: int = 80):
        from steps.training.launch import slice_spec

        self.spec = slice_spec(tpu_type)
        self.slices = slices
        self.cpus_per_host = cpus_per_host
        self.head_cpus = head_cpus
        self.slice_names = [f"{slice_prefix}-{tpu_type}-{i}" for i in range(slices)]
        self.object_store_bytes = object_store_mb * 1024 * 1024
        self._cluster = None
        self.host_nodes: dict[str, list] = {}

    @property
    def address(self) -> str:
        return self._cluster.address

    def host_resources(self, slice_name: str, host: int) -> dict[str, float]:
        res = {"TPU": float(self.spec.chips_per_host), slice_name: 1.0}
        if host == 0:
            res[self.spec.head_resource] = 1.0
        return res

    def start(self) -> "LocalTpuCluster":
        from ray.cluster_utils import Cluster

        # Worker processes inherit the raylets' environment: make the repo importable there.
        path = os.environ.get("PYTHONPATH", "")
        if REPO not in path.split(os.pathsep):
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, path) if p)
        # Every node is a local process. Ray's client rewrites 127.0.0.1 to this machine's own
        # address when it connects, so the nodes keep Ray's default (local) node address.
        common = dict(object_store_memory=self.object_store_bytes)
        self._cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=self.head_cpus, **common))
        for name in self.slice_names:
            self.host_nodes[name] = [
                self._cluster.add_node(num_cpus=self.cpus_per_host, resources=self.host_resources(name, h), **common)
                for h in range(self.spec.hosts)
            ]
        self._cluster.wait_for_nodes()
        logger.info("local Ray cluster at %s: %d slice(s) of %s, %d fake hosts each", self.address,
                    self.slices, self.spec.tpu_type, self.spec.hosts)
        return self

    def stop(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None

    def __enter__(self) -> "LocalTpuCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


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
