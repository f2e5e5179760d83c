"""POST /v1/refresh: poll Secrets Manager now, shared by concurrent callers and rate limited."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.poller import PollResult


@dataclass(frozen=True, slots=True)
class Throttled:
    """A refresh rejected because the last one started less than the minimum interval ago."""

    retry_after: int


@dataclass(frozen=True, slots=True)
class TimedOut:
    """A refresh whose poll did not finish within the time limit."""

    seconds: float


RefreshOutcome = PollResult | Throttled | TimedOut


class Refresher:
    """Starts at most one poll per ``min_interval`` and lets concurrent callers share it."""

    def __init__(
        self,
        request_poll: Callable[[], asyncio.Future[PollResult]],
        min_interval: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._request_poll = request_poll
        self._min_interval = min_interval
        self._timeout = timeout
        self._clock = clock
        self._in_flight: asyncio.Future[PollResult] | None = None
        self._last_started: float | None = None

    async def refresh(self) -> RefreshOutcome:
        """Join the refresh under way, start one, or return Throttled."""
        in_flight = self._in_flight
        if in_flight is None or in_flight.done():
            now = self._clock()
            last = self._last_started
            if last is not None and now - last < self._min_interval:
                # Retry-After takes whole seconds; rounding up never invites an early retry.
                return Throttled(retry_after=max(1, math.ceil(self._min_interval - (now - last))))
            self._last_started = now
            in_flight = self._in_flight = self._request_poll()
        try:
            # shield: a caller that gives up must not cancel the poll the others await.
            return await asyncio.wait_for(asyncio.shield(in_flight), self._timeout)
        except TimeoutError:
            return TimedOut(seconds=self._timeout)
