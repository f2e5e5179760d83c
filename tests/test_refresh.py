"""POST /v1/refresh: one shared poll, the rate limit, failures, and its settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from sidecar.errors import SettingsError
from sidecar.settings import load_settings
from tests.app_helpers import metric_value, post
from tests.conftest import CURRENT_KEY, PREVIOUS_KEY, pair_string, put_secret
from tests.forwarder import CountingForwarder
from tests.helpers import SidecarProcess, wait_until
from tools.emulator import Emulator

NEW_KEY = "key-refreshed-FFFFFFFFFFFFFFFFFFFFFFFF"
NO_TIMED_POLLS = 3600
CONCURRENT_REFRESHES = 20


def test_concurrent_refreshes_share_one_call(
    emulator: Emulator,
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """Refreshes sent while a poll is pending cause one GetSecretValue call between them."""
    secret_id = make_secret()
    # Each call is held for a second, so every refresh arrives while the poll is pending.
    with CountingForwarder(emulator.endpoint, delay=1.0) as forwarder:
        sidecar = start_sidecar(
            secret_id,
            endpoint=forwarder.endpoint,
            poll_interval=NO_TIMED_POLLS,
            metrics_port=-1,
            refresh_min_interval=60,
        )
        calls_before = forwarder.count("GetSecretValue")
        polls_before = metric_value(sidecar, "sidecar_polls_total", outcome="changed")
        new_version = put_secret(secrets_client, secret_id, pair_string(NEW_KEY, CURRENT_KEY))

        with ThreadPoolExecutor(CONCURRENT_REFRESHES) as pool:
            replies = list(
                pool.map(lambda _: post(sidecar, "/v1/refresh"), range(CONCURRENT_REFRESHES))
            )
        calls_after = forwarder.count("GetSecretValue")

    assert calls_before == 1
    assert calls_after - calls_before == 1
    assert [reply.status for reply in replies] == [200] * CONCURRENT_REFRESHES
    assert {reply.body for reply in replies} == {
        b'{"version_id":"' + new_version.encode() + b'","changed":true}'
    }
    assert metric_value(sidecar, "sidecar_polls_total", outcome="changed") == polls_before + 1
    assert sidecar.keys()["current"] == NEW_KEY


def test_refresh_rate_limited_with_retry_after(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """A refresh within SIDECAR_REFRESH_MIN_INTERVAL of the last one gets 429 and Retry-After."""
    sidecar = start_sidecar(make_secret(), poll_interval=NO_TIMED_POLLS, refresh_min_interval=30)

    first = post(sidecar, "/v1/refresh")
    second = post(sidecar, "/v1/refresh")

    assert first.status == 200
    assert first.json()["changed"] is False
    assert second.status == 429
    assert 1 <= int(second.headers["Retry-After"]) <= 30
    assert "SIDECAR_REFRESH_MIN_INTERVAL" in second.json()["error"]


def test_refresh_allowed_again_after_interval(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """Once the minimum interval has passed, a refresh polls again and loads a rotation."""
    secret_id = make_secret()
    sidecar = start_sidecar(secret_id, poll_interval=NO_TIMED_POLLS, refresh_min_interval=1)
    first = post(sidecar, "/v1/refresh")
    new_version = put_secret(secrets_client, secret_id, pair_string(NEW_KEY, CURRENT_KEY))
    retry_after = int(post(sidecar, "/v1/refresh").headers["Retry-After"])
    time.sleep(retry_after)
    second = post(sidecar, "/v1/refresh")

    assert first.status == 200
    assert retry_after == 1
    assert second.status == 200
    assert second.json() == {"version_id": new_version, "changed": True}


def test_failed_refresh_keeps_last_pair(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """A refresh whose poll fails gets 502 naming the error, and the last pair is still served."""
    secret_id = make_secret()
    sidecar = start_sidecar(secret_id, poll_interval=NO_TIMED_POLLS)
    version = sidecar.keys()["version_id"]
    secrets_client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)

    reply = post(sidecar, "/v1/refresh")
    served = sidecar.keys()

    assert reply.status == 502
    assert "ResourceNotFoundException" in reply.json()["error"]
    assert version in reply.json()["error"]
    assert served["current"] == CURRENT_KEY
    assert served["previous"] == PREVIOUS_KEY
    assert served["stale"] is True


def test_failed_refresh_past_max_staleness(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """Past SIDECAR_MAX_STALENESS, a failed refresh states that /v1/keys returns 503."""
    secret_id = make_secret()
    sidecar = start_sidecar(secret_id, poll_interval=1, max_staleness=2)
    version = sidecar.keys()["version_id"]
    secrets_client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
    wait_until(lambda: sidecar.get("/v1/keys").status == 503, timeout=15)

    reply = post(sidecar, "/v1/refresh")
    message = reply.json()["error"]

    assert reply.status == 502
    assert "ResourceNotFoundException" in message
    assert "still serving" not in message
    assert "the last successful poll is older than SIDECAR_MAX_STALENESS" in message
    assert f"/v1/keys returns 503 instead of version {version}" in message
    assert sidecar.get("/v1/keys").status == 503


def test_refresh_needs_token_and_post(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """Refresh without the token gets 403, and GET gets 405."""
    sidecar = start_sidecar(make_secret())

    assert post(sidecar, "/v1/refresh", token=False).status == 403
    assert sidecar.get("/v1/refresh").status == 405


@pytest.mark.parametrize("value", ["0", "0.5", "abc", "3601"])
def test_refresh_min_interval_setting_validated(value: str) -> None:
    """An out-of-range SIDECAR_REFRESH_MIN_INTERVAL is reported with the accepted range."""
    environ = {
        "SIDECAR_SECRET_ID": "demo",
        "SIDECAR_REQUIRE_TOKEN": "false",
        "SIDECAR_REFRESH_MIN_INTERVAL": value,
    }

    with pytest.raises(SettingsError) as caught:
        load_settings(environ)

    expected = (
        f"SIDECAR_REFRESH_MIN_INTERVAL: invalid value {value!r}; "
        "expected seconds from 1 to 3600, fractions allowed"
    )
    assert caught.value.problems == (expected,)


def test_refresh_min_interval_default() -> None:
    """SIDECAR_REFRESH_MIN_INTERVAL defaults to 5 seconds."""
    settings = load_settings({"SIDECAR_SECRET_ID": "demo", "SIDECAR_REQUIRE_TOKEN": "false"})

    assert settings.refresh_min_interval == 5.0
    assert settings.output_file is None
