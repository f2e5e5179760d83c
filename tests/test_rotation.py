"""The main path: first load and a rotation served without a restart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import CURRENT_KEY, PREVIOUS_KEY, pair_string, put_secret
from tests.helpers import SidecarProcess

NEW_KEY = "key-new-CCCCCCCCCCCCCCCCCCCCCCCCCCCC"


def test_first_load_serves_pair(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """After start-up, /v1/keys serves the pair and the version of AWSCURRENT."""
    secret_id = make_secret()
    expected_version = secrets_client.get_secret_value(
        SecretId=secret_id, VersionStage="AWSCURRENT"
    )["VersionId"]
    sidecar = start_sidecar(secret_id)

    reply = sidecar.get("/v1/keys")
    document = reply.json()

    assert reply.status == 200
    assert document["current"] == CURRENT_KEY
    assert document["previous"] == PREVIOUS_KEY
    assert document["version_id"] == expected_version
    assert document["stale"] is False
    assert document["loaded_at"].endswith("Z")
    assert document["created_date"] is not None
    assert reply.headers["ETag"] == f'"{expected_version}"'
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["Content-Type"].startswith("application/json")


def test_rotation_served_without_restart(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """A rotation written to the secret is served by the same process within a poll interval."""
    secret_id = make_secret(pair_string(CURRENT_KEY, None))
    sidecar = start_sidecar(secret_id, poll_interval=1)
    first = sidecar.keys()
    pid = sidecar.process.pid if sidecar.process else None

    new_version = put_secret(secrets_client, secret_id, pair_string(NEW_KEY, CURRENT_KEY))
    document = sidecar.wait_for_version(new_version, timeout=5)

    assert first["previous"] is None
    assert document["current"] == NEW_KEY
    assert document["previous"] == CURRENT_KEY
    assert sidecar.process is not None
    assert sidecar.process.pid == pid
    assert sidecar.process.poll() is None
    reloads = sidecar.events_named("secret.reloaded")
    assert [event["version_id"] for event in reloads] == [new_version]
    assert reloads[0]["previous_version_id"] == first["version_id"]


def test_if_none_match_returns_304(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """A request whose If-None-Match contains the current ETag gets 304 without a body."""
    sidecar = start_sidecar(make_secret())
    etag = sidecar.get("/v1/keys").headers["ETag"]

    reply = sidecar.get("/v1/keys", {"If-None-Match": etag})
    other = sidecar.get("/v1/keys", {"If-None-Match": '"some-other-version"'})

    assert reply.status == 304
    assert reply.body == b""
    assert reply.headers["ETag"] == etag
    assert other.status == 200


def test_sigterm_exits_zero(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """SIGTERM on a running sidecar shuts it down with status 0 and logs each step."""
    sidecar = start_sidecar(make_secret())

    status = sidecar.stop()

    assert status == 0
    names = [event["event"] for event in sidecar.log_events()]
    assert "shutdown.started" in names
    assert names[-1] == "shutdown.complete"
