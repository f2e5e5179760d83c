"""Run the real sidecar as a subprocess and read what it does."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.emulator import LOOPBACK, client_environment, wait_for_port

TOKEN = "test-token-0123456789abcdef"
STARTUP_TIMEOUT = 20.0
COMMAND_TIMEOUT = 60.0


def wait_until(
    condition: Callable[[], object], timeout: float, interval: float = 0.05, message: str = ""
) -> None:
    """Call ``condition`` until it returns a true value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(message or f"condition not met within {timeout:g} s")


@dataclass
class HttpReply:
    """A status, headers and body from one HTTP request."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """Decode the body as JSON."""
        return json.loads(self.body)


def http_request(
    url: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 5.0,
) -> HttpReply:
    """Send one request with urllib and return the reply, error statuses included."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))  # noqa: S310 - loopback only
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return HttpReply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return HttpReply(error.code, dict(error.headers), error.read())


@dataclass
class SidecarProcess:
    """A sidecar process (``python -m sidecar`` by default) and its captured stderr."""

    env: dict[str, str]
    port: int
    log_path: Path
    token: str | None = TOKEN
    metrics_port: int = 0
    args: tuple[str, ...] = ()
    # The program that runs the sidecar; a test of the installed wheel passes its console script.
    program: tuple[str, ...] = (sys.executable, "-m", "sidecar")
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> SidecarProcess:
        """Start the process and wait until the keys listener accepts connections."""
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [*self.program, *self.args],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        try:
            wait_for_port(self.port, STARTUP_TIMEOUT)
        except TimeoutError:
            self.stop()
            raise AssertionError("sidecar did not listen; its log:\n" + self.log_text()) from None
        return self

    def url(self, path: str) -> str:
        """Return the URL of ``path`` on the keys listener."""
        return f"http://{LOOPBACK}:{self.port}{path}"

    def metrics_url(self, path: str = "/metrics") -> str:
        """Return the URL of ``path`` on the metrics listener."""
        return f"http://{LOOPBACK}:{self.metrics_port}{path}"

    def get(
        self, path: str, headers: Mapping[str, str] | None = None, *, token: bool = True
    ) -> HttpReply:
        """GET ``path`` on the keys listener, with the token unless ``token`` is False."""
        sent = dict(headers or {})
        if token and self.token is not None:
            sent.setdefault("X-Sidecar-Token", self.token)
        return http_request(self.url(path), headers=sent)

    def keys(self) -> dict[str, Any]:
        """GET /v1/keys and return the JSON document; fails unless the status is 200."""
        reply = self.get("/v1/keys")
        assert reply.status == 200, f"/v1/keys returned {reply.status}: {reply.body!r}"
        document: dict[str, Any] = reply.json()
        return document

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait until /readyz returns 200."""
        wait_until(
            lambda: self.get("/readyz").status == 200,
            timeout,
            message="sidecar not ready; its log:\n" + self.log_text(),
        )

    def wait_for_version(self, version_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until /v1/keys serves ``version_id`` and return that document."""
        seen: dict[str, Any] = {}

        def served() -> bool:
            reply = self.get("/v1/keys")
            if reply.status != 200:
                return False
            seen.update(reply.json())
            return bool(seen.get("version_id") == version_id)

        wait_until(
            served, timeout, message=f"version {version_id} not served; log:\n{self.log_text()}"
        )
        return seen

    def log_text(self) -> str:
        """Return everything the process wrote to stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        """Parse the JSON log lines; a line that is not JSON fails the test."""
        return [json.loads(line) for line in self.log_text().splitlines() if line.strip()]

    def events_named(self, name: str) -> list[dict[str, Any]]:
        """Return the log events whose event field is ``name``."""
        return [event for event in self.log_events() if event.get("event") == name]

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process."""
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        """Send SIGTERM, wait for the exit and return the exit status."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
            raise AssertionError("sidecar did not exit after SIGTERM") from None

    def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit on its own and return the status."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)


def base_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """Return os.environ without SIDECAR_* variables, plus ``extra``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SIDECAR_")}
    env.update(extra)
    return env


def kill_quietly(process: SidecarProcess) -> None:
    """Stop a process at teardown, whatever state it is in."""
    with contextlib.suppress(AssertionError, OSError):
        process.stop()


def run_command(
    endpoint: str,
    *arguments: str,
    stdin: str = "",
    settings: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sidecar ARGUMENTS`` against ``endpoint`` and capture its output."""
    env = base_environment({**client_environment(endpoint), **(settings or {})})
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *arguments],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
