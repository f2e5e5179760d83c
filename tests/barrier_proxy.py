"""An HTTP proxy in front of the emulator that records calls and lines up concurrent ones.

Every request is recorded as (operation, VersionStage). Requests for the chosen
Secrets Manager operation (the X-Amz-Target header), if any, are held until
``parties`` of them have arrived, or until ``timeout`` seconds pass, and are
then forwarded together. Two rotations that each reach PutSecretValue
have therefore both read AWSCURRENT before either moves it, which makes a race
that would otherwise depend on scheduling happen every time.

Requests for the ``deny`` operation, if any, get
AccessDeniedException and are never forwarded, as for a caller whose IAM policy
lacks that one action.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

from tools.emulator import LOOPBACK

FORWARD_TIMEOUT = 10.0
# Hop-by-hop and framing headers that the proxy sets itself.
_SKIPPED_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class BarrierProxy:
    """A threaded loopback proxy; use it as a context manager."""

    def __init__(
        self,
        upstream_port: int,
        operation: str | None = None,
        parties: int = 1,
        timeout: float = 10.0,
        deny: str | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.operation = operation
        self.deny = deny
        self.barrier = threading.Barrier(parties, timeout=timeout)
        self.requests_held = 0
        self.calls: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """Return the proxy's base URL."""
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.barrier.abort()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def calls_of(self, operation: str, stage: str | None = None) -> int:
        """Count the recorded calls of ``operation`` (for ``stage``, when given)."""
        with self._lock:
            return sum(
                1
                for name, version_stage in self.calls
                if name == operation and (stage is None or version_stage == stage)
            )

    def _record(self, target: str, body: bytes) -> None:
        operation = target.rpartition(".")[2]
        try:
            stage = json.loads(body).get("VersionStage")
        except ValueError:
            stage = None
        with self._lock:
            self.calls.append((operation, stage if isinstance(stage, str) else None))

    def _wait_at_barrier(self) -> None:
        with self._lock:
            self.requests_held += 1
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:
            # Timed out or aborted: forward anyway, so no client hangs.
            return

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                target = self.headers.get("X-Amz-Target", "")
                proxy._record(target, body)
                if proxy.deny is not None and target.endswith("." + proxy.deny):
                    self._send_access_denied(proxy.deny)
                    return
                if proxy.operation is not None and target.endswith("." + proxy.operation):
                    proxy._wait_at_barrier()
                headers = {
                    name: value
                    for name, value in self.headers.items()
                    if name.lower() not in _SKIPPED_HEADERS
                }
                upstream = http.client.HTTPConnection(
                    LOOPBACK, proxy.upstream_port, timeout=FORWARD_TIMEOUT
                )
                try:
                    upstream.request("POST", self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    reply_body = reply.read()
                finally:
                    upstream.close()
                self.send_response(reply.status)
                for name, value in reply.getheaders():
                    if name.lower() not in _SKIPPED_HEADERS:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply_body)))
                self.end_headers()
                self.wfile.write(reply_body)

            def _send_access_denied(self, operation: str) -> None:
                reply_body = json.dumps(
                    {
                        "__type": "AccessDeniedException",
                        "message": f"User is not authorized to perform: secretsmanager:{operation}",
                    }
                ).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(reply_body)))
                self.end_headers()
                self.wfile.write(reply_body)

            def log_message(self, *args: object) -> None:  # noqa: ARG002 - silences the base class
                return

        return Handler
