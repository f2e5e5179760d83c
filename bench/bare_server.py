"""A bare aiohttp server that returns fixed bytes: the baseline for the sidecar.

It uses the same low-level ``aiohttp.web.Server`` as the sidecar's keys
listener and sends the same body and headers, but does no checks at all, so the
gap between the two is the cost of the sidecar's own request path. Run it as its
own process: ``python -m bench.bare_server --port P --body-file F --etag E``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from aiohttp import web

from bench.loops import LOOPS, new_event_loop_factory

# The reply to a POST, for comparison with a verify endpoint. The server reads
# the request body and then sends this fixed reply of the same shape.
VERIFY_REPLY = b'{"valid":true,"matched":"current"}'


def build_handler(body: bytes, etag: str) -> web.Server:
    """Build a low-level server whose handler returns ``body`` for every GET."""
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store", "ETag": etag}

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "POST":
            await request.read()
            return web.Response(body=VERIFY_REPLY, headers=headers)
        return web.Response(body=body, headers=headers)

    return web.Server(handle, access_log=None)


async def serve(port: int, body: bytes, etag: str) -> None:
    """Serve on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    runner = web.ServerRunner(build_handler(body, etag))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--etag", required=True)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    arguments = parser.parse_args()
    body = arguments.body_file.read_bytes()
    with asyncio.Runner(loop_factory=new_event_loop_factory(arguments.loop)) as runner:
        runner.run(serve(arguments.port, body, arguments.etag))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
