"""SIDECAR_OUTPUT_FILE: the pair written atomically on every change, write failures retried."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.errors import SettingsError
from sidecar.settings import load_settings
from tests.conftest import CURRENT_KEY, PREVIOUS_KEY, pair_string, put_secret
from tests.helpers import SidecarProcess, wait_until

NEW_KEY = "key-file-GGGGGGGGGGGGGGGGGGGGGGGGGGGG"


def read_json(path: Path) -> Any:
    """Return the decoded file, or None while it does not exist."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None


def test_output_file_follows_rotation(
    tmp_path: Path,
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """The file contains the /v1/keys document, with mode 0640, and changes with a rotation."""
    output = tmp_path / "shared" / "keys.json"
    output.parent.mkdir()
    secret_id = make_secret()
    sidecar = start_sidecar(secret_id, output_file=output)
    wait_until(output.exists, 10)
    first = read_json(output)
    served = sidecar.keys()

    new_version = put_secret(secrets_client, secret_id, pair_string(NEW_KEY, CURRENT_KEY))
    wait_until(lambda: (read_json(output) or {}).get("version_id") == new_version, 10)
    second = read_json(output)

    assert first == served
    assert first["current"] == CURRENT_KEY
    assert first["previous"] == PREVIOUS_KEY
    assert stat.S_IMODE(output.stat().st_mode) == 0o640
    assert second["current"] == NEW_KEY
    assert second["previous"] == CURRENT_KEY
    assert second == sidecar.keys()
    assert sorted(path.name for path in output.parent.iterdir()) == ["keys.json"]
    written = [event["version_id"] for event in sidecar.events_named("output_file.written")]
    assert written == [first["version_id"], new_version]


def test_output_write_failure_is_retried(
    tmp_path: Path,
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
) -> None:
    """A failed write is logged without key material, serving goes on, and the next poll retries."""
    output = tmp_path / "not-yet" / "keys.json"
    sidecar = start_sidecar(make_secret(), output_file=output)
    wait_until(lambda: sidecar.events_named("output_file.write_failed"), 10)

    served = sidecar.keys()
    output.parent.mkdir()
    wait_until(output.exists, 10)

    failure = sidecar.events_named("output_file.write_failed")[0]
    assert served["current"] == CURRENT_KEY
    assert failure["errno"] == "ENOENT"
    assert failure["error"] == "No such file or directory"
    assert failure["path"] == str(output)
    assert failure["level"] == "error"
    assert read_json(output) == sidecar.keys()
    assert CURRENT_KEY not in sidecar.log_text()
    assert PREVIOUS_KEY not in sidecar.log_text()


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {"SIDECAR_OUTPUT_FILE": "/run/keys/"},
            "SIDECAR_OUTPUT_FILE: invalid value '/run/keys/'; expected a file path",
        ),
        (
            {"SIDECAR_OUTPUT_FILE": "/run/token", "SIDECAR_TOKEN_FILE": "/run/token"},
            "SIDECAR_OUTPUT_FILE: '/run/token' is also SIDECAR_TOKEN_FILE",
        ),
    ],
)
def test_output_file_setting_validated(variables: dict[str, str], expected: str) -> None:
    """A directory path, or the token file's path, is rejected with the reason."""
    environ = {"SIDECAR_SECRET_ID": "demo", "SIDECAR_REQUIRE_TOKEN": "false", **variables}

    with pytest.raises(SettingsError) as caught:
        load_settings(environ)

    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(expected)
