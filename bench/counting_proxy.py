"""A pass-through HTTP proxy that counts Secrets Manager calls and can fail them.

It sits between the sidecar and the emulator, so the calls are counted where AWS
would bill them, not where the sidecar reports them. Paths under
``/__bench/`` control it; every other request is forwarded to the upstream:

- ``GET /__bench/calls`` returns ``{"calls": [[unix_time, target, status], ...]}``,
  where target is the X-Amz-Target header (``secretsmanager.GetSecretValue``).
- ``POST /__bench/fail?seconds=N`` replies 503 to every call for N seconds.
- ``POST /__bench/reset`` forgets the recorded calls.

Run it as its own process: ``python -m bench.counting_proxy --port P --upstream URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

import aiohttp
from aiohttp import web

CONTROL_PREFIX = "/__bench/"
# Headers that describe one hop of the connection, not the message.
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}
)
# The error body that Secrets Manager sends with a 503, so botocore classifies
# the injected failure as it would a real one.
_UNAVAILABLE = json.dumps(
    {"__type": "ServiceUnavailable", "message": "injected by the benchmark proxy"}
).encode()
UPSTREAM_TIMEOUT_S = 10


class CountingProxy:
    """Forward requests to one upstream and record each call."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._fail_until = 0.0
        self.calls: list[tuple[float, str, int]] = []

    async def start(self) -> None:
        """Open the client session that forwards requests."""
        timeout = aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S)
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)

    async def close(self) -> None:
        """Close the client session."""
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Handle a control request, or forward one call and record it."""
        if request.path.startswith(CONTROL_PREFIX):
            return self._control(request)
        target = request.headers.get("X-Amz-Target", request.path)
        if time.monotonic() < self._fail_until:
            self.calls.append((time.time(), target, 503))
            return web.Response(
                status=503, body=_UNAVAILABLE, content_type="application/x-amz-json-1.1"
            )
        return await self._forward(request, target)

    async def _forward(self, request: web.BaseRequest, target: str) -> web.StreamResponse:
        assert self._session is not None  # noqa: S101 - start() runs before serving
        headers = {name: value for name, value in request.headers.items() if name.lower() != "host"}
        body = await request.read()
        async with self._session.request(
            request.method, self._upstream + request.path_qs, headers=headers, data=body
        ) as reply:
            payload = await reply.read()
            kept = {
                name: value
                for name, value in reply.headers.items()
                if name.lower() not in _HOP_HEADERS
            }
            self.calls.append((time.time(), target, reply.status))
            return web.Response(status=reply.status, body=payload, headers=kept)

    def _control(self, request: web.BaseRequest) -> web.Response:
        action = request.path.removeprefix(CONTROL_PREFIX)
        if action == "calls" and request.method == "GET":
            return web.json_response({"calls": self.calls})
        if action == "fail" and request.method == "POST":
            seconds = float(request.query.get("seconds", "0"))
            self._fail_until = time.monotonic() + seconds
            return web.json_response({"failing_for_s": seconds})
        if action == "reset" and request.method == "POST":
            self.calls.clear()
            return web.json_response({"calls": 0})
        return web.json_response({"error": f"unknown control request {action!r}"}, status=404)


async def serve(port: int, upstream: str) -> None:
    """Serve on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    proxy = CountingProxy(upstream)
    await proxy.start()
    runner = web.ServerRunner(web.Server(proxy.handle, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    await proxy.close()


def main() -> int:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL of the emulator")
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port, arguments.upstream))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
