"""A multi-node Ray cluster on 127.0.0.1 made with `ray start`, for tests; isolated and always cleaned up.

    with RayStartCluster(nodes=[{"head": 1}, {"big": 1}]) as cluster:   # a head and one worker node
        subprocess.run([..., "--ray-address", cluster.address])

Every node is a `ray start --block` in its own session, with free ports and its own temp dir, so it
never meets another Ray on this machine (nor writes /tmp/ray/ray_current_cluster); `stop` kills
exactly those sessions. Never call `ray stop`: it would kill every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayStartCluster:
    def __init__(self, nodes: list[dict[str, float]], cpus_per_node: int = 1, object_store_mb: int = 100):
        self.nodes = nodes
        self.cpus = cpus_per_node
        self.object_store = object_store_mb * 1024 * 1024
        self.port = free_port()
        self.temp_dir = tempfile.mkdtemp(prefix="soda-ray-", dir="/tmp")  # short: Ray's socket paths are limited
        self.procs: list[subprocess.Popen] = []
        self.address = ""

    def env(self) -> dict[str, str]:
        env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=REPO, RAY_USAGE_STATS_ENABLED="0")
        env.pop("RAY_ADDRESS", None)
        return env

    def _start(self, args: list[str], resources: dict[str, float], log: str) -> None:
        cmd = [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", f"--num-cpus={self.cpus}",
               f"--resources={json.dumps(resources)}", f"--object-store-memory={self.object_store}",
               f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats", *args]
        with open(os.path.join(self.temp_dir, log), "w") as out:
            self.procs.append(subprocess.Popen(cmd, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                                               start_new_session=True, cwd=REPO))

    def start(self, timeout: float = 120) -> "RayStartCluster":
        try:
            self._start(["--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}", "--include-dashboard=false",
                         f"--ray-client-server-port={free_port()}"], self.nodes[0], "head.log")
            self.address = self._wait_for_head(timeout)
            for i, resources in enumerate(self.nodes[1:]):
                self._start([f"--address={self.address}"], resources, f"worker-{i}.log")
            self.wait_for_nodes(len(self.nodes), timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_head(self, timeout: float) -> str:
        path = os.path.join(self.temp_dir, "ray_current_cluster")
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.procs[0].poll() is not None:
                raise RuntimeError(f"ray start --head exited: {self.log('head.log')[-2000:]}")
            if os.path.exists(path) and open(path).read().strip():
                return open(path).read().strip()
            time.sleep(0.2)
        raise TimeoutError(f"Ray head did not start in {timeout:.0f}s: {self.log('head.log')[-2000:]}")

    def log(self, name: str) -> str:
        path = os.path.join(self.temp_dir, name)
        return open(path).read() if os.path.exists(path) else ""

    def query(self, code: str, timeout: float = 60) -> object:
        """Run `code` (which sets `result`) in a fresh driver connected to the cluster; returns result."""
        script = (f"import json, ray\nray.init(address={self.address!r}, logging_level='ERROR')\n{code}\n"
                  "print('RESULT=' + json.dumps(result))\nray.shutdown()\n")
        done = subprocess.run([sys.executable, "-c", script], env=self.env(), capture_output=True, text=True,
                              timeout=timeout)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT=")]
        if not lines:
            raise RuntimeError(f"cluster query failed: {done.stdout[-1000:]} {done.stderr[-2000:]}")
        return json.loads(lines[-1][len("RESULT="):])

    def node_resources(self) -> dict[str, dict[str, float]]:
        """node id -> resources of each live node."""
        return self.query("result = {n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}")

    def wait_for_nodes(self, count: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.node_resources()) >= count:
                return
            time.sleep(1)
        raise TimeoutError(f"only {len(self.node_resources())} of {count} Ray nodes came up")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the node's session: raylet, gcs, workers, agents
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def leftover_pids(self) -> list[int]:
        """Processes still mentioning this cluster's temp dir or port (should be none after stop)."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().decode(errors="replace")
                with open(f"/proc/{pid}/stat") as f:
                    zombie = f.read().split(") ", 1)[1][0] == "Z"
            except OSError:
                continue
            if not zombie and (self.temp_dir in cmd or f"127.0.0.1:{self.port}" in cmd):
                found.append(int(pid))
        return found

    def __enter__(self) -> "RayStartCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

