"""Event loop choice for the servers the harness starts: asyncio's own or uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

LOOPS = ("asyncio", "uvloop")


def new_event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """Return a factory of new event loops of the named kind."""
    if name == "uvloop":
        import uvloop  # noqa: PLC0415 - only in the bench extra

        # Typed here, because without the bench extra mypy sees uvloop as Any.
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop
