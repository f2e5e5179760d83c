"""The test rig shared by the scenarios: emulator, secret, proxy and sidecars."""

from __future__ import annotations

import itertools
import json
import secrets
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from bench.processes import BenchSidecar, ServerProcess, start_counting_proxy, stop_process
from tests.helpers import base_environment
from tools.emulator import (
    DUMMY_ACCESS_KEY_ID,
    DUMMY_SECRET_ACCESS_KEY,
    REGION,
    Emulator,
    client_environment,
    free_port,
    start_emulator,
)

SECRET_ID = "bench/api-keys"  # noqa: S105 - the name of the secret, not its value
# A fixed token for the benchmark sidecars; it protects nothing outside this run.
TOKEN = "bench-token-0123456789abcdef"  # noqa: S105
# Generated keys have the length of a typical API key.
KEY_BYTES = 24
# Settings of every benchmark sidecar unless a scenario overrides them: polls
# rarely, so that polling does not disturb the serving measurements.
BASE_SETTINGS: dict[str, object] = {
    "poll_interval": 60,
    "log_level": "warning",
    "metrics_host": "127.0.0.1",
}


@dataclass
class Rig:
    """A running emulator with one secret, and the sidecars started against it."""

    workdir: Path
    emulator: Emulator
    client: Any
    sidecars: list[BenchSidecar] = field(default_factory=list)
    servers: list[ServerProcess] = field(default_factory=list)
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def start(cls, workdir: Path) -> Rig:
        """Start the emulator and create the benchmark secret."""
        emulator = start_emulator(log_path=workdir / "emulator.log")
        client = boto3.client(
            "secretsmanager",
            endpoint_url=emulator.endpoint,
            region_name=REGION,
            aws_access_key_id=DUMMY_ACCESS_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
        )
        rig = cls(workdir=workdir, emulator=emulator, client=client)
        client.create_secret(Name=SECRET_ID, SecretString=rig.new_pair(None))
        return rig

    def new_pair(self, previous: str | None) -> str:
        """Return a SecretString with a fresh current key and ``previous``."""
        current = f"bench-{secrets.token_urlsafe(KEY_BYTES)}"
        return json.dumps({"API_KEY_CURRENT": current, "API_KEY_PREVIOUS": previous})

    def next_secret_string(self) -> str:
        """Return the SecretString of the next rotation: the current key becomes previous."""
        served = self.client.get_secret_value(SecretId=SECRET_ID, VersionStage="AWSCURRENT")
        return self.new_pair(json.loads(served["SecretString"])["API_KEY_CURRENT"])

    def rotate(self) -> str:
        """Write a new AWSCURRENT version, as a rotation does, and return its version id."""
        return self.put(self.next_secret_string())

    def put(self, secret_string: str) -> str:
        """Call PutSecretValue and return the new version id."""
        reply = self.client.put_secret_value(SecretId=SECRET_ID, SecretString=secret_string)
        version_id: str = reply["VersionId"]
        return version_id

    def counting_proxy(self) -> ServerProcess:
        """Start a counting proxy in front of the emulator; stopped with the rig."""
        proxy = start_counting_proxy(self.workdir, self.emulator.endpoint)
        self.servers.append(proxy)
        return proxy

    def sidecar_environment(
        self, endpoint: str | None = None, **settings: object
    ) -> dict[str, str]:
        """Return the environment of a benchmark sidecar with ``settings`` applied."""
        variables = client_environment(endpoint or self.emulator.endpoint)
        variables["SIDECAR_SECRET_ID"] = SECRET_ID
        variables["SIDECAR_TOKEN"] = TOKEN
        for name, value in {**BASE_SETTINGS, **settings}.items():
            variables[f"SIDECAR_{name.upper()}"] = str(value)
        return base_environment(variables)

    def sidecar(
        self,
        *,
        endpoint: str | None = None,
        module: str = "sidecar",
        wait_ready: bool = True,
        extra_settings: Mapping[str, object] | None = None,
        **settings: object,
    ) -> BenchSidecar:
        """Start a sidecar against the emulator (or ``endpoint``) and wait until ready.

        Keyword arguments and ``extra_settings`` become SIDECAR_* variables
        (``poll_interval=1`` sets SIDECAR_POLL_INTERVAL=1).
        """
        port, metrics_port = free_port(), free_port()
        settings = {**settings, **(extra_settings or {})}
        env = self.sidecar_environment(endpoint, port=port, metrics_port=metrics_port, **settings)
        number = next(self._counter)
        sidecar = BenchSidecar(
            env=env,
            port=port,
            log_path=self.workdir / f"sidecar-{number}.log",
            token=TOKEN,
            metrics_port=metrics_port,
            module=module,
        )
        self.sidecars.append(sidecar)
        sidecar.start()
        if wait_ready:
            sidecar.wait_ready()
        return sidecar

    def supports_setting(self, name: str, value: str) -> bool:
        """Return whether this build of the sidecar accepts SIDECAR_<name>=<value>.

        The sidecar rejects unknown settings, so ``sidecar check-config`` with
        the variable set shows whether a feature that needs it exists yet.
        """
        env = self.sidecar_environment(**{name: value})
        completed = subprocess.run(
            [sys.executable, "-m", "sidecar", "check-config"],
            env=env,
            capture_output=True,
            check=False,
            timeout=30,
        )
        return completed.returncode == 0

    def stop_sidecar(self, sidecar: BenchSidecar) -> None:
        """Stop one sidecar now instead of at the end."""
        if sidecar.process is not None:
            stop_process(sidecar.process)

    def stop(self) -> None:
        """Stop every process the rig started."""
        for sidecar in self.sidecars:
            self.stop_sidecar(sidecar)
        for server in self.servers:
            server.stop()
        self.emulator.stop()
