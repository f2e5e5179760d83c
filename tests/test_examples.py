"""The curl and Node.js examples, each run against a live sidecar."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.app_helpers import metric_value, post
from tests.conftest import CURRENT_KEY, PREVIOUS_KEY, pair_string, put_secret
from tests.helpers import SidecarProcess, wait_until

ROOT = Path(__file__).resolve().parent.parent
CURL_EXAMPLE = ROOT / "examples" / "curl" / "sidecar.sh"
NODE_EXAMPLE = ROOT / "examples" / "node"
TSC = NODE_EXAMPLE / "node_modules" / ".bin" / "tsc"
NEW_KEY = "key-example-IIIIIIIIIIIIIIIIIIIIIIIII"
NO_TIMED_POLLS = 3600


@pytest.fixture(scope="module")
def node_example(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Compile examples/node/verify.ts and return the command that runs it."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed, so the Node.js example cannot run")
    if not TSC.exists():
        pytest.skip(
            "TypeScript is not installed in examples/node; `make examples-deps` installs it "
            "with npm ci"
        )
    out = tmp_path_factory.mktemp("node-example")
    subprocess.run(
        [str(TSC), "--project", str(NODE_EXAMPLE), "--outDir", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # The compiled file is an ES module; Node.js needs this marker to load it as one.
    (out / "package.json").write_text('{"type": "module"}\n')
    return ["node", str(out / "verify.js")]


@pytest.fixture(scope="module")
def curl_example() -> list[str]:
    """Return the command that runs examples/curl/sidecar.sh."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed; tools/install-system-deps.sh installs it")
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed, so the curl example cannot run")
    return ["bash", str(CURL_EXAMPLE)]


@pytest.fixture(params=["curl", "node"])
def example(request: pytest.FixtureRequest) -> list[str]:
    """Each example's command, so that every test runs against both."""
    command: list[str] = request.getfixturevalue(f"{request.param}_example")
    return command


@pytest.fixture
def token_sidecar(
    tmp_path: Path,
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
) -> tuple[SidecarProcess, dict[str, str]]:
    """A sidecar that creates its token file, and the environment that points an example at it."""
    token_file = tmp_path / "token"
    secret_id = make_secret()
    sidecar = start_sidecar(
        secret_id,
        token=None,
        token_file=token_file,
        poll_interval=NO_TIMED_POLLS,
        metrics_port=-1,
    )
    sidecar.token = token_file.read_text().strip()
    environment = {
        **os.environ,
        "SIDECAR_URL": sidecar.url(""),
        "SIDECAR_TOKEN_FILE": str(token_file),
        "SECRET_ID": secret_id,
    }
    return sidecar, environment


def run(
    command: list[str], environment: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run an example to completion and return the finished process, whatever its status."""
    return subprocess.run(
        command,
        check=False,
        input=stdin,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_example_fetches_keys(
    example: list[str], token_sidecar: tuple[SidecarProcess, dict[str, str]]
) -> None:
    """`keys` prints the same pair that GET /v1/keys serves."""
    sidecar, environment = token_sidecar

    finished = run([*example, "keys"], environment)

    assert finished.returncode == 0, finished.stderr
    document = json.loads(finished.stdout)
    assert document["current"] == CURRENT_KEY
    assert document["previous"] == PREVIOUS_KEY
    assert document["version_id"] == sidecar.keys()["version_id"]


@pytest.mark.parametrize(
    ("key", "status", "matched"),
    [
        (CURRENT_KEY, 0, "current"),
        (PREVIOUS_KEY, 0, "previous"),
        ("wrong-key", 1, None),
        ('a"quote\\and-backslash', 1, None),
    ],
)
def test_example_verifies_key(
    example: list[str],
    token_sidecar: tuple[SidecarProcess, dict[str, str]],
    key: str,
    status: int,
    matched: str | None,
) -> None:
    """`verify` reads the key on standard input and reports which key it matched."""
    _, environment = token_sidecar

    finished = run([*example, "verify"], environment, stdin=key + "\n")

    assert finished.returncode == status, finished.stderr
    assert json.loads(finished.stdout) == {"valid": matched is not None, "matched": matched}


def test_example_watch_sees_rotation(
    example: list[str],
    token_sidecar: tuple[SidecarProcess, dict[str, str]],
    secrets_client: Any,
) -> None:
    """`watch 1` prints the served version, then the rotated one, and exits."""
    sidecar, environment = token_sidecar
    old_version = sidecar.keys()["version_id"]
    watcher = subprocess.Popen(
        [*example, "watch", "1"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        first = watcher.stdout.readline()
        # The second request is the long poll, so wait until the sidecar is waiting on it.
        wait_until(lambda: metric_value(sidecar, "sidecar_watchers") == 1, 15)
        new_version = put_secret(
            secrets_client, environment["SECRET_ID"], pair_string(NEW_KEY, CURRENT_KEY)
        )
        refreshed = post(sidecar, "/v1/refresh")
        rest, errors = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
        watcher.wait()

    assert refreshed.status == 200
    assert watcher.returncode == 0, errors
    assert json.loads(first) == {"version_id": old_version}
    assert json.loads(rest) == {"version_id": new_version}
