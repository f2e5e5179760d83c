"""Short-lived container credentials: refreshed across expiries, and an outage of the endpoint."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import CURRENT_KEY, PREVIOUS_KEY
from tests.credentials import CredentialsEndpoint
from tests.faultproxy import FaultProxy
from tests.helpers import SidecarProcess, wait_until
from tests.scrape import scrape
from tools.emulator import DUMMY_ACCESS_KEY_ID, Emulator

# Each set of credentials expires this many seconds after it is issued.
LIFETIME = 2.0
# The run spans at least this many lifetimes before the endpoint goes down.
EXPIRIES = 4
WAIT = 30.0
SETTINGS: dict[str, object] = {
    "poll_interval": 1,
    "poll_jitter": 0,
    "backoff_initial": 0.2,
    "backoff_max": 1,
    "log_level": "debug",
    "metrics_port": -1,
}


@pytest.fixture
def credentials_endpoint() -> Iterator[CredentialsEndpoint]:
    """A container credentials endpoint on loopback, closed at teardown."""
    with CredentialsEndpoint(lifetime=LIFETIME) as endpoint:
        yield endpoint


@pytest.fixture
def proxy(emulator: Emulator) -> Iterator[FaultProxy]:
    """A proxy in front of the emulator that records which access key signed each request."""
    with FaultProxy(emulator.endpoint) as started:
        yield started


def assert_signed_with_live_credentials(proxy: FaultProxy, endpoint: CredentialsEndpoint) -> None:
    """Check that every request was signed with issued credentials that had not expired."""
    for seen in proxy.requests():
        assert seen.access_key_id is not None
        issued = endpoint.find(seen.access_key_id)
        assert issued is not None, f"{seen.access_key_id} was not issued by the endpoint"
        assert seen.session_token == issued.session_token
        assert seen.at < issued.expires_at


def test_polls_across_credential_expiries(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    credentials_endpoint: CredentialsEndpoint,
    proxy: FaultProxy,
) -> None:
    """The sidecar refreshes expiring credentials, reports an endpoint outage, and recovers."""
    sidecar = start_sidecar(
        make_secret(), endpoint=proxy.url, env=credentials_endpoint.environment(), **SETTINGS
    )
    assert "AWS_ACCESS_KEY_ID" not in sidecar.env
    assert "AWS_SECRET_ACCESS_KEY" not in sidecar.env
    first_issue = credentials_endpoint.issued[0].issued_at

    # 1. Polls go on across several expiries, each signed with live credentials.
    wait_until(
        lambda: proxy.requests() and proxy.requests()[-1].at > first_issue + EXPIRIES * LIFETIME,
        WAIT,
    )
    document = sidecar.keys()
    used = {seen.access_key_id for seen in proxy.requests()}
    assert document["current"] == CURRENT_KEY
    assert document["stale"] is False
    assert len(used) >= EXPIRIES
    assert DUMMY_ACCESS_KEY_ID not in used
    assert_signed_with_live_credentials(proxy, credentials_endpoint)
    assert sidecar.events_named("poll.failed") == []
    assert credentials_endpoint.rejected == 0

    # 2. The endpoint goes down: the last pair is served and the reason is credentials.
    credentials_endpoint.stop_listening()
    wait_until(
        lambda: len(sidecar.events_named("poll.failed")) >= 2, WAIT, message=sidecar.log_text()
    )
    failures = sidecar.events_named("poll.failed")
    warnings = [event for event in failures if event["level"] == "warning"]
    stale = sidecar.keys()
    assert len(warnings) == 1
    assert warnings[0]["reason"] == "credentials"
    assert warnings[0]["error"] == "CredentialRetrievalError"
    assert warnings[0]["retryable"] is True
    assert {event["reason"] for event in failures} == {"credentials"}
    assert stale["current"] == CURRENT_KEY
    assert stale["previous"] == PREVIOUS_KEY
    assert stale["stale"] is True
    assert sidecar.get("/readyz").status == 200

    # 3. The endpoint comes back: fresh credentials are fetched and polls recover.
    issued_before = len(credentials_endpoint.issued)
    credentials_endpoint.listen()
    wait_until(lambda: sidecar.events_named("poll.recovered"), WAIT, message=sidecar.log_text())
    recovered = sidecar.events_named("poll.recovered")[0]
    failures = sidecar.events_named("poll.failed")
    samples = scrape(sidecar)
    assert recovered["last_reason"] == "credentials"
    assert recovered["failures"] == len(failures)
    assert len(credentials_endpoint.issued) > issued_before
    assert sidecar.keys()["stale"] is False
    assert samples.value("sidecar_poll_errors_total", reason="credentials") == len(failures)
    assert_signed_with_live_credentials(proxy, credentials_endpoint)


def test_credentials_down_at_start(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    credentials_endpoint: CredentialsEndpoint,
    proxy: FaultProxy,
) -> None:
    """With the endpoint down at start, the sidecar waits, reports it, and loads once it is up."""
    credentials_endpoint.stop_listening()
    sidecar = start_sidecar(
        make_secret(),
        endpoint=proxy.url,
        env=credentials_endpoint.environment(),
        wait_ready=False,
        **SETTINGS,
    )
    wait_until(lambda: sidecar.events_named("poll.failed"), WAIT, message=sidecar.log_text())
    not_ready = sidecar.get("/readyz")
    keys = sidecar.get("/v1/keys")
    failure: dict[str, Any] = sidecar.events_named("poll.failed")[0]
    assert failure["reason"] == "credentials"
    assert not_ready.status == 503
    assert "CredentialRetrievalError" in not_ready.json()["error"]
    assert keys.status == 503
    assert sidecar.process is not None
    assert sidecar.process.poll() is None

    credentials_endpoint.listen()
    sidecar.wait_ready(timeout=WAIT)

    assert sidecar.keys()["current"] == CURRENT_KEY
    assert_signed_with_live_credentials(proxy, credentials_endpoint)
