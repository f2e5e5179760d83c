"""The image's contract, checked without a Docker engine.

The wheel is built and installed into a fresh virtual environment with the same
commands as the Dockerfile, then its console script runs against the emulator
with the task definition's settings, a read-only view of the environment in
mind: nothing may be written outside the token directory.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecar import __version__
from sidecar.settings import PREFIX
from tests.conftest import CURRENT_KEY, PREVIOUS_KEY
from tests.deploy_files import (
    ROOT,
    SIDECAR_CONTAINER,
    TASK_DEFINITION,
    container,
    environment,
    load_json,
)
from tests.helpers import SidecarProcess, base_environment, http_request, kill_quietly, wait_until
from tools.emulator import Emulator, client_environment, free_port

# Building the wheel and resolving its dependencies from the package index (or
# the local pip cache) takes seconds when warm and longer when cold.
INSTALL_TIMEOUT = 600
# The first test of the module also pays for the install in its fixture.
pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT)
TOKEN_FILE_MODE = 0o640


@dataclass(frozen=True)
class InstalledSidecar:
    """A virtual environment with the built wheel and its dependencies installed."""

    root: Path

    @property
    def python(self) -> Path:
        """Return the environment's interpreter."""
        return self.root / "bin" / "python"

    @property
    def script(self) -> Path:
        """Return the ``sidecar`` console script, the image's ENTRYPOINT."""
        return self.root / "bin" / "sidecar"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> InstalledSidecar:
    """Build the wheel and install it into a new virtual environment, as the Dockerfile does."""
    work = tmp_path_factory.mktemp("image")
    dist = work / "dist"
    run_step([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)])
    wheels = sorted(dist.glob("sidecar-*.whl"))
    assert len(wheels) == 1, f"expected one wheel, found {wheels}"

    venv = InstalledSidecar(work / "venv")
    run_step([sys.executable, "-m", "venv", "--without-pip", str(venv.root)])
    # The Dockerfile adds --no-cache-dir; here the local pip cache keeps the test fast.
    pip = [sys.executable, "-m", "pip", "--python", str(venv.python), "install", "--quiet"]
    run_step([*pip, str(wheels[0])])
    return venv


def run_step(command: list[str]) -> None:
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
        env=isolated_environment({}),
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"


def isolated_environment(extra: dict[str, str]) -> dict[str, str]:
    """Return the environment without SIDECAR_* and PYTHONPATH, so only the wheel is imported."""
    env = base_environment(extra)
    env.pop("PYTHONPATH", None)
    return env


def image_environment(
    emulator: Emulator, secret_id: str, token_file: Path, temporary_directory: Path
) -> dict[str, str]:
    """Return the task definition's sidecar settings, pointed at the emulator and free ports."""
    settings = environment(container(load_json(TASK_DEFINITION), SIDECAR_CONTAINER))
    settings.update(
        {
            PREFIX + "SECRET_ID": secret_id,
            PREFIX + "PORT": str(free_port()),
            PREFIX + "METRICS_HOST": "127.0.0.1",
            PREFIX + "METRICS_PORT": str(free_port()),
            PREFIX + "TOKEN_FILE": str(token_file),
        }
    )
    settings.update(client_environment(emulator.endpoint))
    # The image sets these; its user has no home directory.
    settings.update({"PYTHONDONTWRITEBYTECODE": "1", "HOME": "/nonexistent"})
    # An empty TMPDIR shows whether anything writes temporary files, which a
    # read-only root filesystem would reject.
    settings["TMPDIR"] = str(temporary_directory)
    return isolated_environment(settings)


@pytest.fixture
def start_installed(
    installed: InstalledSidecar, emulator: Emulator, tmp_path: Path
) -> Iterator[Callable[[str], SidecarProcess]]:
    """Start the installed console script with the task definition's settings."""
    started: list[SidecarProcess] = []

    def start(secret_id: str) -> SidecarProcess:
        token_directory = tmp_path / f"token-volume-{len(started)}"
        token_directory.mkdir(mode=0o750)
        temporary_directory = tmp_path / f"tmp-{len(started)}"
        temporary_directory.mkdir()
        env = image_environment(emulator, secret_id, token_directory / "token", temporary_directory)
        process = SidecarProcess(
            env=env,
            port=int(env[PREFIX + "PORT"]),
            log_path=tmp_path / f"sidecar-{len(started)}.log",
            token=None,
            metrics_port=int(env[PREFIX + "METRICS_PORT"]),
            program=(str(installed.script),),
        )
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        kill_quietly(process)


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Map each file under ``root`` to its size and modification time."""
    state = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        state[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return state


def healthcheck(installed: InstalledSidecar, process: SidecarProcess) -> int:
    result = subprocess.run(
        [str(installed.script), "healthcheck"],
        env=process.env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode


def test_wheel_provides_console_script(installed: InstalledSidecar) -> None:
    result = subprocess.run(
        [str(installed.python), "-c", "import sidecar; print(sidecar.__file__)"],
        env=isolated_environment({}),
        # `python -c` puts the working directory first on sys.path; the source tree must not be it.
        cwd=installed.root,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert Path(result.stdout.strip()).is_relative_to(installed.root)
    version = subprocess.run(
        [str(installed.script), "--version"],
        env=isolated_environment({}),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert version.stdout.strip() == f"sidecar {__version__}"


def test_installed_sidecar_serves_keys(
    installed: InstalledSidecar,
    start_installed: Callable[[str], SidecarProcess],
    make_secret: Callable[..., str],
) -> None:
    before = tree_state(installed.root)
    process = start_installed(make_secret())
    token_file = Path(process.env[PREFIX + "TOKEN_FILE"])
    wait_until(token_file.exists, 10, message="token file not created:\n" + process.log_text())
    process.token = token_file.read_text(encoding="utf-8").strip()
    process.wait_ready()

    document = process.keys()
    assert document["current"] == CURRENT_KEY
    assert document["previous"] == PREVIOUS_KEY
    assert process.get("/v1/keys", token=False).status == 403
    assert http_request(process.metrics_url()).status == 200

    assert stat.S_IMODE(token_file.stat().st_mode) == TOKEN_FILE_MODE
    assert [path.name for path in token_file.parent.iterdir()] == [token_file.name]
    assert tree_state(installed.root) == before, "the sidecar wrote into its virtual environment"
    assert list(Path(process.env["TMPDIR"]).iterdir()) == []
    assert process.stop() == 0


def test_installed_healthcheck_follows_readiness(
    installed: InstalledSidecar,
    start_installed: Callable[[str], SidecarProcess],
    make_secret: Callable[..., str],
) -> None:
    ready = start_installed(make_secret())
    ready.wait_ready()
    missing = start_installed("test/no-such-secret")
    wait_until(
        lambda: missing.get("/readyz").status == 503,
        10,
        message="expected /readyz 503:\n" + missing.log_text(),
    )

    assert healthcheck(installed, ready) == 0
    assert healthcheck(installed, missing) == 1
    assert ready.stop() == 0
    assert healthcheck(installed, ready) == 1
