"""``sidecar keygen`` and ``sidecar rotate`` against the emulator, run as real processes."""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sidecar import cli
from sidecar.secret import is_valid_key
from tests.barrier_proxy import BarrierProxy
from tests.conftest import CURRENT_KEY, PREVIOUS_KEY, pair_string
from tests.helpers import SidecarProcess, run_command
from tools.emulator import Emulator

NEW_KEY = "key-new-from-stdin-DDDDDDDDDDDDDDDDDDDD"
OTHER_KEY = "key-other-from-stdin-EEEEEEEEEEEEEEEEEE"


def rotate_with_key(endpoint: str, secret_id: str, key: str) -> subprocess.CompletedProcess[str]:
    """Run ``sidecar rotate --new-key-stdin --json`` with ``key`` on stdin."""
    arguments = ("rotate", "--secret-id", secret_id, "--new-key-stdin", "--json")
    return run_command(endpoint, *arguments, stdin=key + "\n")


def stages(secrets_client: Any, secret_id: str) -> dict[str, list[str]]:
    """Return VersionIdsToStages of the secret."""
    versions: dict[str, list[str]] = secrets_client.describe_secret(SecretId=secret_id)[
        "VersionIdsToStages"
    ]
    return versions


def read_pair(secrets_client: Any, secret_id: str, stage: str = "AWSCURRENT") -> dict[str, Any]:
    """Return the version id and the decoded pair of ``stage``."""
    reply = secrets_client.get_secret_value(SecretId=secret_id, VersionStage=stage)
    document: dict[str, Any] = json.loads(reply["SecretString"])
    document["VersionId"] = reply["VersionId"]
    return document


def version_holding(secrets_client: Any, secret_id: str, stage: str) -> str | None:
    """Return the id of the version that has the label ``stage``, or None."""
    for version_id, labels in stages(secrets_client, secret_id).items():
        if stage in labels:
            return version_id
    return None


def assert_no_key(result: subprocess.CompletedProcess[str], *keys: str) -> None:
    """Fail if any of ``keys`` appears in the output of ``result``."""
    for key in keys:
        assert key not in result.stdout
        assert key not in result.stderr


def test_keygen_prints_only_keys(emulator: Emulator) -> None:
    """Keygen --count 5 prints five distinct valid URL-safe keys of 256 bits and nothing else."""
    result = run_command(emulator.endpoint, "keygen", "--count", "5")
    lines = result.stdout.splitlines()

    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.endswith("\n")
    assert len(lines) == 5
    assert len(set(lines)) == 5
    for key in lines:
        assert is_valid_key(key)
        # 43 base64url characters carry 258 bits, of which 256 are random.
        assert len(key) == 43
        assert set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_keygen_default_prints_one_key(emulator: Emulator) -> None:
    """Keygen with no option prints exactly one key line."""
    result = run_command(emulator.endpoint, "keygen")

    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 1


@pytest.mark.parametrize("count", ["0", "1001", "many"])
def test_keygen_rejects_bad_count(emulator: Emulator, count: str) -> None:
    """An out-of-range or non-numeric --count is a usage error with status 2."""
    result = run_command(emulator.endpoint, "keygen", "--count", count)

    assert result.returncode == 2
    assert result.stdout == ""
    assert "--count" in result.stderr


def test_rotate_has_no_key_argument() -> None:
    """No option of rotate takes a value that could be a key; the key comes from stdin."""
    # argparse has no public API that lists the options of a parser.
    parser = cli.build_parser()
    subcommands = next(
        action
        for action in parser._actions  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction)  # noqa: SLF001
    )
    rotate = subcommands.choices["rotate"]
    taking_values = {
        option
        for action in rotate._actions  # noqa: SLF001
        if action.nargs != 0
        for option in action.option_strings
    }

    assert taking_values == {"--secret-id", "--client-request-token"}


def test_rotate_moves_current_to_previous(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """Rotate writes a new current key, keeps the old current as previous and moves AWSCURRENT."""
    secret_id = make_secret()
    original_version = version_holding(secrets_client, secret_id, "AWSCURRENT")
    before = datetime.now(UTC)

    result = run_command(emulator.endpoint, "rotate", "--secret-id", secret_id, "--json")
    output = json.loads(result.stdout)
    pair = read_pair(secrets_client, secret_id)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert output["outcome"] == "rotated"
    assert output["version_id"] == pair["VersionId"]
    assert is_valid_key(pair["API_KEY_CURRENT"])
    assert pair["API_KEY_CURRENT"] not in {CURRENT_KEY, PREVIOUS_KEY}
    assert pair["API_KEY_PREVIOUS"] == CURRENT_KEY
    assert version_holding(secrets_client, secret_id, "AWSPREVIOUS") == original_version
    assert version_holding(secrets_client, secret_id, "AWSPENDING") is None
    safe_after = datetime.fromisoformat(output["safe_after"])
    # Defaults: 60 x 1.1 s of waiting plus 2 x (3 + 5) s of request time.
    assert safe_after >= before.replace(microsecond=0) + timedelta(seconds=82)
    assert_no_key(result, pair["API_KEY_CURRENT"], CURRENT_KEY, PREVIOUS_KEY)


def test_rotate_safe_after_follows_poll_settings(
    emulator: Emulator, make_secret: Callable[..., str]
) -> None:
    """safe_after is now + POLL_INTERVAL x (1 + JITTER) + 2 x requests x (CONNECT + READ)."""
    secret_id = make_secret()
    settings = {
        "SIDECAR_POLL_INTERVAL": "100",
        "SIDECAR_POLL_JITTER": "0.5",
        "SIDECAR_CONNECT_TIMEOUT": "1",
        "SIDECAR_READ_TIMEOUT": "4",
        "SIDECAR_LAYOUT": "stages",
    }
    before = datetime.now(UTC).replace(microsecond=0)

    result = run_command(
        emulator.endpoint, "rotate", "--secret-id", secret_id, "--json", settings=settings
    )
    after = datetime.now(UTC)
    safe_after = datetime.fromisoformat(json.loads(result.stdout)["safe_after"])

    assert result.returncode == 0, result.stderr
    # 150 s of waiting plus 2 polls x 2 requests x 5 s.
    assert safe_after >= before + timedelta(seconds=170)
    assert safe_after <= after + timedelta(seconds=171)


def test_rotate_reads_new_key_from_stdin(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """--new-key-stdin writes the key read from stdin as the new current key."""
    secret_id = make_secret()

    result = run_command(
        emulator.endpoint,
        "rotate",
        "--secret-id",
        secret_id,
        "--new-key-stdin",
        stdin=NEW_KEY + "\n",
    )
    pair = read_pair(secrets_client, secret_id)

    assert result.returncode == 0, result.stderr
    assert pair["API_KEY_CURRENT"] == NEW_KEY
    assert pair["API_KEY_PREVIOUS"] == CURRENT_KEY
    assert "hand the new key to clients after" in result.stdout
    assert_no_key(result, NEW_KEY, CURRENT_KEY, PREVIOUS_KEY)


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("this key has spaces 12345\n", "the new key is invalid"),
        ("", "expected exactly one key"),
        ("first-key-1234567890\nsecond-key-1234567890\n", "expected exactly one key"),
        (CURRENT_KEY + "\n", "already in the secret"),
        (PREVIOUS_KEY + "\n", "already in the secret"),
    ],
)
def test_rotate_rejects_bad_new_key(
    emulator: Emulator,
    make_secret: Callable[..., str],
    secrets_client: Any,
    stdin: str,
    message: str,
) -> None:
    """An invalid, missing or reused key from stdin exits 2 and writes nothing."""
    secret_id = make_secret()
    versions_before = stages(secrets_client, secret_id)

    result = run_command(
        emulator.endpoint, "rotate", "--secret-id", secret_id, "--new-key-stdin", stdin=stdin
    )

    assert result.returncode == 2
    assert message in result.stderr
    assert stages(secrets_client, secret_id) == versions_before
    assert_no_key(result, *stdin.splitlines(), CURRENT_KEY, PREVIOUS_KEY)


def test_rotate_rejects_invalid_secret(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """A current secret that the sidecar would reject is not rotated; the field is named."""
    secret_id = make_secret(json.dumps({"API_KEY_CURRENT": "", "API_KEY_PREVIOUS": PREVIOUS_KEY}))
    versions_before = stages(secrets_client, secret_id)

    result = run_command(emulator.endpoint, "rotate", "--secret-id", secret_id)

    assert result.returncode == 2
    assert "'API_KEY_CURRENT'" in result.stderr
    assert "not a valid key pair" in result.stderr
    assert stages(secrets_client, secret_id) == versions_before
    assert_no_key(result, PREVIOUS_KEY)


def test_rotate_honours_field_settings(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """SIDECAR_CURRENT_FIELD and SIDECAR_PREVIOUS_FIELD name the fields read and written."""
    secret_id = make_secret(json.dumps({"now": CURRENT_KEY, "before": None}))
    settings = {"SIDECAR_CURRENT_FIELD": "now", "SIDECAR_PREVIOUS_FIELD": "before"}

    result = run_command(
        emulator.endpoint,
        "rotate",
        "--secret-id",
        secret_id,
        "--new-key-stdin",
        stdin=NEW_KEY,
        settings=settings,
    )
    pair = read_pair(secrets_client, secret_id)

    assert result.returncode == 0, result.stderr
    assert pair["now"] == NEW_KEY
    assert pair["before"] == CURRENT_KEY
    assert "API_KEY_CURRENT" not in pair


def test_rotate_dry_run_writes_nothing(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """--dry-run validates the secret and the key, exits 0 and leaves every version as it was."""
    secret_id = make_secret()
    versions_before = stages(secrets_client, secret_id)

    result = run_command(
        emulator.endpoint,
        "rotate",
        "--secret-id",
        secret_id,
        "--dry-run",
        "--json",
        "--new-key-stdin",
        stdin=NEW_KEY,
    )
    output = json.loads(result.stdout)

    assert result.returncode == 0, result.stderr
    assert output == {"version_id": None, "safe_after": None, "outcome": "dry_run"}
    assert stages(secrets_client, secret_id) == versions_before


def test_rotate_retry_with_same_token_is_idempotent(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """A second run with the same client request token creates no second version."""
    secret_id = make_secret()
    token = uuid.uuid4().hex
    command = ("rotate", "--secret-id", secret_id, "--json", "--client-request-token", token)

    first = run_command(emulator.endpoint, *command)
    pair_after_first = read_pair(secrets_client, secret_id)
    second = run_command(emulator.endpoint, *command)
    pair_after_second = read_pair(secrets_client, secret_id)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert json.loads(first.stdout)["outcome"] == "rotated"
    assert json.loads(second.stdout)["outcome"] == "already_current"
    assert json.loads(second.stdout)["version_id"] == token
    assert pair_after_second == pair_after_first
    assert pair_after_second["VersionId"] == token
    assert pair_after_second["API_KEY_PREVIOUS"] == CURRENT_KEY
    assert len(stages(secrets_client, secret_id)) == 2


def test_rotate_same_token_other_key_rejected(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """Reusing a token with a different key from stdin exits 2 and changes nothing."""
    secret_id = make_secret()
    token = uuid.uuid4().hex
    command = ["rotate", "--secret-id", secret_id, "--new-key-stdin"]
    command += ["--client-request-token", token]

    first = run_command(emulator.endpoint, *command, stdin=NEW_KEY)
    second = run_command(emulator.endpoint, *command, stdin=OTHER_KEY)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 2
    assert "already exists with a different key" in second.stderr
    assert read_pair(secrets_client, secret_id)["API_KEY_CURRENT"] == NEW_KEY
    assert_no_key(second, NEW_KEY, OTHER_KEY)


def test_rotate_finishes_interrupted_rotation(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """A run that stopped after writing AWSPENDING blocks new rotations and can be finished."""
    secret_id = make_secret()
    token = uuid.uuid4().hex
    # What an interrupted run leaves behind: the rotated pair as AWSPENDING.
    secrets_client.put_secret_value(
        SecretId=secret_id,
        ClientRequestToken=token,
        SecretString=pair_string(NEW_KEY, CURRENT_KEY),
        VersionStages=["AWSPENDING"],
    )

    blocked = run_command(emulator.endpoint, "rotate", "--secret-id", secret_id)
    finished = run_command(
        emulator.endpoint,
        "rotate",
        "--secret-id",
        secret_id,
        "--json",
        "--client-request-token",
        token,
    )
    pair = read_pair(secrets_client, secret_id)

    assert blocked.returncode == 3
    assert "a rotation is in progress" in blocked.stderr
    assert f"--client-request-token {token}" in blocked.stderr
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["outcome"] == "resumed"
    assert pair["VersionId"] == token
    assert pair["API_KEY_CURRENT"] == NEW_KEY
    assert pair["API_KEY_PREVIOUS"] == CURRENT_KEY
    assert version_holding(secrets_client, secret_id, "AWSPENDING") is None


def test_rotate_ignores_stale_pending_version(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """An AWSPENDING version built from an older key cannot finish, so rotate takes its label."""
    secret_id = make_secret()
    stale = uuid.uuid4().hex
    secrets_client.put_secret_value(
        SecretId=secret_id,
        ClientRequestToken=stale,
        SecretString=pair_string(OTHER_KEY, PREVIOUS_KEY),
        VersionStages=["AWSPENDING"],
    )

    result = run_command(
        emulator.endpoint, "rotate", "--secret-id", secret_id, "--new-key-stdin", stdin=NEW_KEY
    )
    resumed = run_command(
        emulator.endpoint, "rotate", "--secret-id", secret_id, "--client-request-token", stale
    )
    pair = read_pair(secrets_client, secret_id)

    assert result.returncode == 0, result.stderr
    assert pair["API_KEY_CURRENT"] == NEW_KEY
    assert pair["API_KEY_PREVIOUS"] == CURRENT_KEY
    assert resumed.returncode == 3
    assert "no longer current" in resumed.stderr
    assert read_pair(secrets_client, secret_id) == pair


def test_concurrent_rotations_one_wins(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """Of two rotations that both read the same AWSCURRENT, one wins and the other exits 3."""
    secret_id = make_secret()
    original_version = version_holding(secrets_client, secret_id, "AWSCURRENT")
    keys = (NEW_KEY, OTHER_KEY)
    # Both processes must have read AWSCURRENT and reached PutSecretValue before
    # either write goes through, so both stage moves compete.
    with BarrierProxy(emulator.port, "PutSecretValue", parties=2, timeout=30) as proxy:
        with ThreadPoolExecutor(max_workers=2) as pool:
            runs = list(pool.map(lambda key: rotate_with_key(proxy.endpoint, secret_id, key), keys))
        requests_held = proxy.requests_held
    statuses = [run.returncode for run in runs]
    outputs = [(run.stdout, run.stderr) for run in runs]
    pair = read_pair(secrets_client, secret_id)

    assert requests_held == 2
    assert sorted(statuses) == [0, 3]
    winner = statuses.index(0)
    loser = 1 - winner
    assert pair["API_KEY_CURRENT"] == keys[winner]
    assert pair["API_KEY_PREVIOUS"] == CURRENT_KEY
    assert pair["VersionId"] == json.loads(outputs[winner][0])["version_id"]
    assert version_holding(secrets_client, secret_id, "AWSPREVIOUS") == original_version
    assert version_holding(secrets_client, secret_id, "AWSPENDING") is None
    loser_stderr = outputs[loser][1]
    assert "another rotation moved AWSCURRENT" in loser_stderr
    assert "no key was lost" in loser_stderr
    assert outputs[loser][0] == ""
    for stdout, stderr in outputs:
        for key in (*keys, CURRENT_KEY, PREVIOUS_KEY):
            assert key not in stdout
            assert key not in stderr


def test_rotate_again_within_safe_delay_rejected(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """A second rotation before the first one's safe delay exits 3 and keeps the original key."""
    secret_id = make_secret()
    first = rotate_with_key(emulator.endpoint, secret_id, NEW_KEY)
    first_version = json.loads(first.stdout)["version_id"]

    before_second = datetime.now(UTC)
    second = rotate_with_key(emulator.endpoint, secret_id, OTHER_KEY)
    after_second = datetime.now(UTC)
    pair = read_pair(secrets_client, secret_id)
    retry_match = re.search(r"Rotate again after (\S+),", second.stderr)
    assert retry_match is not None, second.stderr
    retry_at = datetime.fromisoformat(retry_match.group(1))

    assert first.returncode == 0, first.stderr
    assert second.returncode == 3
    assert second.stdout == ""
    assert f"the AWSCURRENT version {first_version} was written" in second.stderr
    assert "less than the 82 s that sidecars may take to serve it" in second.stderr
    # 82 s after the first version was written, which was a few seconds ago.
    assert retry_at >= before_second + timedelta(seconds=72)
    assert retry_at <= after_second + timedelta(seconds=84)
    assert "or pass --force" in second.stderr
    assert "--client-request-token" not in second.stderr
    assert pair["VersionId"] == first_version
    assert pair["API_KEY_CURRENT"] == NEW_KEY
    assert pair["API_KEY_PREVIOUS"] == CURRENT_KEY
    assert version_holding(secrets_client, secret_id, "AWSPENDING") is None
    assert_no_key(second, NEW_KEY, OTHER_KEY, CURRENT_KEY)


def test_rotate_force_within_safe_delay(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """--force rotates before the safe delay has passed, dropping the original key."""
    secret_id = make_secret()
    first = rotate_with_key(emulator.endpoint, secret_id, NEW_KEY)

    forced = run_command(
        emulator.endpoint,
        *("rotate", "--secret-id", secret_id, "--new-key-stdin", "--json", "--force"),
        stdin=OTHER_KEY,
    )
    pair = read_pair(secrets_client, secret_id)

    assert first.returncode == 0, first.stderr
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["outcome"] == "rotated"
    assert pair["API_KEY_CURRENT"] == OTHER_KEY
    assert pair["API_KEY_PREVIOUS"] == NEW_KEY


def test_rotate_again_after_printed_time(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """Once the time in the rejection has passed, the same rotation succeeds without --force."""
    secret_id = make_secret()
    # 1 s of waiting plus 2 x (1 + 2) s of request time: a safe delay of 7 s.
    settings = {
        "SIDECAR_POLL_INTERVAL": "1",
        "SIDECAR_POLL_JITTER": "0",
        "SIDECAR_CONNECT_TIMEOUT": "1",
        "SIDECAR_READ_TIMEOUT": "2",
    }
    command = ("rotate", "--secret-id", secret_id, "--json")
    first = run_command(emulator.endpoint, *command, settings=settings)
    rejected = run_command(emulator.endpoint, *command, settings=settings)
    retry_match = re.search(r"Rotate again after (\S+),", rejected.stderr)
    assert retry_match is not None, rejected.stderr
    retry_at = datetime.fromisoformat(retry_match.group(1))
    # The emulator's CreatedDate and Date header have whole seconds; one more
    # second covers their rounding.
    time.sleep(max((retry_at - datetime.now(UTC)).total_seconds() + 1, 0))

    accepted = run_command(emulator.endpoint, *command, settings=settings)
    pair = read_pair(secrets_client, secret_id)

    assert first.returncode == 0, first.stderr
    assert rejected.returncode == 3
    assert "less than the 7 s" in rejected.stderr
    assert retry_at <= datetime.now(UTC) + timedelta(seconds=9)
    assert accepted.returncode == 0, accepted.stderr
    assert pair["VersionId"] == json.loads(accepted.stdout)["version_id"]
    assert pair["API_KEY_PREVIOUS"] != CURRENT_KEY


def test_parallel_rotations_rotate_once(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """Of four rotations started together, one rotates and the original key stays in the pair."""
    secret_id = make_secret()
    original_version = version_holding(secrets_client, secret_id, "AWSCURRENT")

    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(
            pool.map(
                lambda _: run_command(emulator.endpoint, "rotate", "--secret-id", secret_id),
                range(4),
            )
        )
    statuses = sorted(run.returncode for run in runs)
    pair = read_pair(secrets_client, secret_id)

    assert statuses == [0, 3, 3, 3], [run.stderr for run in runs]
    assert pair["API_KEY_PREVIOUS"] == CURRENT_KEY
    assert version_holding(secrets_client, secret_id, "AWSPREVIOUS") == original_version
    assert version_holding(secrets_client, secret_id, "AWSPENDING") is None


def test_rotation_served_after_safe_after(
    emulator: Emulator,
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
) -> None:
    """A running sidecar serves the rotated pair once the safe_after time has passed."""
    secret_id = make_secret()
    sidecar = start_sidecar(secret_id, poll_interval=1, poll_jitter=0.2)
    assert sidecar.keys()["current"] == CURRENT_KEY
    # The same timing settings as the running sidecar (see the start_sidecar fixture).
    settings = {
        "SIDECAR_POLL_INTERVAL": "1",
        "SIDECAR_POLL_JITTER": "0.2",
        "SIDECAR_CONNECT_TIMEOUT": "1",
        "SIDECAR_READ_TIMEOUT": "2",
    }

    result = run_command(
        emulator.endpoint,
        "rotate",
        "--secret-id",
        secret_id,
        "--json",
        "--new-key-stdin",
        stdin=NEW_KEY,
        settings=settings,
    )
    output = json.loads(result.stdout)
    wait = (datetime.fromisoformat(output["safe_after"]) - datetime.now(UTC)).total_seconds()
    time.sleep(max(wait, 0))
    served = sidecar.keys()

    assert result.returncode == 0, result.stderr
    assert served["version_id"] == output["version_id"]
    assert served["current"] == NEW_KEY
    assert served["previous"] == CURRENT_KEY
    assert NEW_KEY not in sidecar.log_text()


def test_rotate_rejects_invalid_settings(
    emulator: Emulator, make_secret: Callable[..., str]
) -> None:
    """An invalid SIDECAR_* setting that rotate reads exits 2 and names the variable."""
    secret_id = make_secret()

    result = run_command(
        emulator.endpoint,
        "rotate",
        "--secret-id",
        secret_id,
        settings={"SIDECAR_POLL_INTERVAL": "0", "SIDECAR_LAYOUT": "rows"},
    )

    assert result.returncode == 2
    assert "SIDECAR_POLL_INTERVAL: invalid value '0'" in result.stderr
    assert "SIDECAR_LAYOUT: invalid value 'rows'" in result.stderr


def test_rotate_rejects_invalid_token(emulator: Emulator, make_secret: Callable[..., str]) -> None:
    """A client request token that Secrets Manager would reject is a usage error."""
    result = run_command(
        emulator.endpoint,
        "rotate",
        "--secret-id",
        make_secret(),
        "--client-request-token",
        "too-short",
    )

    assert result.returncode == 2
    assert "--client-request-token: invalid value 'too-short'" in result.stderr


def test_rotate_missing_secret_fails(emulator: Emulator) -> None:
    """A secret that does not exist exits 1 with the AWS error code and no retry token."""
    result = run_command(emulator.endpoint, "rotate", "--secret-id", "test/does-not-exist")

    assert result.returncode == 1
    assert "GetSecretValue failed: ResourceNotFoundException" in result.stderr
    assert "--client-request-token" not in result.stderr


def test_rotate_no_retry_token_before_write(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """Failures before any write print no retry token, because a plain rerun is a retry."""
    deleted = make_secret()
    secrets_client.delete_secret(SecretId=deleted, RecoveryWindowInDays=7)
    marked = run_command(emulator.endpoint, "rotate", "--secret-id", deleted)
    with socket.socket() as probe:
        # Bound but not listening: connections to this port are refused.
        probe.bind(("127.0.0.1", 0))
        closed_endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
        unreachable = run_command(closed_endpoint, "rotate", "--secret-id", make_secret())

    assert marked.returncode == 1
    assert "GetSecretValue failed: InvalidRequestException" in marked.stderr
    assert "--client-request-token" not in marked.stderr
    assert unreachable.returncode == 1
    assert "GetSecretValue failed" in unreachable.stderr
    assert "--client-request-token" not in unreachable.stderr


def test_rotate_retry_token_after_write(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """A failure after PutSecretValue prints a token, and a rerun with it finishes the rotation."""
    secret_id = make_secret()
    with BarrierProxy(emulator.port, deny="UpdateSecretVersionStage") as proxy:
        failed = rotate_with_key(proxy.endpoint, secret_id, NEW_KEY)
    token_match = re.search(r"--client-request-token (\S+)", failed.stderr)
    assert token_match is not None, failed.stderr
    token = token_match.group(1)
    pending = version_holding(secrets_client, secret_id, "AWSPENDING")

    retried = run_command(
        emulator.endpoint,
        "rotate",
        "--secret-id",
        secret_id,
        "--json",
        "--client-request-token",
        token,
    )
    pair = read_pair(secrets_client, secret_id)

    assert failed.returncode == 1
    assert "UpdateSecretVersionStage failed: AccessDeniedException" in failed.stderr
    assert pending == token
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["outcome"] == "resumed"
    assert pair["VersionId"] == token
    assert pair["API_KEY_CURRENT"] == NEW_KEY
    assert pair["API_KEY_PREVIOUS"] == CURRENT_KEY
    assert_no_key(failed, NEW_KEY, CURRENT_KEY, PREVIOUS_KEY)
