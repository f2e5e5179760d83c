"""The key cache: immutable snapshots, stale marking and the staleness limit."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from sidecar.cache import KeyCache, KeySnapshot
from sidecar.secret import KeyPair

PAIR = KeyPair(current="current-key-0123456789", previous="previous-key-0123456789")


def snapshot(version_id: str = "v1") -> KeySnapshot:
    return KeySnapshot(
        pair=PAIR,
        version_id=version_id,
        created_date=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        loaded_at=datetime(2026, 1, 2, 3, 4, 6, 789000, tzinfo=UTC),
    )


def test_snapshot_prepares_bodies() -> None:
    """The fresh and stale bodies are prepared once, with RFC 3339 timestamps."""
    loaded = snapshot()

    fresh = json.loads(loaded.fresh_body)
    stale = json.loads(loaded.stale_body)

    assert fresh == {
        "current": PAIR.current,
        "previous": PAIR.previous,
        "version_id": "v1",
        "created_date": "2026-01-02T03:04:05.000Z",
        "loaded_at": "2026-01-02T03:04:06.789Z",
        "stale": False,
    }
    assert stale["stale"] is True
    assert loaded.etag == '"v1"'


def test_snapshot_is_immutable() -> None:
    """A snapshot cannot be changed after it is built, so readers never see half a pair."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot().version_id = "v2"  # type: ignore[misc]


def test_snapshot_repr_hides_keys() -> None:
    """repr() of a snapshot shows neither key."""
    text = repr(snapshot())

    assert PAIR.current not in text
    assert PAIR.previous is not None
    assert PAIR.previous not in text


def test_failure_marks_stale_and_keeps_pair() -> None:
    """A failed poll keeps the snapshot, marks it stale and records the error class."""
    cache = KeyCache()
    loaded = snapshot()
    cache.record_success(loaded)

    cache.record_failure("ThrottlingException")

    assert cache.state.snapshot is loaded
    assert cache.state.stale is True
    assert cache.state.last_error == "ThrottlingException"
    assert json.loads(cache.state.body)["stale"] is True


def test_failure_before_load_not_stale() -> None:
    """Before any load there is nothing to mark stale; the error class is kept for the 503."""
    cache = KeyCache()

    cache.record_failure("AccessDeniedException")

    assert cache.state.snapshot is None
    assert cache.state.stale is False
    assert cache.state.last_error == "AccessDeniedException"


def test_success_reports_change_once() -> None:
    """Only a new version id counts as a change; an unchanged poll keeps the old snapshot."""
    cache = KeyCache()
    first = snapshot("v1")

    assert cache.record_success(first) is True
    assert cache.record_success(None) is False
    assert cache.state.snapshot is first
    assert cache.record_success(snapshot("v2")) is True
    assert cache.state.snapshot is not first


def test_success_clears_stale() -> None:
    """A successful poll after failures clears the stale flag and the error."""
    cache = KeyCache()
    cache.record_success(snapshot())
    cache.record_failure("InternalServiceError")

    cache.record_success(None)

    assert cache.state.stale is False
    assert cache.state.last_error is None


def test_max_staleness_limit() -> None:
    """past_max_staleness turns true only after the configured age, and never when off."""
    limited = KeyCache(max_staleness=30)
    unlimited = KeyCache()
    limited.record_success(snapshot())
    unlimited.record_success(snapshot())
    last_success = limited.state.last_success
    assert last_success is not None

    assert limited.past_max_staleness(now=last_success + 29) is False
    assert limited.past_max_staleness(now=last_success + 31) is True
    assert unlimited.past_max_staleness(now=last_success + 10_000) is False
