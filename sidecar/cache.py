"""Immutable key snapshots and the cache that serves them.

A snapshot is built once per secret version, together with the response bytes that
the keys API sends, so the request path only reads one attribute. The cache
replaces its state in one assignment, so a reader never sees half of a pair.

Long-poll requests wait on one asyncio.Event per loaded version: loading a new
version sets the event, which wakes every waiter at once, and installs a fresh
event for the next version.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sidecar.secret import KeyPair


def format_rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with a Z suffix."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def key_digest(key: str) -> bytes:
    """Hash a key to a fixed-length digest, so comparisons do not depend on its length."""
    # surrogatepass: a JSON request body may hold lone surrogates, which must not raise.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """One loaded secret version and the response bodies prepared for it."""

    pair: KeyPair
    version_id: str
    created_date: datetime | None
    loaded_at: datetime
    etag: str = field(init=False)
    fresh_body: bytes = field(init=False, repr=False)
    stale_body: bytes = field(init=False, repr=False)
    # SHA-256 digests that POST /v1/verify compares against. Without a previous key
    # the digest is of random bytes, so the comparison still runs and never matches.
    current_digest: bytes = field(init=False, repr=False)
    previous_digest: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # frozen=True blocks normal assignment, and these values derive from the
        # fields above, so they are set once here.
        object.__setattr__(self, "etag", f'"{self.version_id}"')
        object.__setattr__(self, "fresh_body", self._body(stale=False))
        object.__setattr__(self, "stale_body", self._body(stale=True))
        previous = self.pair.previous
        object.__setattr__(self, "current_digest", key_digest(self.pair.current))
        object.__setattr__(
            self,
            "previous_digest",
            key_digest(previous) if previous else hashlib.sha256(secrets.token_bytes(32)).digest(),
        )

    def _body(self, *, stale: bool) -> bytes:
        document = {
            "current": self.pair.current,
            "previous": self.pair.previous,
            "version_id": self.version_id,
            "created_date": None
            if self.created_date is None
            else format_rfc3339(self.created_date),
            "loaded_at": format_rfc3339(self.loaded_at),
            "stale": stale,
        }
        return json.dumps(document, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class CacheState:
    """Everything the request path reads, replaced as a whole on every change."""

    snapshot: KeySnapshot | None = None
    stale: bool = False
    last_error: str | None = None
    # time.monotonic() of the last successful poll, or None before the first.
    last_success: float | None = None

    @property
    def body(self) -> bytes:
        """Return the prepared /v1/keys body; only valid once a snapshot is loaded."""
        assert self.snapshot is not None  # noqa: S101 - callers check snapshot first
        return self.snapshot.stale_body if self.stale else self.snapshot.fresh_body


class KeyCache:
    """Holds the current CacheState; the poller writes it and the API reads it."""

    def __init__(self, max_staleness: float = 0.0) -> None:
        self.state = CacheState()
        self.max_staleness = max_staleness
        # Set when the next version loads or the cache closes, then replaced.
        self._version_changed = asyncio.Event()
        self.closed = False

    def record_success(self, snapshot: KeySnapshot | None) -> bool:
        """Store the result of a successful poll and tell whether the version changed.

        ``snapshot`` is None when the poll returned the version already served; the
        served snapshot, with its loaded_at and prepared bytes, is then kept.
        """
        previous = self.state.snapshot
        changed = snapshot is not None and (
            previous is None or previous.version_id != snapshot.version_id
        )
        kept = snapshot if changed else previous
        self.state = CacheState(snapshot=kept, stale=False, last_success=time.monotonic())
        if changed:
            self._wake_waiters()
        return changed

    async def wait_for_change(self, seconds: float) -> None:
        """Wait until another version loads, the cache closes, or ``seconds`` pass.

        Callers compare the served version before and after, and check ``closed``.
        """
        if self.closed:
            return
        # Every waiter shares this one event; the only per-waiter cost is its timeout.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._version_changed.wait(), seconds)

    def close(self) -> None:
        """Release every waiter now and make later waits return at once (at shutdown)."""
        self.closed = True
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        self._version_changed.set()
        self._version_changed = asyncio.Event()

    def record_failure(self, error_class: str) -> None:
        """Mark the served pair stale after a failed poll; the pair itself is kept."""
        state = self.state
        self.state = CacheState(
            snapshot=state.snapshot,
            stale=state.snapshot is not None,
            last_error=error_class,
            last_success=state.last_success,
        )

    def is_ready(self) -> bool:
        """Tell whether a pair is loaded and not past SIDECAR_MAX_STALENESS (the /readyz rule)."""
        return self.state.snapshot is not None and not self.past_max_staleness()

    def past_max_staleness(self, now: float | None = None) -> bool:
        """Tell whether the last success is older than SIDECAR_MAX_STALENESS."""
        if self.max_staleness <= 0:
            return False
        last_success = self.state.last_success
        if last_success is None:
            return False
        moment = time.monotonic() if now is None else now
        return moment - last_success > self.max_staleness

    def seconds_since_success(self) -> float | None:
        """Return the age of the last successful poll in seconds, or None before it."""
        last_success = self.state.last_success
        return None if last_success is None else time.monotonic() - last_success
