"""Rotation latency: from PutSecretValue to the first /v1/keys reply with the new version."""

from __future__ import annotations

import http.client
import json
import random
import statistics
import threading
import time
from typing import Any

from bench.options import Options, Outcome
from bench.processes import BenchSidecar
from bench.rig import TOKEN, Rig
from bench.scenarios.app_api import fast_refresh_settings, missing_endpoint
from tests.helpers import http_request
from tools.emulator import LOOPBACK

# The reader asks for the served version this often; it bounds the resolution
# of the measurement, next to poll intervals of a second or more.
READ_INTERVAL_S = 0.002
# A rotation not served within the poll interval plus this much counts as lost.
PICKUP_MARGIN_S = 10.0
# A long-poll wait, in seconds, well beyond any poll interval measured here.
WATCH_WAIT_S = 30


class KeysReader:
    """A client that reads the served version over one keep-alive connection."""

    def __init__(self, sidecar: BenchSidecar) -> None:
        self._connection = http.client.HTTPConnection(LOOPBACK, sidecar.port, timeout=5)
        self._headers = {"X-Sidecar-Token": TOKEN}

    def version(self) -> str | None:
        """Return the served version id, or None when the reply is not 200."""
        self._connection.request("GET", "/v1/keys", headers=self._headers)
        reply = self._connection.getresponse()
        body = reply.read()
        if reply.status != 200:
            return None
        version: str = json.loads(body)["version_id"]
        return version

    def wait_for(self, version: str, timeout: float) -> float:
        """Wait until ``version`` is served and return time.monotonic() at that reply."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.version() == version:
                return time.monotonic()
            time.sleep(READ_INTERVAL_S)
        msg = f"version {version} not served within {timeout:g} s"
        raise TimeoutError(msg)

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()


def summarize(latencies: list[float]) -> dict[str, Any]:
    """Return the median, minimum and maximum in seconds, and every sample."""
    return {
        "count": len(latencies),
        "median_s": statistics.median(latencies),
        "min_s": min(latencies),
        "max_s": max(latencies),
        "samples_s": latencies,
    }


def poll_latency(rig: Rig, options: Options) -> Outcome:
    """Measure rotations picked up by the normal poll at each configured interval."""
    rng = random.Random()  # noqa: S311 - spreads rotations over the poll cycle, not cryptography
    outcome = Outcome()
    for interval in options.poll_intervals:
        sidecar = rig.sidecar(poll_interval=interval)
        reader = KeysReader(sidecar)
        latencies = []
        for _ in range(options.rotations):
            # A random pause puts each rotation at a random point of the poll
            # cycle, as an operator's rotation would be.
            time.sleep(rng.uniform(0, interval))
            secret_string = rig.next_secret_string()
            started = time.monotonic()
            version = rig.put(secret_string)
            served = reader.wait_for(version, interval * 1.5 + PICKUP_MARGIN_S)
            latencies.append(served - started)
        reader.close()
        rig.stop_sidecar(sidecar)
        outcome.data[f"{interval:g}"] = summarize(latencies)
    return outcome


def refresh_latency(rig: Rig, options: Options) -> Outcome:
    """Measure rotations followed at once by POST /v1/refresh."""
    settings, spacing_s = fast_refresh_settings(rig)
    sidecar = rig.sidecar(extra_settings=settings)
    reason = missing_endpoint(sidecar, "/v1/refresh", b"")
    if reason is not None:
        rig.stop_sidecar(sidecar)
        return Outcome(skipped=reason)
    reader = KeysReader(sidecar)
    outcome = Outcome()
    latencies = []
    rejected = 0
    for _ in range(options.rotations):
        # Stay clear of the refresh rate limit, so that no refresh gets 429.
        time.sleep(spacing_s + 0.1)
        secret_string = rig.next_secret_string()
        started = time.monotonic()
        version = rig.put(secret_string)
        reply = sidecar.post("/v1/refresh", b"")
        if reply.status != 200:
            rejected += 1
        served = reader.wait_for(version, 60 + PICKUP_MARGIN_S)
        latencies.append(served - started)
    reader.close()
    rig.stop_sidecar(sidecar)
    if rejected:
        outcome.notes.append(
            f"{rejected} of {options.rotations} refreshes were not answered with 200; "
            "those rotations waited for the next poll"
        )
    outcome.data = {"refresh_spacing_s": spacing_s, **summarize(latencies)}
    return outcome


def watch_latency(rig: Rig, options: Options) -> Outcome:
    """Measure rotations seen by a client waiting in GET /v1/keys?wait=, at a 1 s poll."""
    interval = 1.0
    sidecar = rig.sidecar(poll_interval=interval)
    reason = missing_long_poll(sidecar)
    if reason is not None:
        rig.stop_sidecar(sidecar)
        return Outcome(skipped=reason)
    rng = random.Random()  # noqa: S311 - spreads rotations over the poll cycle
    latencies = []
    for _ in range(options.rotations):
        time.sleep(rng.uniform(0, interval))
        etag = sidecar.get("/v1/keys").headers["ETag"]
        watcher = Watcher(sidecar, etag)
        watcher.start()
        # Give the request time to reach the sidecar before the rotation.
        time.sleep(0.05)
        secret_string = rig.next_secret_string()
        started = time.monotonic()
        version = rig.put(secret_string)
        watcher.join(WATCH_WAIT_S + PICKUP_MARGIN_S)
        if watcher.returned_at is None or watcher.version != version:
            rig.stop_sidecar(sidecar)
            return Outcome(skipped=f"a watcher returned {watcher.status} without the new version")
        latencies.append(watcher.returned_at - started)
    rig.stop_sidecar(sidecar)
    return Outcome(data={"poll_interval_s": interval, **summarize(latencies)})


def missing_long_poll(sidecar: BenchSidecar) -> str | None:
    """Return why long-poll cannot be measured, or None when a wait really waits."""
    etag = sidecar.get("/v1/keys").headers["ETag"]
    started = time.monotonic()
    reply = sidecar.get("/v1/keys?wait=1", headers={"If-None-Match": etag})
    elapsed = time.monotonic() - started
    if reply.status == 404:
        return "GET /v1/keys?wait= returns 404: this build of the sidecar does not have it yet"
    if elapsed < 0.5:
        return (
            f"GET /v1/keys?wait=1 returned {reply.status} after {elapsed * 1000:.0f} ms "
            "instead of waiting: this build of the sidecar does not have long-poll yet"
        )
    return None


class Watcher(threading.Thread):
    """One client waiting in a long-poll for the next version."""

    def __init__(self, sidecar: BenchSidecar, etag: str) -> None:
        super().__init__(daemon=True)
        self._sidecar = sidecar
        self._etag = etag
        self.status: int | None = None
        self.version: str | None = None
        self.returned_at: float | None = None

    def run(self) -> None:
        """Wait for a new version and record when it arrived."""
        reply = http_request(
            self._sidecar.url(f"/v1/keys?wait={WATCH_WAIT_S}"),
            headers={"X-Sidecar-Token": TOKEN, "If-None-Match": self._etag},
            timeout=WATCH_WAIT_S + PICKUP_MARGIN_S,
        )
        self.returned_at = time.monotonic()
        self.status = reply.status
        if reply.status == 200:
            self.version = reply.json()["version_id"]
