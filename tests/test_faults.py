"""Upstream faults, one table row each, through a fault-injecting proxy or the emulator.

Every case runs two sidecars against the same secret, each behind its own proxy:
one with SIDECAR_MAX_STALENESS set small ("bounded") and one without it
("unbounded"). For each fault the suite checks five things:

- the last good pair is still served;
- the reason is logged once per failure streak and counted once per failed poll;
- retryable faults back off, while permanent ones wait the normal interval;
- readiness follows SIDECAR_MAX_STALENESS;
- the first poll after the fault clears recovers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

import pytest

from sidecar.metrics import POLL_OUTCOMES
from sidecar.source import REASONS
from tests.conftest import CURRENT_KEY, PREVIOUS_KEY, pair_string
from tests.faultproxy import Fault, FaultProxy
from tests.helpers import SidecarProcess, wait_until
from tests.scrape import scrape
from tools.emulator import Emulator

POLL_INTERVAL = 1.5
BACKOFF_INITIAL = 0.05
BACKOFF_MAX = 0.3
READ_TIMEOUT = 0.5
# More than POLL_INTERVAL plus one read timeout, so the bounded sidecar still
# serves when the first failure is seen, and small enough to pass during a case.
MAX_STALENESS = 5.0
# Longer than READ_TIMEOUT, so a slow reply times out on the sidecar's side.
SLOW_SECONDS = 2.0
# Generous limits for waits; they bound a broken case, they measure nothing.
WAIT = 20.0
# A retryable streak must show at least this many failed polls before it clears,
# a permanent one at least PERMANENT_FAILURES, at the normal interval.
RETRYABLE_FAILURES = 5
PERMANENT_FAILURES = 3

SIDECAR_SETTINGS: dict[str, object] = {
    "poll_interval": POLL_INTERVAL,
    "poll_jitter": 0,
    "backoff_initial": BACKOFF_INITIAL,
    "backoff_max": BACKOFF_MAX,
    "read_timeout": READ_TIMEOUT,
    "connect_timeout": READ_TIMEOUT,
    "log_level": "debug",
    "metrics_port": -1,
}


@dataclass(frozen=True)
class Upstream:
    """What a fault acts on: the proxies of the sidecars and the secret in the emulator."""

    proxies: tuple[FaultProxy, ...]
    secrets_client: Any
    secret_id: str

    def inject(self, fault: Fault) -> None:
        """Switch every proxy to ``fault``."""
        for proxy in self.proxies:
            proxy.inject(fault)

    def clear(self) -> None:
        """Switch every proxy back to forwarding."""
        for proxy in self.proxies:
            proxy.clear()

    def write(self, secret_string: str) -> None:
        """Write a new AWSCURRENT version straight to the emulator."""
        self.secrets_client.put_secret_value(SecretId=self.secret_id, SecretString=secret_string)


@dataclass(frozen=True)
class FaultCase:
    """One row of the table: how to cause a fault, how to end it, and what to expect."""

    name: str
    reason: str
    error: str
    retryable: bool
    start: Callable[[Upstream], None]
    stop: Callable[[Upstream], None]
    # The proxy fault, or None for a fault made in the emulator itself.
    proxy_fault: Fault | None = None
    # Another error class that botocore may report for the same fault.
    alternative_error: str | None = None


def proxy_case(
    name: str,
    fault: Fault,
    reason: str,
    error: str,
    *,
    retryable: bool,
    alternative_error: str | None = None,
) -> FaultCase:
    """Build a case that the proxy injects and clears."""
    return FaultCase(
        name=name,
        reason=reason,
        error=error,
        retryable=retryable,
        start=lambda upstream: upstream.inject(fault),
        stop=Upstream.clear,
        proxy_fault=fault,
        alternative_error=alternative_error,
    )


def restore_pair(upstream: Upstream) -> None:
    """Write the original pair again as a new version."""
    upstream.write(pair_string(CURRENT_KEY, PREVIOUS_KEY))


def schedule_deletion(upstream: Upstream) -> None:
    """Mark the secret for deletion with a recovery window."""
    upstream.secrets_client.delete_secret(SecretId=upstream.secret_id, RecoveryWindowInDays=7)


def cancel_deletion(upstream: Upstream) -> None:
    """Cancel the scheduled deletion."""
    upstream.secrets_client.restore_secret(SecretId=upstream.secret_id)


def delete_now(upstream: Upstream) -> None:
    """Delete the secret without a recovery window."""
    upstream.secrets_client.delete_secret(
        SecretId=upstream.secret_id, ForceDeleteWithoutRecovery=True
    )


def create_again(upstream: Upstream) -> None:
    """Create the deleted secret again under the same name, with the original pair."""
    upstream.secrets_client.create_secret(
        Name=upstream.secret_id, SecretString=pair_string(CURRENT_KEY, PREVIOUS_KEY)
    )


def write_value(secret_string: str) -> Callable[[Upstream], None]:
    """Build a step that writes ``secret_string`` as the new AWSCURRENT version."""
    return lambda upstream: upstream.write(secret_string)


def write_binary(upstream: Upstream) -> None:
    """Write a new AWSCURRENT version that holds only SecretBinary."""
    upstream.secrets_client.put_secret_value(
        SecretId=upstream.secret_id, SecretBinary=b"\x00binary-only"
    )


def invalid_value_case(name: str, start: Callable[[Upstream], None]) -> FaultCase:
    """Build a case that writes an invalid value to the emulator, then the original pair."""
    return FaultCase(
        name=name,
        reason="invalid_secret",
        error="InvalidSecret",
        retryable=False,
        start=start,
        stop=restore_pair,
    )


CASES = [
    proxy_case("throttling", Fault.THROTTLING, "throttled", "ThrottlingException", retryable=True),
    proxy_case(
        "http_500", Fault.INTERNAL_ERROR, "server_error", "InternalServiceError", retryable=True
    ),
    # A non-JSON 503 from something in front of the service: botocore names the
    # error after the status code.
    proxy_case("http_503", Fault.UNAVAILABLE, "server_error", "503", retryable=True),
    proxy_case(
        "connection_reset", Fault.RESET, "connection", "EndpointConnectionError", retryable=True
    ),
    # A poll that starts while the proxy closes its connections can see the
    # pooled connection close instead of a refused connect.
    proxy_case(
        "connection_refused",
        Fault.REFUSED,
        "connection",
        "EndpointConnectionError",
        retryable=True,
        alternative_error="ConnectionClosedError",
    ),
    proxy_case("slow_reply", Fault.SLOW, "timeout", "ReadTimeoutError", retryable=True),
    proxy_case(
        "truncated_body", Fault.TRUNCATED, "connection", "ConnectionClosedError", retryable=True
    ),
    proxy_case("malformed_body", Fault.MALFORMED, "server_error", "MalformedReply", retryable=True),
    proxy_case(
        "expired_token", Fault.EXPIRED_TOKEN, "credentials", "ExpiredTokenException", retryable=True
    ),
    proxy_case(
        "access_denied",
        Fault.ACCESS_DENIED,
        "access_denied",
        "AccessDeniedException",
        retryable=False,
    ),
    proxy_case(
        "resource_not_found",
        Fault.NOT_FOUND,
        "not_found",
        "ResourceNotFoundException",
        retryable=False,
    ),
    proxy_case(
        "marked_for_deletion",
        Fault.MARKED_FOR_DELETION,
        "marked_for_deletion",
        "InvalidRequestException",
        retryable=False,
    ),
    proxy_case(
        "decryption_failure",
        Fault.DECRYPTION_FAILURE,
        "decryption_failed",
        "DecryptionFailure",
        retryable=False,
    ),
    FaultCase(
        name="emulator_deleted",
        reason="not_found",
        error="ResourceNotFoundException",
        retryable=False,
        start=delete_now,
        stop=create_again,
    ),
    FaultCase(
        name="emulator_marked_for_deletion",
        reason="marked_for_deletion",
        error="InvalidRequestException",
        retryable=False,
        start=schedule_deletion,
        stop=cancel_deletion,
    ),
    invalid_value_case("invalid_json", write_value('{"API_KEY_CURRENT": "' + CURRENT_KEY)),
    invalid_value_case("not_an_object", write_value(json.dumps([CURRENT_KEY, PREVIOUS_KEY]))),
    invalid_value_case(
        "current_field_missing", write_value(json.dumps({"API_KEY_PREVIOUS": PREVIOUS_KEY}))
    ),
    invalid_value_case("current_field_empty", write_value(pair_string("", PREVIOUS_KEY))),
    invalid_value_case(
        "previous_field_number",
        write_value(json.dumps({"API_KEY_CURRENT": CURRENT_KEY, "API_KEY_PREVIOUS": 5})),
    ),
    invalid_value_case("secret_binary_only", write_binary),
]


@dataclass
class Watched:
    """A sidecar behind its own proxy."""

    sidecar: SidecarProcess
    proxy: FaultProxy

    def failures(self) -> list[dict[str, Any]]:
        """Return every poll.failed event so far, at any level."""
        return self.sidecar.events_named("poll.failed")

    def recovered(self) -> list[dict[str, Any]]:
        """Return every poll.recovered event so far."""
        return self.sidecar.events_named("poll.recovered")


@pytest.fixture
def proxies(emulator: Emulator) -> Iterator[tuple[FaultProxy, FaultProxy]]:
    """Two fault proxies in front of the emulator, closed at teardown."""
    with ExitStack() as stack:
        first = stack.enter_context(FaultProxy(emulator.endpoint, slow_seconds=SLOW_SECONDS))
        second = stack.enter_context(FaultProxy(emulator.endpoint, slow_seconds=SLOW_SECONDS))
        yield first, second


def wait_for_failures(watched: Watched, count: int) -> None:
    """Wait until ``watched`` has logged at least ``count`` failed polls."""
    wait_until(lambda: len(watched.failures()) >= count, WAIT, message=watched.sidecar.log_text())


def event_time(event: dict[str, Any]) -> float:
    """Return the POSIX time of a log event."""
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def gaps(events: list[dict[str, Any]]) -> list[float]:
    """Return the seconds between consecutive events."""
    times = [event_time(event) for event in events]
    return [later - earlier for earlier, later in pairwise(times)]


def assert_pair_served(sidecar: SidecarProcess, *, stale: bool) -> dict[str, Any]:
    """Check that /v1/keys serves the original pair with the given stale flag."""
    reply = sidecar.get("/v1/keys")
    assert reply.status == 200, reply.body
    document: dict[str, Any] = reply.json()
    assert document["current"] == CURRENT_KEY
    assert document["previous"] == PREVIOUS_KEY
    assert document["stale"] is stale
    return document


def start_pair(
    secret_id: str,
    start_sidecar: Callable[..., SidecarProcess],
    proxies: tuple[FaultProxy, FaultProxy],
) -> list[Watched]:
    """Start the bounded and the unbounded sidecar, each behind its own proxy."""
    bounded_proxy, unbounded_proxy = proxies
    bounded = start_sidecar(
        secret_id,
        endpoint=bounded_proxy.url,
        wait_ready=False,
        max_staleness=MAX_STALENESS,
        **SIDECAR_SETTINGS,
    )
    unbounded = start_sidecar(
        secret_id, endpoint=unbounded_proxy.url, wait_ready=False, **SIDECAR_SETTINGS
    )
    bounded.wait_ready()
    unbounded.wait_ready()
    return [
        Watched(bounded, bounded_proxy),
        Watched(unbounded, unbounded_proxy),
    ]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_fault_keeps_pair_and_recovers(
    case: FaultCase,
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
    proxies: tuple[FaultProxy, FaultProxy],
) -> None:
    """The fault is served through, logged once, follows the staleness limit, and clears."""
    secret_id = make_secret()
    watched = start_pair(secret_id, start_sidecar, proxies)
    upstream = Upstream(proxies, secrets_client, secret_id)
    bounded, unbounded = watched
    for each in watched:
        assert_pair_served(each.sidecar, stale=False)
        assert each.failures() == []

    # 1. The fault starts: the last good pair is served, marked stale.
    case.start(upstream)
    for each in watched:
        wait_until(each.failures, WAIT, message=each.sidecar.log_text())
        assert_pair_served(each.sidecar, stale=True)

    # 2. Readiness: the bounded sidecar fails closed after MAX_STALENESS, the
    #    unbounded one keeps serving.
    wait_until(lambda: bounded.sidecar.get("/readyz").status == 503, WAIT)
    stale_reply = bounded.sidecar.get("/v1/keys")
    assert stale_reply.status == 503
    assert "SIDECAR_MAX_STALENESS" in stale_reply.json()["error"]
    assert CURRENT_KEY.encode() not in stale_reply.body
    assert unbounded.sidecar.get("/readyz").status == 200
    assert_pair_served(unbounded.sidecar, stale=True)

    # 3. Enough failed polls to see the retry rhythm.
    enough = RETRYABLE_FAILURES if case.retryable else PERMANENT_FAILURES
    for each in watched:
        wait_for_failures(each, enough)

    # 4. The fault clears right after the unbounded sidecar finished a poll, so
    #    that usually no poll of it is in flight while the emulator changes.
    wait_for_failures(unbounded, len(unbounded.failures()) + 1)
    case.stop(upstream)
    # A proxy records the moment it switched, under the lock that orders requests.
    cleared_at = time.time() if case.proxy_fault is None else None
    for each in watched:
        wait_until(each.recovered, WAIT, message=each.sidecar.log_text())

    for each in watched:
        check_streak(case, each)
        check_recovery(case, each, cleared_at or each.proxy.switched_at or 0.0)
        check_metrics(case, each)


def check_streak(case: FaultCase, watched: Watched) -> None:
    """Check the failure log: one warning per streak, one event per failed poll, the rhythm."""
    failures = watched.failures()
    warnings = [event for event in failures if event["level"] == "warning"]
    assert len(warnings) == 1, warnings
    first = warnings[0]
    assert failures[0]["level"] == "warning"
    assert first["reason"] == case.reason
    assert first["error"] in {case.error, case.alternative_error}
    assert first["retryable"] is case.retryable
    assert first["secret_id"]
    assert [event["reason"] for event in failures] == [case.reason] * len(failures)
    assert [event["attempt"] for event in failures] == list(range(1, len(failures) + 1))

    scheduled = [
        event
        for event in watched.sidecar.events_named("poll.retry_scheduled")
        if event_time(event) >= event_time(failures[0])
    ]
    assert scheduled
    assert {event["retryable"] for event in scheduled} == {case.retryable}
    intervals = gaps(failures)
    if case.retryable:
        # Backoff: retries come well before the normal interval would allow.
        assert all(event["wait_s"] <= BACKOFF_MAX for event in scheduled)
        assert len([event for event in scheduled if event["level"] == "info"]) == 1
        assert len([gap for gap in intervals if gap < POLL_INTERVAL]) >= RETRYABLE_FAILURES - 2
    else:
        # No tight loop: every failed poll waits the whole interval (no jitter here).
        assert all(event["wait_s"] == POLL_INTERVAL for event in scheduled)
        assert min(intervals) >= POLL_INTERVAL - 0.05, intervals


def check_recovery(case: FaultCase, watched: Watched, cleared_at: float) -> None:
    """Check the recovery: the first poll after the clear succeeded and the pair is fresh."""
    failures = watched.failures()
    recovered = watched.recovered()
    assert len(recovered) == 1
    assert recovered[0]["failures"] == len(failures)
    assert recovered[0]["last_reason"] == case.reason
    # No poll failed after the clear. A proxy switches under the lock that orders
    # requests, so exactly one request came between its clear and the recovery.
    # An emulator fault ends when the call that fixes it returns. A poll that
    # started during that call may already have recovered, so at most one.
    after_clear = watched.proxy.count(since=cleared_at, until=event_time(recovered[0]))
    if case.proxy_fault is not None:
        assert after_clear == 1
    else:
        assert after_clear <= 1
    assert_pair_served(watched.sidecar, stale=False)
    assert watched.sidecar.get("/readyz").status == 200


def check_metrics(case: FaultCase, watched: Watched) -> None:
    """Check the counters: one error per failed poll, one request per poll."""
    requests_before = watched.proxy.count()
    samples = scrape(watched.sidecar)
    requests_after = watched.proxy.count()
    failures = len(watched.failures())
    errors = {
        reason: samples.value("sidecar_poll_errors_total", reason=reason) for reason in REASONS
    }
    polls = sum(
        samples.value("sidecar_polls_total", outcome=outcome) or 0.0 for outcome in POLL_OUTCOMES
    )
    assert errors[case.reason] == failures
    assert sum(value or 0.0 for value in errors.values()) == failures
    assert samples.value("sidecar_polls_total", outcome="error") == failures
    assert samples.value("sidecar_keys_stale") == 0
    # Every poll is one request, retries included, unless the proxy never saw it
    # because the connection was refused. A poll may be in flight during the
    # scrape: its request is counted by the proxy but not yet by the sidecar.
    unseen = 0
    if case.proxy_fault is Fault.REFUSED:
        unseen = failures - watched.proxy.count(fault=Fault.REFUSED)
    assert requests_before + unseen - 1 <= polls <= requests_after + unseen
