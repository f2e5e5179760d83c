"""Long poll on GET /v1/keys?wait=: wake on reload, many watchers, timeouts, shutdown."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from tests.app_helpers import metric_value, post
from tests.conftest import CURRENT_KEY, pair_string, put_secret
from tests.helpers import HttpReply, SidecarProcess, http_request, wait_until

NEW_KEY = "key-watched-EEEEEEEEEEEEEEEEEEEEEEEEE"
# Polls come only from POST /v1/refresh in these tests, so each reload has a known cause.
NO_TIMED_POLLS = 3600
WATCHERS = 1000


def watch(sidecar: SidecarProcess, etag: str, wait: float) -> HttpReply:
    """Send one long poll and return the reply."""
    headers = {"If-None-Match": etag, "X-Sidecar-Token": sidecar.token or ""}
    return http_request(sidecar.url(f"/v1/keys?wait={wait:g}"), headers=headers, timeout=wait + 10)


class WatchThread(threading.Thread):
    """Runs one long poll in the background and records when it returned."""

    def __init__(self, sidecar: SidecarProcess, etag: str, wait: float) -> None:
        super().__init__(daemon=True)
        self.sidecar, self.etag, self.wait = sidecar, etag, wait
        self.reply: HttpReply | None = None
        self.error: OSError | None = None
        self.returned_at = 0.0

    def run(self) -> None:
        """Send the long poll and keep its reply or connection error."""
        try:
            self.reply = watch(self.sidecar, self.etag, self.wait)
        except OSError as error:
            self.error = error
        self.returned_at = time.time()


def test_watcher_wakes_on_reload(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """A waiting watcher returns the new version as soon as it loads."""
    secret_id = make_secret()
    sidecar = start_sidecar(secret_id, poll_interval=NO_TIMED_POLLS, metrics_port=-1)
    etag = sidecar.get("/v1/keys").headers["ETag"]
    watcher = WatchThread(sidecar, etag, wait=60)
    watcher.start()
    wait_until(lambda: metric_value(sidecar, "sidecar_watchers") == 1, 10)

    new_version = put_secret(secrets_client, secret_id, pair_string(NEW_KEY, CURRENT_KEY))
    refreshed = post(sidecar, "/v1/refresh")
    watcher.join(timeout=30)

    assert refreshed.status == 200
    assert watcher.reply is not None
    assert watcher.reply.status == 200
    assert watcher.reply.json()["version_id"] == new_version
    assert watcher.reply.json()["current"] == NEW_KEY
    assert watcher.reply.headers["ETag"] == f'"{new_version}"'
    reload_event = sidecar.events_named("secret.reloaded")[0]
    reloaded_at = datetime.fromisoformat(reload_event["timestamp"]).timestamp()
    latency = watcher.returned_at - reloaded_at
    # The bound is generous on purpose: the latency itself is a benchmark figure.
    print(f"watch wake latency after reload: {latency * 1000:.1f} ms")  # noqa: T201
    assert latency < 2.0
    assert metric_value(sidecar, "sidecar_watchers") == 0


async def test_thousand_watchers_see_one_rotation(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """1,000 concurrent long polls all return the new version after one rotation."""
    secret_id = make_secret()
    sidecar = start_sidecar(
        secret_id, poll_interval=NO_TIMED_POLLS, metrics_port=-1, max_connections=WATCHERS + 500
    )
    etag = sidecar.get("/v1/keys").headers["ETag"]
    headers = {"If-None-Match": etag, "X-Sidecar-Token": sidecar.token or ""}
    connector = aiohttp.TCPConnector(limit=WATCHERS + 10)
    timeout = aiohttp.ClientTimeout(total=120)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one_watcher() -> tuple[int, dict[str, Any], float]:
            async with session.get(sidecar.url("/v1/keys?wait=90"), headers=headers) as reply:
                return reply.status, await reply.json(), time.time()

        async def waiting() -> float:
            async with session.get(sidecar.metrics_url()) as reply:
                text = await reply.text()
            for line in text.splitlines():
                if line.startswith("sidecar_watchers "):
                    return float(line.split()[1])
            return -1.0

        tasks = [asyncio.create_task(one_watcher()) for _ in range(WATCHERS)]
        deadline = time.monotonic() + 60
        while await waiting() < WATCHERS:
            assert time.monotonic() < deadline, "the watchers did not all start waiting"
            assert not any(task.done() for task in tasks), "a watcher returned early"
            await asyncio.sleep(0.1)

        new_version = await asyncio.to_thread(
            put_secret, secrets_client, secret_id, pair_string(NEW_KEY, CURRENT_KEY)
        )
        async with session.post(
            sidecar.url("/v1/refresh"), headers={"X-Sidecar-Token": sidecar.token or ""}
        ) as refreshed:
            assert refreshed.status == 200
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)

    statuses = {status for status, _, _ in results}
    versions = {document["version_id"] for _, document, _ in results}
    reload_event = sidecar.events_named("secret.reloaded")[0]
    reloaded_at = datetime.fromisoformat(reload_event["timestamp"]).timestamp()
    last_reply = max(returned_at for _, _, returned_at in results) - reloaded_at
    print(f"{WATCHERS} watchers all got the reply {last_reply * 1000:.1f} ms after the reload")  # noqa: T201
    assert len(results) == WATCHERS
    assert statuses == {200}
    assert versions == {new_version}
    assert metric_value(sidecar, "sidecar_polls_total", outcome="changed") == 2.0


def test_wait_without_matching_etag_returns_at_once(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """Without If-None-Match, or with another ETag, ?wait= returns 200 immediately."""
    sidecar = start_sidecar(make_secret(), poll_interval=NO_TIMED_POLLS)
    version = sidecar.keys()["version_id"]

    started = time.monotonic()
    plain = sidecar.get("/v1/keys?wait=30")
    other = sidecar.get("/v1/keys?wait=30", {"If-None-Match": '"another-version"'})
    elapsed = time.monotonic() - started

    assert plain.status == 200
    assert plain.json()["version_id"] == version
    assert other.status == 200
    assert elapsed < 10


def test_wait_ends_with_304(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """When no new version loads during the wait, the reply is 304 with the same ETag."""
    sidecar = start_sidecar(make_secret(), poll_interval=NO_TIMED_POLLS)
    etag = sidecar.get("/v1/keys").headers["ETag"]

    started = time.monotonic()
    reply = watch(sidecar, etag, wait=1)
    elapsed = time.monotonic() - started

    assert reply.status == 304
    assert reply.headers["ETag"] == etag
    assert elapsed >= 0.9


def test_unchanged_poll_does_not_wake_watchers(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """A poll that finds the same version leaves watchers waiting until their wait ends."""
    sidecar = start_sidecar(make_secret(), poll_interval=NO_TIMED_POLLS)
    etag = sidecar.get("/v1/keys").headers["ETag"]
    watcher = WatchThread(sidecar, etag, wait=2)
    watcher.start()
    time.sleep(0.3)

    refreshed = post(sidecar, "/v1/refresh")
    watcher.join(timeout=15)

    assert refreshed.json()["changed"] is False
    assert watcher.reply is not None
    assert watcher.reply.status == 304


def test_disconnected_watcher_is_released(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """A long poll whose client closes the connection stops waiting at once."""
    sidecar = start_sidecar(make_secret(), poll_interval=NO_TIMED_POLLS, metrics_port=-1)
    etag = sidecar.get("/v1/keys").headers["ETag"]
    request = (
        f"GET /v1/keys?wait=300 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-Sidecar-Token: {sidecar.token}\r\nIf-None-Match: {etag}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=5) as connection:
        connection.sendall(request.encode())
        wait_until(lambda: metric_value(sidecar, "sidecar_watchers") == 1, 10)

    wait_until(lambda: metric_value(sidecar, "sidecar_watchers") == 0, 10)


@pytest.mark.parametrize("value", ["", "abc", "0", "-1", "300.5", "1e9", "nan", "inf"])
def test_bad_wait_gets_400(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    value: str,
) -> None:
    """A wait that is not a number of seconds in (0, 300] gets 400 naming the range."""
    sidecar = start_sidecar(make_secret())

    reply = sidecar.get(f"/v1/keys?wait={value}")

    assert reply.status == 400
    assert "expected seconds greater than 0 and at most 300" in reply.json()["error"]


def test_shutdown_releases_watchers(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """SIGTERM ends a waiting long poll with 503 instead of delaying the shutdown."""
    sidecar = start_sidecar(make_secret(), poll_interval=NO_TIMED_POLLS, metrics_port=-1)
    etag = sidecar.get("/v1/keys").headers["ETag"]
    watcher = WatchThread(sidecar, etag, wait=300)
    watcher.start()
    wait_until(lambda: metric_value(sidecar, "sidecar_watchers") == 1, 10)

    stopped_at = time.time()
    sidecar.signal(signal.SIGTERM)
    status = sidecar.wait_exit(timeout=30)
    watcher.join(timeout=30)

    assert status == 0
    assert watcher.error is None
    assert watcher.reply is not None
    assert watcher.reply.status == 503
    assert watcher.reply.json() == {
        "error": "shutting down; send the request again after a restart"
    }
    print(f"watcher released {watcher.returned_at - stopped_at:.3f} s after SIGTERM")  # noqa: T201
