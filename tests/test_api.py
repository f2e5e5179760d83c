"""The keys API over real HTTP: token, hop guard, routes, readiness and the health check."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CURRENT_KEY, PREVIOUS_KEY, pair_string
from tests.helpers import TOKEN, SidecarProcess, base_environment, wait_until


@pytest.fixture
def sidecar(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> SidecarProcess:
    """A ready sidecar serving the default pair."""
    return start_sidecar(make_secret())


def assert_no_key_material(body: bytes) -> None:
    """Fail if ``body`` contains either key or the token."""
    for secret in (CURRENT_KEY, PREVIOUS_KEY, TOKEN):
        assert secret.encode() not in body


def test_missing_token_403(sidecar: SidecarProcess) -> None:
    """A request without X-Sidecar-Token gets 403 and no keys."""
    reply = sidecar.get("/v1/keys", token=False)

    assert reply.status == 403
    assert reply.json() == {
        "error": "missing X-Sidecar-Token header; send the token from the token file"
    }
    assert_no_key_material(reply.body)


@pytest.mark.parametrize("presented", ["wrong-token-0123456789abcdef", TOKEN[:-1], TOKEN + "x", ""])
def test_wrong_token_403(sidecar: SidecarProcess, presented: str) -> None:
    """A wrong token gets 403, whatever its length."""
    reply = sidecar.get("/v1/keys", {"X-Sidecar-Token": presented}, token=False)

    assert reply.status == 403
    assert reply.json() == {"error": "invalid X-Sidecar-Token header"}
    assert_no_key_material(reply.body)


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded"])
def test_proxied_request_400(sidecar: SidecarProcess, header: str) -> None:
    """A request that crossed a proxy is rejected even with a valid token."""
    reply = sidecar.get("/v1/keys", {header: "203.0.113.7"})

    assert reply.status == 400
    assert header in reply.json()["error"]
    assert_no_key_material(reply.body)


def test_unknown_path_404_json(sidecar: SidecarProcess) -> None:
    """An unknown path gets 404 with a JSON error body."""
    reply = sidecar.get("/v1/nothing")

    assert reply.status == 404
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json() == {"error": "no such route; the keys are at GET /v1/keys"}
    assert b"nothing" not in reply.body


def test_unknown_path_without_token_403(sidecar: SidecarProcess) -> None:
    """Without a token even an unknown path gets 403, so routes cannot be probed."""
    assert sidecar.get("/v1/nothing", token=False).status == 403


def test_wrong_method_405_json(sidecar: SidecarProcess) -> None:
    """A wrong method gets 405 with an Allow header and a JSON error body."""
    from tests.helpers import http_request  # noqa: PLC0415

    reply = http_request(
        sidecar.url("/v1/keys"), method="DELETE", headers={"X-Sidecar-Token": TOKEN}
    )

    assert reply.status == 405
    assert reply.headers["Allow"] == "GET, HEAD"
    assert "method DELETE is not allowed on /v1/keys" in reply.json()["error"]


def test_health_routes_need_no_token(sidecar: SidecarProcess) -> None:
    """/healthz and /readyz respond without a token and carry no key material."""
    health = sidecar.get("/healthz", token=False)
    ready = sidecar.get("/readyz", token=False)

    assert health.status == 200
    assert health.json() == {"status": "ok"}
    assert ready.status == 200
    assert ready.json()["status"] == "ready"
    assert_no_key_material(health.body)
    assert_no_key_material(ready.body)


def test_not_ready_before_first_load(
    secrets_client: Any, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """Before the first successful poll, /readyz and /v1/keys return 503 naming the error class."""
    secret_id = "test/created-later"
    sidecar = start_sidecar(secret_id, wait_ready=False)
    wait_until(lambda: sidecar.events_named("poll.failed"), timeout=10)

    ready = sidecar.get("/readyz")
    keys = sidecar.get("/v1/keys")

    assert ready.status == 503
    assert keys.status == 503
    assert "ResourceNotFoundException" in ready.json()["error"]
    assert keys.json()["error"] == ready.json()["error"]

    secrets_client.create_secret(Name=secret_id, SecretString=pair_string(CURRENT_KEY))
    try:
        sidecar.wait_ready(timeout=10)
        assert sidecar.keys()["current"] == CURRENT_KEY
    finally:
        secrets_client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    """Run ``sidecar healthcheck`` against the keys listener on ``port``."""
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "healthcheck"],
        env=base_environment({"SIDECAR_PORT": str(port)}),
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def test_healthcheck_ready_exit_0(sidecar: SidecarProcess) -> None:
    """The health check command exits 0 while /readyz returns 200."""
    assert run_healthcheck(sidecar.port).returncode == 0


def test_healthcheck_not_ready_exit_1(start_sidecar: Callable[..., SidecarProcess]) -> None:
    """The health check command exits 1 while the keys are not loaded."""
    sidecar = start_sidecar("test/never-created", wait_ready=False)

    result = run_healthcheck(sidecar.port)

    assert result.returncode == 1
    assert "/readyz returned 503" in result.stderr


def test_healthcheck_unreachable_exit_1() -> None:
    """The health check command exits 1 when nothing listens."""
    from tools.emulator import free_port  # noqa: PLC0415

    result = run_healthcheck(free_port())

    assert result.returncode == 1
    assert "cannot reach" in result.stderr


def test_token_file_created(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess], tmp_path: Path
) -> None:
    """A missing token file is created with a random token, mode 0640, and that token works."""
    token_file = tmp_path / "shared" / "token"
    token_file.parent.mkdir()
    sidecar = start_sidecar(make_secret(), token=None, token_file=token_file)

    token = token_file.read_text().strip()
    mode = stat.S_IMODE(token_file.stat().st_mode)
    with_token = sidecar.get("/v1/keys", {"X-Sidecar-Token": token}, token=False)

    assert len(token) >= 40
    assert mode == 0o640
    assert with_token.status == 200
    assert sidecar.get("/v1/keys", token=False).status == 403
    assert token not in sidecar.log_text()
    assert list(token_file.parent.iterdir()) == [token_file]


def test_existing_token_file_kept(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess], tmp_path: Path
) -> None:
    """An existing token file is read, not replaced."""
    token_file = tmp_path / "token"
    token_file.write_text("existing-token-0123456789\n")

    sidecar = start_sidecar(make_secret(), token=None, token_file=token_file)

    assert token_file.read_text() == "existing-token-0123456789\n"
    assert (
        sidecar.get(
            "/v1/keys", {"X-Sidecar-Token": "existing-token-0123456789"}, token=False
        ).status
        == 200
    )


def test_no_token_mode_serves_without_header(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """With SIDECAR_REQUIRE_TOKEN=false keys are served without a header and a warning is logged."""
    sidecar = start_sidecar(make_secret(), token=None, require_token="false")

    assert sidecar.get("/v1/keys", token=False).status == 200
    assert sidecar.events_named("sidecar.token_disabled")


def test_second_signal_during_drain_ignored(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """A second SIGTERM while a request is draining is logged and the exit stays clean."""
    import signal  # noqa: PLC0415
    import socket  # noqa: PLC0415

    sidecar = start_sidecar(make_secret())
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as client:
        # A verify request whose body never arrives stays in flight during the drain.
        client.sendall(
            b"POST /v1/verify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"X-Sidecar-Token: {TOKEN}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"key"'
        )
        wait_until(lambda: sidecar.process is not None and sidecar.process.poll() is None, 5)
        sidecar.signal(signal.SIGTERM)
        wait_until(lambda: sidecar.events_named("shutdown.started"), timeout=5)
        sidecar.signal(signal.SIGTERM)

        status = sidecar.wait_exit(timeout=20)

    assert status == 0
    assert sidecar.events_named("shutdown.signal_ignored")[0]["signal"] == "SIGTERM"
    assert sidecar.events_named("shutdown.complete")


def test_healthcheck_trickling_server_exit_1() -> None:
    """A server that sends its reply one byte at a time cannot hold the health check."""
    import socket  # noqa: PLC0415
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(1024)
            # At most 40 bytes over 20 s, then the thread ends by itself.
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n":
                if stop.is_set():
                    return
                connection.sendall(bytes([byte]))
                time.sleep(0.5)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        result = run_healthcheck(port)
    finally:
        stop.set()
        listener.close()

    assert result.returncode == 1
    assert "no complete reply within 1.5 s" in result.stderr
