"""Run a small aiohttp server in a background thread, for tests that stay synchronous.

The fault proxy and the credentials endpoint are both such servers. Each owns an
event loop in a daemon thread, listens on a free loopback port, and can stop
listening and listen again on the same port while the test runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, Self, TypeVar

from aiohttp import web

from tools.emulator import LOOPBACK, free_port

# Long enough for a slow handler to notice the stop; the servers hold no state
# worth draining.
SHUTDOWN_TIMEOUT = 1.0
CALL_TIMEOUT = 10.0

T = TypeVar("T")


class BackgroundServer:
    """An aiohttp application served from its own thread on ``127.0.0.1:port``."""

    def __init__(self, name: str) -> None:
        self.port = free_port()
        self._name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Return the base URL of the server."""
        return f"http://{LOOPBACK}:{self.port}"

    def application(self) -> web.Application:
        """Build the aiohttp application; subclasses add their routes."""
        raise NotImplementedError

    def start(self) -> Self:
        """Start the thread and listen."""
        self._thread.start()
        self.listen()
        return self

    def listen(self) -> None:
        """Listen on the port again after ``stop_listening``; does nothing if listening."""
        self.call(self._listen())

    def stop_listening(self) -> None:
        """Close the listening socket and every open connection: new connections are refused."""
        self.call(self._stop_listening())

    @property
    def listening(self) -> bool:
        """Tell whether the server accepts connections."""
        return self._runner is not None

    def close(self) -> None:
        """Stop listening, stop the loop and join the thread."""
        if not self._thread.is_alive():
            return
        self.stop_listening()
        self.call(self.on_close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CALL_TIMEOUT)
        self._loop.close()

    async def on_close(self) -> None:
        """Release what the subclass opened in the loop (client sessions)."""

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` in the server's loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=CALL_TIMEOUT)

    async def _listen(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(
            self.application(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        # reuse_address lets the port be bound again while old connections sit in
        # TIME_WAIT, so "refused" can end on the same address.
        await web.TCPSite(runner, LOOPBACK, self.port, reuse_address=True).start()
        self._runner = runner

    async def _stop_listening(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            # cleanup() also closes idle keep-alive connections, which a client
            # would otherwise reuse without ever seeing a refused connect.
            await runner.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
