"""The Dockerfile: hadolint finds nothing, and its instructions match the task definition."""

from __future__ import annotations

import json
import posixpath
import re
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

from sidecar.settings import DEFAULT_METRICS_PORT, DEFAULT_PORT, PREFIX
from tests.deploy_files import (
    DOCKERFILE,
    SIDECAR_CONTAINER,
    TASK_DEFINITION,
    container,
    environment,
    load_json,
    venv_tool,
)

BUILD_STAGE = "build"
VENV = "/opt/venv"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with its continuation lines joined."""

    keyword: str
    arguments: str


def parse_stages(text: str) -> list[list[Instruction]]:
    """Split a Dockerfile into stages; instructions before the first FROM form stage 0."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"

    stages: list[list[Instruction]] = [[]]
    for entry in logical:
        keyword, _, arguments = entry.partition(" ")
        instruction = Instruction(keyword.upper(), " ".join(arguments.split()))
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def arguments_of(stage: list[Instruction], keyword: str) -> list[str]:
    return [item.arguments for item in stage if item.keyword == keyword]


def expand(text: str, stage: list[Instruction]) -> str:
    """Replace ${NAME} with the default of ARG NAME=value declared in ``stage``."""
    defaults = dict(
        argument.split("=", 1) for argument in arguments_of(stage, "ARG") if "=" in argument
    )
    return re.sub(r"\$\{(\w+)\}", lambda match: defaults[match.group(1)], text)


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse_stages(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final(stages: list[list[Instruction]]) -> list[Instruction]:
    return stages[-1]


@pytest.fixture(scope="module")
def sidecar_definition() -> dict[str, Any]:
    return container(load_json(TASK_DEFINITION), SIDECAR_CONTAINER)


def run_hadolint(dockerfile_text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv_tool("hadolint")), "--no-color", "-"],
        input=dockerfile_text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_reports_nothing() -> None:
    result = run_hadolint(DOCKERFILE.read_text(encoding="utf-8"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_flags_careless_dockerfile() -> None:
    """A careless Dockerfile gets findings, so the clean result above means something."""
    result = run_hadolint("FROM python\nRUN pip install sidecar\n")
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # image without a tag
    assert "DL3013" in result.stdout  # pip install without a pinned version


def test_multi_stage_build(stages: list[list[Instruction]], final: list[Instruction]) -> None:
    from_lines = [stage[0].arguments for stage in stages[1:]]
    assert len(from_lines) == 2
    assert from_lines[0].endswith(f" AS {BUILD_STAGE}")
    assert " AS " not in from_lines[1]
    # The runtime stage installs nothing: it copies the finished environment.
    assert arguments_of(final, "COPY") == [f"--from={BUILD_STAGE} {VENV} {VENV}"]
    assert not any("pip" in command for command in arguments_of(final, "RUN"))
    build_commands = " ".join(arguments_of(stages[1], "RUN"))
    assert f"python -m venv --without-pip {VENV}" in build_commands
    assert "--no-cache-dir" in build_commands


def test_runs_as_task_definition_user(
    final: list[Instruction], sidecar_definition: dict[str, Any]
) -> None:
    (user,) = arguments_of(final, "USER")
    resolved = expand(user, final)
    uid, gid = resolved.split(":")
    assert uid.isdigit()
    assert gid.isdigit()
    assert int(uid) != 0
    assert resolved == sidecar_definition["user"]


def test_entrypoint_and_signals(final: list[Instruction]) -> None:
    assert [json.loads(item) for item in arguments_of(final, "ENTRYPOINT")] == [["sidecar"]]
    assert arguments_of(final, "STOPSIGNAL") == ["SIGTERM"]
    (check,) = arguments_of(final, "HEALTHCHECK")
    _, _, command = check.partition(" CMD ")
    assert json.loads(command) == ["sidecar", "healthcheck"]


def test_exposes_metrics_port_only(final: list[Instruction]) -> None:
    assert arguments_of(final, "EXPOSE") == [str(DEFAULT_METRICS_PORT)]
    assert str(DEFAULT_PORT) not in " ".join(arguments_of(final, "EXPOSE"))


def test_no_bytecode_written(final: list[Instruction]) -> None:
    environment_lines = " ".join(arguments_of(final, "ENV")).split()
    assert "PYTHONDONTWRITEBYTECODE=1" in environment_lines


def test_volume_is_token_directory(
    final: list[Instruction], sidecar_definition: dict[str, Any]
) -> None:
    """ECS copies the image's VOLUME directory, owner included, into a volume at that path."""
    (volume,) = arguments_of(final, "VOLUME")
    (path,) = json.loads(volume)
    token_file = environment(sidecar_definition)[PREFIX + "TOKEN_FILE"]
    assert posixpath.dirname(token_file) == path
    mounts = [mount["containerPath"] for mount in sidecar_definition["mountPoints"]]
    assert path in mounts
    commands = expand(" ".join(arguments_of(final, "RUN")), final)
    assert f"chown {sidecar_definition['user']} {path}" in commands.replace('"', "")
