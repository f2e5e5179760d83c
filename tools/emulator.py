"""Start moto's Secrets Manager emulator on a free loopback port.

Used by the test fixtures and by the demo. The emulator is a real HTTP server that
speaks the Secrets Manager JSON protocol, so the sidecar talks to it exactly as it
would to AWS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
# Dummy credentials for the emulator. moto accepts any; they are not secrets.
DUMMY_ACCESS_KEY_ID = "testing"
DUMMY_SECRET_ACCESS_KEY = "testing"  # noqa: S105 - placeholder accepted by moto
REGION = "us-east-1"


def free_port() -> int:
    """Return a TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float, host: str = LOOPBACK) -> None:
    """Wait until something listens on ``host:port`` or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    msg = f"nothing listened on {host}:{port} within {timeout:g} s"
    raise TimeoutError(msg)


def client_environment(endpoint: str) -> dict[str, str]:
    """Return the AWS variables that point botocore at the emulator with dummy credentials."""
    return {
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_ACCESS_KEY,
        # Keep botocore away from ~/.aws and from the instance metadata service.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@dataclass
class Emulator:
    """A running moto server."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def endpoint(self) -> str:
        """Return the base URL of the emulator."""
        return f"http://{LOOPBACK}:{self.port}"

    def reset(self) -> None:
        """Delete every resource in the emulator (moto's reset API)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")  # noqa: S310 - loopback URL built here
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310
            pass

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _moto_command() -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script)]
    found = shutil.which("moto_server")
    if found is None:
        msg = "moto_server not found; install the dev extra: pip install -e '.[dev]'"
        raise FileNotFoundError(msg)
    return [found]


def start_emulator(port: int | None = None, log_path: Path | None = None) -> Emulator:
    """Start moto_server on loopback and wait until it accepts connections."""
    chosen = port or free_port()
    command = [*_moto_command(), "-H", LOOPBACK, "-p", str(chosen)]
    if log_path is None:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    else:
        # The child keeps its own copy of the descriptor, so this one can close now.
        with log_path.open("ab") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    emulator = Emulator(process=process, port=chosen)
    try:
        wait_for_port(chosen, STARTUP_TIMEOUT)
        _wait_until_serving(emulator)
    except BaseException:
        emulator.stop()
        raise
    return emulator


def _wait_until_serving(emulator: Emulator) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if emulator.process.poll() is not None:
            msg = f"moto_server exited with status {emulator.process.returncode}"
            raise RuntimeError(msg)
        with contextlib.suppress(urllib.error.URLError, OSError):
            emulator.reset()
            return
        time.sleep(0.1)
    msg = f"moto_server did not answer within {STARTUP_TIMEOUT:g} s"
    raise TimeoutError(msg)


@contextlib.contextmanager
def running_emulator() -> Iterator[Emulator]:
    """Run an emulator for the duration of a ``with`` block."""
    emulator = start_emulator()
    try:
        yield emulator
    finally:
        emulator.stop()
