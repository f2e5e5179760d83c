"""Fixtures: a real Secrets Manager emulator on loopback and real sidecar processes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.helpers import TOKEN, SidecarProcess, base_environment, kill_quietly
from tools.emulator import (
    DUMMY_ACCESS_KEY_ID,
    DUMMY_SECRET_ACCESS_KEY,
    REGION,
    Emulator,
    client_environment,
    free_port,
    start_emulator,
)

CURRENT_KEY = "key-current-AAAAAAAAAAAAAAAAAAAAAAAA"
PREVIOUS_KEY = "key-previous-BBBBBBBBBBBBBBBBBBBBBBB"


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """Run one moto Secrets Manager server for the whole session."""
    log_path = tmp_path_factory.mktemp("emulator") / "moto.log"
    server = start_emulator(log_path=log_path)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def secrets_client(emulator: Emulator) -> Any:
    """A boto3 client that the tests use to create and change secrets in the emulator."""
    return boto3.client(
        "secretsmanager",
        endpoint_url=emulator.endpoint,
        region_name=REGION,
        aws_access_key_id=DUMMY_ACCESS_KEY_ID,
        aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
    )


def pair_string(current: str | None, previous: str | None = None) -> str:
    """Return the SecretString for a key pair in the default fields."""
    return json.dumps({"API_KEY_CURRENT": current, "API_KEY_PREVIOUS": previous})


@pytest.fixture
def make_secret(secrets_client: Any) -> Callable[..., str]:
    """Create a secret with a unique name and return the name."""

    def create(secret_string: str | None = None) -> str:
        name = f"test/{uuid.uuid4().hex}"
        value = (
            secret_string if secret_string is not None else pair_string(CURRENT_KEY, PREVIOUS_KEY)
        )
        secrets_client.create_secret(Name=name, SecretString=value)
        return name

    return create


def put_secret(secrets_client: Any, secret_id: str, secret_string: str) -> str:
    """Write a new AWSCURRENT version and return its version id."""
    reply = secrets_client.put_secret_value(SecretId=secret_id, SecretString=secret_string)
    version_id: str = reply["VersionId"]
    return version_id


@pytest.fixture
def start_sidecar(emulator: Emulator, tmp_path: Path) -> Iterator[Callable[..., SidecarProcess]]:
    """Start sidecar processes against the emulator; each is stopped at teardown.

    Keyword arguments become SIDECAR_* settings (``poll_interval=1`` sets
    SIDECAR_POLL_INTERVAL=1). ``endpoint`` replaces the emulator URL, for example
    with a fault-injecting proxy in front of it, and ``env`` adds raw variables.
    A None value in ``env`` removes the variable, for example the static AWS keys.
    """
    started: list[SidecarProcess] = []

    def start(
        secret_id: str,
        *,
        endpoint: str | None = None,
        env: Mapping[str, str | None] | None = None,
        token: str | None = TOKEN,
        wait_ready: bool = True,
        **settings: object,
    ) -> SidecarProcess:
        port = free_port()
        variables = client_environment(endpoint or emulator.endpoint)
        variables.update(
            {
                "SIDECAR_SECRET_ID": secret_id,
                "SIDECAR_PORT": str(port),
                "SIDECAR_METRICS_PORT": "0",
                "SIDECAR_POLL_INTERVAL": "1",
                "SIDECAR_POLL_JITTER": "0",
                "SIDECAR_BACKOFF_INITIAL": "0.2",
                "SIDECAR_BACKOFF_MAX": "1",
                "SIDECAR_READ_TIMEOUT": "2",
                "SIDECAR_CONNECT_TIMEOUT": "1",
            }
        )
        if token is not None:
            variables["SIDECAR_TOKEN"] = token
        for name, value in settings.items():
            variables[f"SIDECAR_{name.upper()}"] = str(value)
        extra = env or {}
        variables.update({name: value for name, value in extra.items() if value is not None})
        metrics_port = int(variables["SIDECAR_METRICS_PORT"])
        if metrics_port == -1:
            metrics_port = free_port()
            variables["SIDECAR_METRICS_PORT"] = str(metrics_port)
        process_env = base_environment(variables)
        for name in [name for name, value in extra.items() if value is None]:
            process_env.pop(name, None)
        process = SidecarProcess(
            env=process_env,
            port=port,
            log_path=tmp_path / f"sidecar-{len(started)}.log",
            token=token,
            metrics_port=metrics_port,
        )
        started.append(process)
        process.start()
        if wait_ready:
            process.wait_ready()
        return process

    yield start
    for process in started:
        kill_quietly(process)
