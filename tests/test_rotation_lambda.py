"""The Secrets Manager rotation function, driven step by step against the emulator.

The tests play the part of Secrets Manager: they invoke the four steps with one
ClientRequestToken, as RotateSecret does, and check the secret after each.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore
import pytest

from sidecar import rotation_lambda
from sidecar.errors import RotationConflictError, RotationError
from sidecar.secret import is_valid_key
from tests.conftest import CURRENT_KEY, PREVIOUS_KEY, pair_string
from tests.helpers import base_environment
from tools.emulator import Emulator, client_environment

STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
OTHER_KEY = "key-other-rotation-FFFFFFFFFFFFFFFFFFFFFF"
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
# Modules that Lambda's Python runtime does not provide.
SIDECAR_ONLY_MODULES = ("aiohttp", "aiobotocore", "structlog", "tenacity", "prometheus_client")


def event(secret_id: str, token: str, step: str) -> dict[str, str]:
    """Build the event that Secrets Manager sends for one step."""
    return {"SecretId": secret_id, "ClientRequestToken": token, "Step": step}


def run(secrets_client: Any, secret_id: str, token: str, step: str) -> None:
    """Run one step with the default field names."""
    rotation_lambda.run_step(secrets_client, event(secret_id, token, step), {})


def stages(secrets_client: Any, secret_id: str) -> dict[str, list[str]]:
    """Return VersionIdsToStages of the secret."""
    versions: dict[str, list[str]] = secrets_client.describe_secret(SecretId=secret_id)[
        "VersionIdsToStages"
    ]
    return versions


def read(secrets_client: Any, secret_id: str, **selector: str) -> dict[str, Any]:
    """Return the decoded pair and the VersionId of one version."""
    reply = secrets_client.get_secret_value(SecretId=secret_id, **selector)
    document: dict[str, Any] = json.loads(reply["SecretString"])
    document["VersionId"] = reply["VersionId"]
    return document


def holder(secrets_client: Any, secret_id: str, stage: str) -> str | None:
    """Return the id of the version that has the label ``stage``, or None."""
    for version_id, labels in stages(secrets_client, secret_id).items():
        if stage in labels:
            return version_id
    return None


def test_four_steps_rotate_pair(make_secret: Callable[..., str], secrets_client: Any) -> None:
    """createSecret, setSecret, testSecret and finishSecret make the new pair AWSCURRENT."""
    secret_id = make_secret()
    original = holder(secrets_client, secret_id, "AWSCURRENT")
    token = str(uuid.uuid4())

    run(secrets_client, secret_id, token, "createSecret")
    pending = read(secrets_client, secret_id, VersionStage="AWSPENDING")
    current_while_pending = holder(secrets_client, secret_id, "AWSCURRENT")
    for step in STEPS[1:]:
        run(secrets_client, secret_id, token, step)
    current = read(secrets_client, secret_id, VersionStage="AWSCURRENT")

    assert pending["VersionId"] == token
    assert current_while_pending == original
    assert current["VersionId"] == token
    assert is_valid_key(current["API_KEY_CURRENT"])
    assert current["API_KEY_CURRENT"] not in {CURRENT_KEY, PREVIOUS_KEY}
    assert current["API_KEY_PREVIOUS"] == CURRENT_KEY
    assert holder(secrets_client, secret_id, "AWSPREVIOUS") == original


def test_create_secret_is_idempotent(make_secret: Callable[..., str], secrets_client: Any) -> None:
    """A retried createSecret keeps the key it generated and creates no second version."""
    secret_id = make_secret()
    token = str(uuid.uuid4())

    run(secrets_client, secret_id, token, "createSecret")
    first = read(secrets_client, secret_id, VersionId=token)
    run(secrets_client, secret_id, token, "createSecret")
    second = read(secrets_client, secret_id, VersionId=token)

    assert second == first
    assert len(stages(secrets_client, secret_id)) == 2


def test_rotation_recovers_from_half_done_run(
    make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """A rotation that stopped after createSecret finishes when Secrets Manager retries it."""
    secret_id = make_secret()
    token = str(uuid.uuid4())
    run(secrets_client, secret_id, token, "createSecret")
    run(secrets_client, secret_id, token, "setSecret")
    pending = read(secrets_client, secret_id, VersionId=token)

    # Secrets Manager retries the whole rotation with the same token.
    for step in STEPS:
        run(secrets_client, secret_id, token, step)
    current = read(secrets_client, secret_id, VersionStage="AWSCURRENT")

    assert current == pending
    assert current["API_KEY_PREVIOUS"] == CURRENT_KEY
    assert len(stages(secrets_client, secret_id)) == 2


def test_new_rotation_replaces_abandoned_pending_version(
    make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """A new rotation takes AWSPENDING from a version that an abandoned run left behind."""
    secret_id = make_secret()
    abandoned = uuid.uuid4().hex
    secrets_client.put_secret_value(
        SecretId=secret_id,
        ClientRequestToken=abandoned,
        SecretString=pair_string(OTHER_KEY, CURRENT_KEY),
        VersionStages=["AWSPENDING"],
    )
    token = str(uuid.uuid4())

    for step in STEPS:
        run(secrets_client, secret_id, token, step)
    current = read(secrets_client, secret_id, VersionStage="AWSCURRENT")

    assert current["VersionId"] == token
    assert current["API_KEY_PREVIOUS"] == CURRENT_KEY
    assert current["API_KEY_CURRENT"] != OTHER_KEY
    assert stages(secrets_client, secret_id)[abandoned] == []


def test_finish_after_concurrent_rotation_conflicts(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """FinishSecret refuses to move AWSCURRENT when another rotation finished in between."""
    secret_id = make_secret()
    token = str(uuid.uuid4())
    run(secrets_client, secret_id, token, "createSecret")
    # An operator rotates with the command while the native rotation is half done;
    # the command finds the live pending version and stops first.
    blocked = subprocess.run(
        [sys.executable, "-m", "sidecar", "rotate", "--secret-id", secret_id],
        env=base_environment(client_environment(emulator.endpoint)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # A rotation that ignores AWSPENDING (for example a hand-written one) wins.
    winner = uuid.uuid4().hex
    secrets_client.put_secret_value(
        SecretId=secret_id,
        ClientRequestToken=winner,
        SecretString=pair_string(OTHER_KEY, CURRENT_KEY),
        VersionStages=["AWSCURRENT"],
    )

    with pytest.raises(RotationConflictError, match="no longer current"):
        run(secrets_client, secret_id, token, "testSecret")
    with pytest.raises(RotationConflictError, match="no longer current"):
        run(secrets_client, secret_id, token, "finishSecret")
    current = read(secrets_client, secret_id, VersionStage="AWSCURRENT")

    assert blocked.returncode == 3
    assert "a rotation is in progress" in blocked.stderr
    assert current["VersionId"] == winner
    assert current["API_KEY_CURRENT"] == OTHER_KEY


def test_create_secret_conflicts_on_stale_pending(
    make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """A retried createSecret whose pending version no longer builds on AWSCURRENT fails."""
    secret_id = make_secret()
    token = str(uuid.uuid4())
    run(secrets_client, secret_id, token, "createSecret")
    secrets_client.put_secret_value(
        SecretId=secret_id,
        ClientRequestToken=uuid.uuid4().hex,
        SecretString=pair_string(OTHER_KEY, CURRENT_KEY),
    )
    pending_before = read(secrets_client, secret_id, VersionId=token)

    with pytest.raises(RotationConflictError, match="start a new rotation"):
        run(secrets_client, secret_id, token, "createSecret")

    assert read(secrets_client, secret_id, VersionId=token) == pending_before


def test_test_secret_rejects_invalid_pending(
    make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """TestSecret fails on a pending version that the sidecar would reject; nothing moves."""
    secret_id = make_secret()
    original = holder(secrets_client, secret_id, "AWSCURRENT")
    token = uuid.uuid4().hex
    secrets_client.put_secret_value(
        SecretId=secret_id,
        ClientRequestToken=token,
        SecretString=json.dumps({"API_KEY_CURRENT": "", "API_KEY_PREVIOUS": CURRENT_KEY}),
        VersionStages=["AWSPENDING"],
    )

    with pytest.raises(RotationError, match="'API_KEY_CURRENT'"):
        run(secrets_client, secret_id, token, "testSecret")
    with pytest.raises(RotationError, match="not a valid key pair"):
        run(secrets_client, secret_id, token, "finishSecret")

    assert holder(secrets_client, secret_id, "AWSCURRENT") == original


def test_finish_secret_retry_is_noop(make_secret: Callable[..., str], secrets_client: Any) -> None:
    """FinishSecret invoked again after success changes nothing."""
    secret_id = make_secret()
    token = str(uuid.uuid4())
    for step in STEPS:
        run(secrets_client, secret_id, token, step)
    versions_after = stages(secrets_client, secret_id)

    run(secrets_client, secret_id, token, "finishSecret")

    assert stages(secrets_client, secret_id) == versions_after


def test_steps_before_create_fail(make_secret: Callable[..., str], secrets_client: Any) -> None:
    """setSecret, testSecret and finishSecret for an unknown version fail clearly."""
    secret_id = make_secret()
    token = str(uuid.uuid4())

    for step in STEPS[1:]:
        with pytest.raises(RotationError, match="createSecret must run first"):
            run(secrets_client, secret_id, token, step)


@pytest.mark.parametrize(
    ("bad_event", "message"),
    [
        ({"SecretId": "s", "ClientRequestToken": "t" * 32, "Step": "rotate"}, "invalid Step"),
        ({"SecretId": "s", "Step": "createSecret"}, "no ClientRequestToken"),
    ],
)
def test_invalid_event_rejected(
    secrets_client: Any, bad_event: dict[str, str], message: str
) -> None:
    """An event that is not a rotation event raises ValueError before any call."""
    with pytest.raises(ValueError, match=message):
        rotation_lambda.run_step(secrets_client, bad_event, {})


def test_snake_case_steps_and_custom_fields(
    make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """Step names in snake_case work, and SIDECAR_*_FIELD names the JSON fields."""
    secret_id = make_secret(json.dumps({"now": CURRENT_KEY}))
    token = str(uuid.uuid4())
    environ = {"SIDECAR_CURRENT_FIELD": "now", "SIDECAR_PREVIOUS_FIELD": "before"}

    for step in ("create_secret", "set_secret", "test_secret", "finish_secret"):
        rotation_lambda.run_step(secrets_client, event(secret_id, token, step), environ)
    current = read(secrets_client, secret_id, VersionStage="AWSCURRENT")

    assert current["VersionId"] == token
    assert current["before"] == CURRENT_KEY
    assert is_valid_key(current["now"])


def test_logs_contain_no_key(
    make_secret: Callable[..., str], secrets_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The function logs each step with ids and never a key."""
    secret_id = make_secret()
    token = str(uuid.uuid4())

    with caplog.at_level(logging.INFO, logger=rotation_lambda.__name__):
        for step in STEPS:
            run(secrets_client, secret_id, token, step)
    new_key = read(secrets_client, secret_id, VersionStage="AWSCURRENT")["API_KEY_CURRENT"]
    text = "\n".join(record.getMessage() for record in caplog.records)

    assert "rotation.finished" in text
    assert token in text
    for key in (new_key, CURRENT_KEY, PREVIOUS_KEY):
        assert key not in text


def test_handler_runs_without_sidecar_dependencies(
    emulator: Emulator, make_secret: Callable[..., str], secrets_client: Any
) -> None:
    """lambda_handler rotates with aiohttp, aiobotocore, structlog and tenacity unimportable."""
    secret_id = make_secret()
    token = str(uuid.uuid4())
    script = textwrap.dedent(
        f"""
        import importlib.abc
        import json
        import sys

        BLOCKED = {SIDECAR_ONLY_MODULES!r}

        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is not in the Lambda runtime")
                return None

        sys.meta_path.insert(0, Blocker())
        from sidecar.rotation_lambda import lambda_handler

        for step in {STEPS!r}:
            lambda_handler(
                {{"SecretId": {secret_id!r}, "ClientRequestToken": {token!r}, "Step": step}},
                None,
            )
        loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
        print(json.dumps(loaded))
        """
    )
    env = base_environment(client_environment(emulator.endpoint))

    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    current = read(secrets_client, secret_id, VersionStage="AWSCURRENT")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert current["VersionId"] == token
    assert current["API_KEY_PREVIOUS"] == CURRENT_KEY


def test_import_loads_no_sidecar_dependency() -> None:
    """Importing the handler module loads none of the sidecar's own runtime dependencies."""
    script = (
        "import json, sys; import sidecar.rotation_lambda; "
        "print(json.dumps(sorted(m for m in sys.modules "
        f"if m.split('.')[0] in {SIDECAR_ONLY_MODULES!r})))"
    )

    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_packaged_zip_rotates(
    emulator: Emulator,
    make_secret: Callable[..., str],
    secrets_client: Any,
    tmp_path: Path,
) -> None:
    """The zip built with the commands of docs/rotation.md rotates with only botocore beside it."""
    package = tmp_path / "rotation-lambda"
    archive = tmp_path / "rotation-lambda.zip"
    # The commands of docs/rotation.md, with the paths of this test.
    pip_install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    install = subprocess.run(
        [*pip_install, "--target", str(package), str(REPOSITORY_ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    zipped = subprocess.run(
        [sys.executable, "-m", "zipfile", "-c", str(archive), "sidecar"],
        cwd=package,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    secret_id = make_secret()
    token = str(uuid.uuid4())
    # -S skips site-packages, so the editable install of this checkout is not
    # found. Only the directory of botocore and its dependencies is added after
    # the zip, as in Lambda's runtime.
    site_packages = Path(botocore.__file__).parent.parent
    script = textwrap.dedent(
        f"""
        import importlib.abc
        import sys

        BLOCKED = {SIDECAR_ONLY_MODULES!r}

        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is not in the Lambda runtime")
                return None

        sys.meta_path.insert(0, Blocker())
        sys.path[:0] = [{str(archive)!r}]
        sys.path.append({str(site_packages)!r})
        import sidecar.rotation_lambda

        assert sidecar.rotation_lambda.__file__.startswith({str(archive)!r})
        for step in {STEPS!r}:
            sidecar.rotation_lambda.lambda_handler(
                {{"SecretId": {secret_id!r}, "ClientRequestToken": {token!r}, "Step": step}},
                None,
            )
        """
    )

    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        env=base_environment(client_environment(emulator.endpoint)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    current = read(secrets_client, secret_id, VersionStage="AWSCURRENT")

    assert install.returncode == 0, install.stderr
    assert zipped.returncode == 0, zipped.stderr
    assert result.returncode == 0, result.stderr
    assert current["VersionId"] == token
    assert current["API_KEY_PREVIOUS"] == CURRENT_KEY
