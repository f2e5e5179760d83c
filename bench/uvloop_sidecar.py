"""Run the sidecar on uvloop instead of asyncio's own event loop.

The harness starts this in place of ``python -m sidecar`` to measure whether
uvloop would help. The sidecar calls ``asyncio.run``, which creates its loop
through the event loop policy, so installing uvloop's policy first is enough.
"""

from __future__ import annotations

import asyncio

import uvloop

from sidecar.cli import main

if __name__ == "__main__":
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    raise SystemExit(main())
