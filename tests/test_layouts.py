"""SIDECAR_LAYOUT: the pair in one version (fields) or spread over AWSCURRENT and AWSPREVIOUS."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

from tests.barrier_proxy import BarrierProxy
from tests.conftest import CURRENT_KEY, PREVIOUS_KEY, pair_string
from tests.helpers import SidecarProcess, base_environment, run_command, wait_until
from tools.emulator import Emulator, client_environment

KEY_ONE = "key-one-1111111111111111111111111111"
KEY_TWO = "key-two-2222222222222222222222222222"
KEY_THREE = "key-three-333333333333333333333333333"


def single_key(key: str) -> str:
    """Return the SecretString of one version in the stages layout."""
    return json.dumps({"API_KEY_CURRENT": key})


def promote_new_version(secrets_client: Any, secret_id: str, secret_string: str) -> str:
    """Write a version and move AWSCURRENT to it, as a rotation function does."""
    current = secrets_client.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
    version_id = uuid.uuid4().hex
    secrets_client.put_secret_value(
        SecretId=secret_id,
        ClientRequestToken=version_id,
        SecretString=secret_string,
        VersionStages=["AWSPENDING"],
    )
    secrets_client.update_secret_version_stage(
        SecretId=secret_id,
        VersionStage="AWSCURRENT",
        MoveToVersionId=version_id,
        RemoveFromVersionId=current["VersionId"],
    )
    return version_id


def test_fields_layout_serves_pair_in_one_call(
    emulator: Emulator,
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
) -> None:
    """SIDECAR_LAYOUT=fields reads both keys from AWSCURRENT with one call per poll."""
    secret_id = make_secret()
    with BarrierProxy(emulator.port) as proxy:
        sidecar = start_sidecar(secret_id, endpoint=proxy.endpoint, layout="fields")
        wait_until(lambda: proxy.calls_of("GetSecretValue") >= 3, timeout=15)
        document = sidecar.keys()
        sidecar.stop()
        calls = proxy.calls_of("GetSecretValue")
        current_calls = proxy.calls_of("GetSecretValue", "AWSCURRENT")

    assert document["current"] == CURRENT_KEY
    assert document["previous"] == PREVIOUS_KEY
    assert calls == current_calls
    assert calls >= 3


def test_stages_layout_serves_current_and_previous_versions(
    emulator: Emulator,
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """SIDECAR_LAYOUT=stages serves AWSCURRENT's key as current and AWSPREVIOUS's as previous."""
    secret_id = make_secret(single_key(KEY_ONE))
    with BarrierProxy(emulator.port) as proxy:
        sidecar = start_sidecar(secret_id, endpoint=proxy.endpoint, layout="stages")
        first = sidecar.keys()
        second_version = promote_new_version(secrets_client, secret_id, single_key(KEY_TWO))
        second = sidecar.wait_for_version(second_version)
        third_version = promote_new_version(secrets_client, secret_id, single_key(KEY_THREE))
        third = sidecar.wait_for_version(third_version)
        # Three more polls with no change must not read AWSPREVIOUS again.
        polls_before = proxy.calls_of("GetSecretValue", "AWSCURRENT")
        wait_until(
            lambda: proxy.calls_of("GetSecretValue", "AWSCURRENT") >= polls_before + 3,
            timeout=15,
        )
        previous_reads = proxy.calls_of("GetSecretValue", "AWSPREVIOUS")

    assert first["current"] == KEY_ONE
    assert first["previous"] is None
    assert second["current"] == KEY_TWO
    assert second["previous"] == KEY_ONE
    assert third["current"] == KEY_THREE
    assert third["previous"] == KEY_TWO
    # One read per new AWSCURRENT version: the first load and two rotations.
    assert previous_reads == 3


def test_stages_layout_serves_rotate_command_output(
    emulator: Emulator,
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
) -> None:
    """A pair written by sidecar rotate is served the same way in the stages layout."""
    secret_id = make_secret(single_key(KEY_ONE))
    sidecar = start_sidecar(secret_id, layout="stages")

    result = run_command(
        emulator.endpoint,
        *("rotate", "--secret-id", secret_id, "--new-key-stdin", "--json"),
        stdin=KEY_TWO,
    )
    version_id = json.loads(result.stdout)["version_id"]
    document = sidecar.wait_for_version(version_id)

    assert result.returncode == 0, result.stderr
    assert document["current"] == KEY_TWO
    assert document["previous"] == KEY_ONE


def test_stages_layout_rejects_invalid_previous_version(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """An AWSPREVIOUS version that is not a JSON object fails the poll and names the stage."""
    secret_id = make_secret("a raw string, not JSON")
    promote_new_version(secrets_client, secret_id, single_key(KEY_TWO))

    sidecar = start_sidecar(secret_id, layout="stages", wait_ready=False)
    wait_until(lambda: sidecar.events_named("poll.failed"), timeout=15)
    failure = sidecar.events_named("poll.failed")[0]
    reply = sidecar.get("/v1/keys")

    assert reply.status == 503
    assert failure["reason"] == "invalid_secret"
    assert "AWSPREVIOUS" in failure["detail"]
    assert "not valid JSON" in failure["detail"]
    assert KEY_TWO not in sidecar.log_text()


def test_fields_layout_ignores_previous_stage(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """In the fields layout the previous key comes from the field, never from AWSPREVIOUS."""
    secret_id = make_secret(pair_string(KEY_ONE, None))
    version_id = promote_new_version(secrets_client, secret_id, pair_string(KEY_TWO, None))

    sidecar = start_sidecar(secret_id)
    document = sidecar.wait_for_version(version_id)

    assert document["current"] == KEY_TWO
    assert document["previous"] is None


def test_layout_setting_validated(emulator: Emulator) -> None:
    """An unknown SIDECAR_LAYOUT stops check-config with status 2 and names both layouts."""
    env = base_environment(
        {
            **client_environment(emulator.endpoint),
            "SIDECAR_SECRET_ID": "test/layout",
            "SIDECAR_REQUIRE_TOKEN": "false",
            "SIDECAR_LAYOUT": "pairs",
        }
    )

    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2
    assert "SIDECAR_LAYOUT: invalid value 'pairs'" in result.stderr
    assert "fields" in result.stderr
    assert "stages" in result.stderr


def test_check_config_shows_layout(emulator: Emulator) -> None:
    """check-config prints the effective SIDECAR_LAYOUT."""
    env = base_environment(
        {
            **client_environment(emulator.endpoint),
            "SIDECAR_SECRET_ID": "test/layout",
            "SIDECAR_REQUIRE_TOKEN": "false",
            "SIDECAR_LAYOUT": "Stages",
        }
    )

    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines() if "  " in line)

    assert result.returncode == 0, result.stderr
    assert rows["SIDECAR_LAYOUT"].strip() == "stages"
