"""The poller: jittered waits, backoff bounds, and permanent failures from the emulator."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from tenacity import RetryCallState

from sidecar.cache import KeyCache
from sidecar.metrics import Metrics
from sidecar.poller import EqualJitterBackoff, Poller
from sidecar.settings import load_settings
from sidecar.source import SecretSource
from tests.conftest import CURRENT_KEY, PREVIOUS_KEY, pair_string
from tests.helpers import SidecarProcess, wait_until


def backoff_waits(initial: float, maximum: float, attempts: int) -> list[float]:
    """Return the backoff wait before each retry from attempt 1 to ``attempts``."""
    backoff = EqualJitterBackoff(initial, maximum, random.Random(7))
    waits = []
    for attempt in range(1, attempts + 1):
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        waits.append(backoff(state))
    return waits


def test_backoff_grows_and_caps() -> None:
    """Attempt n waits between half and all of min(max, initial x 2^(n-1))."""
    waits = backoff_waits(initial=1, maximum=10, attempts=8)

    for attempt, wait in enumerate(waits, start=1):
        ceiling = min(10, 2 ** (attempt - 1))
        assert ceiling / 2 <= wait <= ceiling


def test_poll_interval_jitter_bounds() -> None:
    """Each normal wait stays within the interval plus or minus the jitter fraction."""
    settings = load_settings(
        {
            "SIDECAR_SECRET_ID": "s",
            "SIDECAR_REQUIRE_TOKEN": "false",
            "SIDECAR_POLL_INTERVAL": "10",
            "SIDECAR_POLL_JITTER": "0.2",
        }
    )
    source = SecretSource("s", connect_timeout=1, read_timeout=1)
    poller = Poller(settings, source, KeyCache(), Metrics(), rng=random.Random(3))

    waits = [poller.next_interval() for _ in range(500)]

    assert min(waits) >= 8
    assert max(waits) <= 12
    # Jitter spreads the waits: a fleet of tasks does not poll in step.
    assert max(waits) - min(waits) > 2


def assert_last_pair_served(sidecar: SidecarProcess) -> dict[str, Any]:
    """Check that /v1/keys still serves the original pair, marked stale."""
    document = sidecar.keys()
    assert document["current"] == CURRENT_KEY
    assert document["previous"] == PREVIOUS_KEY
    assert document["stale"] is True
    return document


def failures_logged(sidecar: SidecarProcess, reason: str) -> list[dict[str, Any]]:
    """Return the poll.failed events with ``reason``, at any level."""
    return [event for event in sidecar.events_named("poll.failed") if event["reason"] == reason]


def test_scheduled_deletion_keeps_last_pair(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """A secret marked for deletion keeps the last pair served, logged once, until restored."""
    secret_id = make_secret()
    sidecar = start_sidecar(secret_id, log_level="debug")

    secrets_client.delete_secret(SecretId=secret_id, RecoveryWindowInDays=7)
    wait_until(lambda: len(failures_logged(sidecar, "marked_for_deletion")) >= 3, timeout=15)
    assert_last_pair_served(sidecar)
    warnings = [
        event
        for event in failures_logged(sidecar, "marked_for_deletion")
        if event["level"] == "warning"
    ]

    secrets_client.restore_secret(SecretId=secret_id)
    wait_until(lambda: sidecar.events_named("poll.recovered"), timeout=10)

    assert len(warnings) == 1
    assert warnings[0]["error"] == "InvalidRequestException"
    assert warnings[0]["retryable"] is False
    assert warnings[0]["secret_id"] == secret_id
    assert sidecar.keys()["stale"] is False
    assert sidecar.events_named("poll.recovered")[0]["last_reason"] == "marked_for_deletion"


def test_deleted_secret_keeps_last_pair(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """A deleted secret (ResourceNotFound) keeps the last pair served and readiness up."""
    secret_id = make_secret()
    sidecar = start_sidecar(secret_id)

    secrets_client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
    wait_until(lambda: failures_logged(sidecar, "not_found"), timeout=10)

    assert_last_pair_served(sidecar)
    assert sidecar.get("/readyz").status == 200
    assert failures_logged(sidecar, "not_found")[0]["error"] == "ResourceNotFoundException"


def test_permanent_failure_waits_normal_interval(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """A permanent failure is retried at the poll interval, not in a tight backoff loop."""
    secret_id = make_secret()
    sidecar = start_sidecar(
        secret_id, poll_interval=1, backoff_initial=0.01, backoff_max=0.02, log_level="debug"
    )
    secrets_client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
    wait_until(lambda: failures_logged(sidecar, "not_found"), timeout=10)

    wait_until(lambda: len(failures_logged(sidecar, "not_found")) >= 3, timeout=10)
    attempts = failures_logged(sidecar, "not_found")

    # With 10 ms backoff a retried failure would log hundreds of attempts per second.
    assert len(attempts) <= 5
    scheduled = [
        event
        for event in sidecar.events_named("poll.retry_scheduled")
        if event["retryable"] is False
    ]
    assert scheduled
    assert all(event["wait_s"] >= 0.9 for event in scheduled)


@pytest.mark.parametrize(
    ("secret_string", "field_in_message"),
    [
        ("{not json", "not valid JSON"),
        (pair_string(None, PREVIOUS_KEY), "'API_KEY_CURRENT' is null"),
        ('{"API_KEY_PREVIOUS": "x"}', "no field 'API_KEY_CURRENT'"),
    ],
)
def test_invalid_value_keeps_last_pair(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
    secret_string: str,
    field_in_message: str,
) -> None:
    """A broken value keeps the last pair, names the problem, and a fixed value is loaded."""
    secret_id = make_secret()
    sidecar = start_sidecar(secret_id)

    secrets_client.put_secret_value(SecretId=secret_id, SecretString=secret_string)
    wait_until(lambda: failures_logged(sidecar, "invalid_secret"), timeout=10)
    assert_last_pair_served(sidecar)
    fixed = secrets_client.put_secret_value(
        SecretId=secret_id, SecretString=pair_string("fixed-key-0123456789")
    )
    document = sidecar.wait_for_version(fixed["VersionId"])

    failure = failures_logged(sidecar, "invalid_secret")[0]
    assert field_in_message in failure["detail"]
    assert document["current"] == "fixed-key-0123456789"
    assert document["stale"] is False


def test_secret_binary_invalid(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """A version that holds only SecretBinary is invalid and the last pair stays served."""
    secret_id = make_secret()
    sidecar = start_sidecar(secret_id)

    secrets_client.put_secret_value(SecretId=secret_id, SecretBinary=b"\x00\x01binary")
    wait_until(lambda: failures_logged(sidecar, "invalid_secret"), timeout=10)

    assert_last_pair_served(sidecar)
    assert "SecretBinary" in failures_logged(sidecar, "invalid_secret")[0]["detail"]


def test_each_invalid_version_logged(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """Each new invalid version gets its own warning, naming that version and its problem."""
    secret_id = make_secret()
    sidecar = start_sidecar(secret_id)
    written = []

    def failure_logged_for(version: str) -> bool:
        events = failures_logged(sidecar, "invalid_secret")
        return any(event.get("failing_version_id") == version for event in events)

    for broken in ("{not json", '{"API_KEY_PREVIOUS": "x"}', pair_string("has space")):
        reply = secrets_client.put_secret_value(SecretId=secret_id, SecretString=broken)
        written.append(reply["VersionId"])
        wait_until(lambda: failure_logged_for(written[-1]), timeout=10)
    warnings = [
        event for event in failures_logged(sidecar, "invalid_secret") if event["level"] == "warning"
    ]

    assert [event["failing_version_id"] for event in warnings] == written
    assert "not valid JSON" in warnings[0]["detail"]
    assert "no field 'API_KEY_CURRENT'" in warnings[1]["detail"]
    assert "'API_KEY_CURRENT' is invalid" in warnings[2]["detail"]
    assert_last_pair_served(sidecar)
