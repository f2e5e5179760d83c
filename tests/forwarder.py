"""A counting HTTP forwarder in front of the emulator, run in a thread.

The sidecar's Secrets Manager endpoint points here. Each request is counted by
its X-Amz-Target (for example ``secretsmanager.GetSecretValue``), held for
``delay`` seconds, and passed on to the emulator unchanged.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from tools.emulator import LOOPBACK


class CountingForwarder:
    """Forwards every request to ``upstream`` and counts them by X-Amz-Target."""

    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or LOOPBACK
        self.upstream_port = parts.port or 80
        self.delay = delay
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """Return the URL to use as AWS_ENDPOINT_URL_SECRETS_MANAGER."""
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def count(self, target: str) -> int:
        """Return how many requests named ``target`` (say GetSecretValue) went through."""
        with self._lock:
            return sum(n for name, n in self.calls.items() if name.endswith("." + target))

    def record(self, target: str) -> None:
        """Count one request."""
        with self._lock:
            self.calls[target] += 1

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler_for(forwarder: CountingForwarder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            forwarder.record(self.headers.get("X-Amz-Target", "(none)"))
            if forwarder.delay:
                time.sleep(forwarder.delay)
            connection = http.client.HTTPConnection(
                forwarder.upstream_host, forwarder.upstream_port, timeout=10
            )
            try:
                # The Host header passes through unchanged: it is part of the signature.
                connection.request("POST", self.path, body=body, headers=dict(self.headers))
                reply = connection.getresponse()
                payload = reply.read()
            finally:
                connection.close()
            self.send_response(reply.status)
            for name, value in reply.getheaders():
                if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class names it
            """Keep the test output quiet."""

    return Handler
