"""No key, token or credential in any log line, error reply or metric, across a scenario set.

One sidecar runs with SIDECAR_LOG_LEVEL=debug and short-lived container
credentials, behind the fault proxy. The scenario drives load, rotations, several
upstream faults, an outage of the credentials endpoint, an invalid secret value,
bad tokens, hop headers, unknown paths, key checks on /v1/verify, refreshes and a
long poll. The test then searches for every
secret string that was used. It looks in the whole log, in every reply header,
in every metrics scrape, in the output of ``sidecar check-config``, and in
every reply body except the 200 bodies of /v1/keys, which carry the keys on
purpose.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import pair_string, put_secret
from tests.credentials import CredentialsEndpoint
from tests.faultproxy import Fault, FaultProxy
from tests.helpers import HttpReply, SidecarProcess, http_request, wait_until
from tools.emulator import Emulator

WAIT = 30.0
LOAD_REQUESTS = 400
LOAD_THREADS = 4
ROTATIONS = 3
FAULTS = (
    Fault.THROTTLING,
    Fault.UNAVAILABLE,
    Fault.RESET,
    Fault.SLOW,
    Fault.TRUNCATED,
    Fault.MALFORMED,
    Fault.ACCESS_DENIED,
    Fault.DECRYPTION_FAILURE,
)


def new_key() -> str:
    """Return a random API key (URL-safe, so JSON does not escape it)."""
    return "key-" + secrets.token_urlsafe(24)


@dataclass
class Capture:
    """Everything the sidecar sent out during the scenario, and every secret it used."""

    secrets_used: set[str] = field(default_factory=set)
    replies: list[tuple[str, HttpReply]] = field(default_factory=list)
    key_bodies: list[bytes] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)

    def record(self, label: str, reply: HttpReply) -> HttpReply:
        """Keep ``reply``; a 200 body of /v1/keys is kept apart, since it carries the keys."""
        if label.startswith("keys") and reply.status == 200:
            self.key_bodies.append(reply.body)
            reply = HttpReply(reply.status, reply.headers, b"")
        self.replies.append((label, reply))
        return reply


@pytest.fixture
def credentials_endpoint() -> Iterator[CredentialsEndpoint]:
    """A container credentials endpoint whose credentials live three seconds."""
    with CredentialsEndpoint(lifetime=3.0) as endpoint:
        yield endpoint


@pytest.fixture
def proxy(emulator: Emulator) -> Iterator[FaultProxy]:
    """A fault proxy in front of the emulator."""
    with FaultProxy(emulator.endpoint, slow_seconds=2.0) as started:
        yield started


def request(
    capture: Capture, sidecar: SidecarProcess, label: str, path: str, **headers: str
) -> None:
    """GET ``path`` on the keys listener with exactly ``headers`` and keep the reply."""
    capture.record(label, http_request(sidecar.url(path), headers=headers))


def post(
    capture: Capture, sidecar: SidecarProcess, label: str, path: str, body: bytes, **headers: str
) -> HttpReply:
    """POST ``body`` to ``path`` with exactly ``headers``, keep the reply and return it."""
    reply = http_request(sidecar.url(path), method="POST", headers=headers, body=body)
    return capture.record(label, reply)


def scrape(capture: Capture, sidecar: SidecarProcess) -> None:
    """Keep one scrape of the metrics listener."""
    reply = http_request(sidecar.metrics_url())
    assert reply.status == 200
    capture.metrics.append(reply.body.decode())


def run_load(capture: Capture, sidecar: SidecarProcess, token: str) -> None:
    """Send a bounded mix of good, conditional and HEAD requests from a few threads."""

    def one(index: int) -> tuple[str, HttpReply]:
        headers = {"X-Sidecar-Token": token}
        if index % 3 == 1:
            headers["If-None-Match"] = "*"
        method = "HEAD" if index % 5 == 4 else "GET"
        return "keys-load", http_request(sidecar.url("/v1/keys"), method=method, headers=headers)

    with ThreadPoolExecutor(max_workers=LOAD_THREADS) as pool:
        for label, reply in pool.map(one, range(LOAD_REQUESTS)):
            assert reply.status in {200, 304}
            capture.record(label, reply)


def run_bad_requests(capture: Capture, sidecar: SidecarProcess, token: str, key: str) -> None:
    """Send requests that must be rejected, some carrying a secret in the wrong place."""
    request(capture, sidecar, "keys-no-token", "/v1/keys")
    request(capture, sidecar, "keys-wrong-token", "/v1/keys", **{"X-Sidecar-Token": "x" * 20})

    # A confused client that sends an API key, or the token with a typo, as the token.
    request(capture, sidecar, "keys-key-as-token", "/v1/keys", **{"X-Sidecar-Token": key})
    request(capture, sidecar, "keys-token-typo", "/v1/keys", **{"X-Sidecar-Token": token + "x"})
    request(
        capture,
        sidecar,
        "keys-forwarded",
        "/v1/keys",
        **{"X-Sidecar-Token": token, "X-Forwarded-For": "203.0.113.9"},
    )

    request(capture, sidecar, "not-found", "/v1/secrets", **{"X-Sidecar-Token": token})
    request(capture, sidecar, "not-found-no-token", "/admin")
    request(capture, sidecar, "readyz", "/readyz")
    request(capture, sidecar, "healthz", "/healthz")
    wrong_method = http_request(
        sidecar.url("/v1/keys"), method="POST", headers={"X-Sidecar-Token": token}, body=b"{}"
    )
    capture.record("keys-post", wrong_method)
    long_poll = http_request(
        sidecar.url("/v1/keys?wait=0.5"),
        headers={"X-Sidecar-Token": token, "If-None-Match": etag(sidecar, token)},
    )
    capture.record("keys-long-poll", long_poll)

    statuses = {label: reply.status for label, reply in capture.replies[-11:]}
    assert statuses["keys-long-poll"] == 304
    assert statuses["keys-no-token"] == 403
    assert statuses["keys-key-as-token"] == 403
    assert statuses["keys-forwarded"] == 400
    assert statuses["not-found"] == 404
    assert statuses["keys-post"] == 405


def etag(sidecar: SidecarProcess, token: str) -> str:
    """Return the ETag that /v1/keys sends now."""
    return http_request(sidecar.url("/v1/keys"), headers={"X-Sidecar-Token": token}).headers["ETag"]


def run_verify(capture: Capture, sidecar: SidecarProcess, token: str, keys: list[str]) -> None:
    """Check good, wrong and malformed keys on /v1/verify; no reply may echo a key."""
    auth = {"X-Sidecar-Token": token}
    current = post(
        capture,
        sidecar,
        "verify-current",
        "/v1/verify",
        json.dumps({"key": keys[-1]}).encode(),
        **auth,
    )
    old = post(
        capture, sidecar, "verify-old", "/v1/verify", json.dumps({"key": keys[0]}).encode(), **auth
    )
    broken = post(
        capture, sidecar, "verify-broken", "/v1/verify", ('{"key": "' + keys[-1]).encode(), **auth
    )
    no_token = post(
        capture, sidecar, "verify-no-token", "/v1/verify", json.dumps({"key": keys[-1]}).encode()
    )
    assert current.json() == {"valid": True, "matched": "current"}
    assert old.json() == {"valid": False, "matched": None}
    assert broken.status == 400
    assert no_token.status == 403


def run_fault(
    capture: Capture, sidecar: SidecarProcess, proxy: FaultProxy, fault: Fault, token: str
) -> None:
    """Inject ``fault`` until two polls failed, request everything, then wait for recovery."""
    failed = len(sidecar.events_named("poll.failed"))
    recovered = len(sidecar.events_named("poll.recovered"))
    proxy.inject(fault)
    wait_until(
        lambda: len(sidecar.events_named("poll.failed")) >= failed + 2,
        WAIT,
        message=sidecar.log_text(),
    )
    request(capture, sidecar, "keys-stale", "/v1/keys", **{"X-Sidecar-Token": token})
    request(capture, sidecar, "readyz-stale", "/readyz")
    post(capture, sidecar, "refresh-fault", "/v1/refresh", b"", **{"X-Sidecar-Token": token})
    scrape(capture, sidecar)
    proxy.clear()
    wait_until(
        lambda: len(sidecar.events_named("poll.recovered")) > recovered,
        WAIT,
        message=sidecar.log_text(),
    )


def run_credentials_outage(
    capture: Capture, sidecar: SidecarProcess, endpoint: CredentialsEndpoint
) -> None:
    """Take the credentials endpoint down until a poll fails for it, then bring it back."""
    recovered = len(sidecar.events_named("poll.recovered"))
    endpoint.stop_listening()
    wait_until(
        lambda: any(e["reason"] == "credentials" for e in sidecar.events_named("poll.failed")),
        WAIT,
    )
    request(capture, sidecar, "readyz-credentials", "/readyz")
    scrape(capture, sidecar)
    endpoint.listen()
    wait_until(lambda: len(sidecar.events_named("poll.recovered")) > recovered, WAIT)


def check_config_output(sidecar: SidecarProcess) -> str:
    """Run ``sidecar check-config`` with the sidecar's environment and return its output."""
    finished = subprocess.run(
        [sys.executable, "-m", "sidecar", "check-config"],
        env=sidecar.env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout.decode() + finished.stderr.decode()


def test_no_secret_in_logs_replies_or_metrics(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
    credentials_endpoint: CredentialsEndpoint,
    proxy: FaultProxy,
) -> None:
    """No key, token or credential used in the scenario appears outside the keys replies."""
    capture = Capture()
    token = "tok-" + secrets.token_urlsafe(24)
    keys = [new_key(), new_key()]
    secret_id = make_secret(pair_string(keys[0], keys[1]))
    sidecar = start_sidecar(
        secret_id,
        endpoint=proxy.url,
        env=credentials_endpoint.environment(),
        token=token,
        log_level="debug",
        metrics_port=-1,
        backoff_initial=0.05,
        backoff_max=0.3,
        read_timeout=0.5,
        refresh_min_interval=1,
    )
    scrape(capture, sidecar)

    # Load, then rotations picked up while the API is in use.
    run_load(capture, sidecar, token)
    for _ in range(ROTATIONS):
        keys.append(new_key())
        version = put_secret(secrets_client, secret_id, pair_string(keys[-1], keys[-2]))
        sidecar.wait_for_version(version, timeout=WAIT)
        run_load(capture, sidecar, token)
        scrape(capture, sidecar)

    # Upstream faults, one after the other.
    for fault in FAULTS:
        run_fault(capture, sidecar, proxy, fault, token)

    # An invalid value that contains a new key, then a valid one again.
    keys.append(new_key())
    put_secret(secrets_client, secret_id, '{"API_KEY_CURRENT": "' + keys[-1] + '", ')
    wait_until(
        lambda: any(e["reason"] == "invalid_secret" for e in sidecar.events_named("poll.failed")),
        WAIT,
    )
    scrape(capture, sidecar)
    keys.append(new_key())
    version = put_secret(secrets_client, secret_id, pair_string(keys[-1], keys[-3]))
    sidecar.wait_for_version(version, timeout=WAIT)

    run_credentials_outage(capture, sidecar, credentials_endpoint)
    run_bad_requests(capture, sidecar, token, keys[-1])
    run_verify(capture, sidecar, token, keys)
    refreshed = post(capture, sidecar, "refresh", "/v1/refresh", b"", **{"X-Sidecar-Token": token})
    assert refreshed.status in {200, 429}
    scrape(capture, sidecar)
    config_output = check_config_output(sidecar)
    assert sidecar.stop() == 0

    capture.secrets_used.update(keys)
    capture.secrets_used.add(token)
    capture.secrets_used.add(credentials_endpoint.authorization_token)
    for issued in credentials_endpoint.issued:
        capture.secrets_used.update(issued.values())

    # The scenario really ran: rotations, every fault, credentials in use.
    reasons = {event["reason"] for event in sidecar.events_named("poll.failed")}
    assert len(sidecar.events_named("secret.reloaded")) == ROTATIONS + 1
    assert {"throttled", "server_error", "connection", "timeout"} <= reasons
    assert {"access_denied", "decryption_failed", "invalid_secret", "credentials"} <= reasons
    assert len(credentials_endpoint.issued) >= 10
    # The search finds a key where one is meant to be, so it can find a leak.
    assert any(keys[0].encode() in body for body in capture.key_bodies)

    log_text = sidecar.log_text()
    assert all(json.loads(line) for line in log_text.splitlines() if line.strip())
    assert_no_secret_in(capture, log_text, config_output)


def assert_no_secret_in(capture: Capture, log_text: str, config_output: str) -> None:
    """Search the log, the check-config output, the scrapes and the replies for every secret."""
    assert capture.secrets_used
    for secret in sorted(capture.secrets_used):
        assert secret not in log_text, "a secret is in the log"
        assert secret not in config_output, "a secret is in the check-config output"
        for text in capture.metrics:
            assert secret not in text, "a secret is in a metrics scrape"
        for label, reply in capture.replies:
            assert secret.encode() not in reply.body, f"a secret is in the {label} reply body"
            for name, value in reply.headers.items():
                assert secret not in value, f"a secret is in the {label} reply header {name}"
