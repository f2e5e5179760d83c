"""Immutable key snapshots and the cache that serves them.

A snapshot is built once per secret version, together with the response bytes that
the keys API sends, so the request path only reads one attribute. The cache
replaces its state in one assignment, so a reader never sees half of a pair.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sidecar.secret import KeyPair


def format_rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with a Z suffix."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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

    def __post_init__(self) -> None:
        # frozen=True blocks normal assignment, and these values derive from the
        # fields above, so they are set once here.
        object.__setattr__(self, "etag", f'"{self.version_id}"')
        object.__setattr__(self, "fresh_body", self._body(stale=False))
        object.__setattr__(self, "stale_body", self._body(stale=True))

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
        return changed

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
