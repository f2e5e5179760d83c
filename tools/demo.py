"""Demo: the sidecar against a local Secrets Manager emulator, through one rotation.

Starts moto's emulator on loopback, creates a demo secret, runs the sidecar
against it, shows the served keys, rotates the secret with `sidecar rotate`, and
shows the new pair served by the same process. Then it keeps running until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3

from sidecar.keygen import generate_key
from tests.helpers import http_request, wait_until
from tools.emulator import (
    DUMMY_ACCESS_KEY_ID,
    DUMMY_SECRET_ACCESS_KEY,
    REGION,
    client_environment,
    free_port,
    running_emulator,
)

SECRET_ID = "demo/jwt-service/api-keys"  # noqa: S105 - a secret name, not a value
POLL_INTERVAL = "2"


def show(title: str, document: dict[str, Any]) -> None:
    """Print a step of the demo and the document the sidecar served."""
    print(f"\n== {title}", flush=True)
    print(json.dumps(document, indent=2), flush=True)


def main() -> int:
    """Run the demo until Ctrl-C."""
    with running_emulator() as emulator, tempfile.TemporaryDirectory() as workdir:
        client = boto3.client(
            "secretsmanager",
            endpoint_url=emulator.endpoint,
            region_name=REGION,
            aws_access_key_id=DUMMY_ACCESS_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
        )
        first_key = generate_key()
        client.create_secret(
            Name=SECRET_ID,
            SecretString=json.dumps({"API_KEY_CURRENT": first_key, "API_KEY_PREVIOUS": None}),
        )
        print(f"emulator: {emulator.endpoint}; created secret {SECRET_ID}", flush=True)

        port = free_port()
        token_file = Path(workdir) / "token"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")},
            **client_environment(emulator.endpoint),
            "SIDECAR_SECRET_ID": SECRET_ID,
            "SIDECAR_PORT": str(port),
            "SIDECAR_METRICS_PORT": str(free_port()),
            "SIDECAR_TOKEN_FILE": str(token_file),
            "SIDECAR_POLL_INTERVAL": POLL_INTERVAL,
            "SIDECAR_LOG_FORMAT": "console",
        }
        sidecar = subprocess.Popen([sys.executable, "-m", "sidecar"], env=env)
        try:
            return run_scenario(env, sidecar, port, token_file)
        finally:
            if sidecar.poll() is None:
                sidecar.send_signal(signal.SIGTERM)
                sidecar.wait(timeout=15)


def run_scenario(
    env: dict[str, str], sidecar: subprocess.Popen[bytes], port: int, token_file: Path
) -> int:
    """Show the keys, rotate with `sidecar rotate`, show the new keys, then wait for Ctrl-C."""
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: _ready(base), timeout=20, message="the sidecar did not become ready")
    token = token_file.read_text().strip()
    headers = {"X-Sidecar-Token": token}
    print(f"\nthe sidecar created the token file {token_file}", flush=True)
    print(f'try: curl -H "X-Sidecar-Token: $(cat {token_file})" {base}/v1/keys', flush=True)

    before = http_request(f"{base}/v1/keys", headers=headers).json()
    show(f"served keys (pid {sidecar.pid})", before)

    # The same command an operator runs: it generates the key, keeps the old
    # current key as previous and moves AWSCURRENT only if nobody else did.
    command = [sys.executable, "-m", "sidecar", "rotate", "--secret-id", SECRET_ID, "--json"]
    print(f"\n== sidecar rotate --secret-id {SECRET_ID} --json", flush=True)
    rotated = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if rotated.returncode != 0:
        print(rotated.stderr, end="", file=sys.stderr, flush=True)
        return rotated.returncode
    result = json.loads(rotated.stdout)
    print(rotated.stdout, end="", flush=True)
    started = time.monotonic()

    def rotated_served() -> bool:
        reply = http_request(f"{base}/v1/keys", headers=headers)
        return reply.status == 200 and reply.json()["version_id"] == result["version_id"]

    wait_until(rotated_served, timeout=15, message="the rotation was not served")
    after = http_request(f"{base}/v1/keys", headers=headers).json()
    elapsed = time.monotonic() - started
    show(f"served keys after {elapsed:.1f} s, same process (pid {sidecar.pid})", after)
    safe_after = result["safe_after"]
    print(f"\nevery healthy sidecar of this secret serves the new pair by {safe_after}", flush=True)
    print("\nthe sidecar keeps polling; press Ctrl-C to stop", flush=True)
    try:
        return sidecar.wait()
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
        return 0


def _ready(base: str) -> bool:
    try:
        return http_request(f"{base}/readyz").status == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
