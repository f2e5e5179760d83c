"""task-definition.json: valid for RegisterTaskDefinition and wired the way the sidecar needs."""

from __future__ import annotations

import copy
import posixpath
import re
from dataclasses import MISSING, fields
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator

from sidecar.app import SHUTDOWN_TIMEOUT
from sidecar.settings import KNOWN_VARIABLES, PREFIX, Settings, load_settings
from tests.deploy_files import (
    APP_CONTAINER,
    SIDECAR_CONTAINER,
    TASK_DEFINITION,
    TASK_ROLE_POLICY,
    container,
    environment,
    load_json,
)

# Settings whose value belongs to one deployment rather than a tunable with a default.
DEPLOYMENT_SETTINGS = {"secret_id", "token_file"}
# The token never goes into a task definition, because anyone who can describe
# the task definition could read it. The sidecar writes it to the token volume.
FORBIDDEN_VARIABLES = {PREFIX + "TOKEN"}
SIDECAR_MEMORY_RESERVATION_MIB = 64
PLACEHOLDER_ROLE = re.compile(r"arn:aws:iam::123456789012:role/[\w+=,.@-]+")
# Task-level CPU units and the memory sizes (MiB) that Fargate accepts with them.
FARGATE_MEMORY = {
    "256": {"512", "1024", "2048"},
    "512": {str(size) for size in range(1024, 4097, 1024)},
    "1024": {str(size) for size in range(2048, 8193, 1024)},
}


@pytest.fixture(scope="module")
def task_definition() -> dict[str, Any]:
    document: dict[str, Any] = load_json(TASK_DEFINITION)
    return document


@pytest.fixture(scope="module")
def register_input_shape() -> Any:
    model = botocore.session.get_session().get_service_model("ecs")
    return model.operation_model("RegisterTaskDefinition").input_shape


def validation_report(document: dict[str, Any], shape: Any) -> Any:
    return ParamValidator().validate(document, shape)


def test_task_definition_matches_ecs_service_model(
    task_definition: dict[str, Any], register_input_shape: Any
) -> None:
    report = validation_report(task_definition, register_input_shape)
    assert not report.has_errors(), report.generate_report()


def test_service_model_rejects_malformed_copy(
    task_definition: dict[str, Any], register_input_shape: Any
) -> None:
    """The validator is strict enough to catch a wrong type and an unknown field."""
    broken = copy.deepcopy(task_definition)
    container(broken, SIDECAR_CONTAINER)["memoryReservation"] = "64"
    container(broken, APP_CONTAINER)["dependsOnn"] = []
    report = validation_report(broken, register_input_shape).generate_report()
    assert "memoryReservation" in report
    assert "dependsOnn" in report


def test_task_is_fargate_awsvpc(task_definition: dict[str, Any]) -> None:
    assert task_definition["requiresCompatibilities"] == ["FARGATE"]
    assert task_definition["networkMode"] == "awsvpc"
    cpu, memory = task_definition["cpu"], task_definition["memory"]
    assert memory in FARGATE_MEMORY.get(cpu, set()), (
        f"Fargate does not offer {cpu} CPU units with {memory} MiB"
    )


def test_roles_are_recognisable_placeholders(task_definition: dict[str, Any]) -> None:
    assert PLACEHOLDER_ROLE.fullmatch(task_definition["taskRoleArn"])
    assert PLACEHOLDER_ROLE.fullmatch(task_definition["executionRoleArn"])
    assert task_definition["taskRoleArn"] != task_definition["executionRoleArn"]


def test_two_essential_containers(task_definition: dict[str, Any]) -> None:
    names = [item["name"] for item in task_definition["containerDefinitions"]]
    assert sorted(names) == sorted([SIDECAR_CONTAINER, APP_CONTAINER])
    for name in names:
        assert container(task_definition, name)["essential"] is True, name


def test_sidecar_runs_locked_down(task_definition: dict[str, Any]) -> None:
    sidecar = container(task_definition, SIDECAR_CONTAINER)
    assert sidecar["readonlyRootFilesystem"] is True
    # Fargate rejects privileged containers; the field must stay absent or false.
    assert sidecar.get("privileged", False) is False
    assert sidecar["linuxParameters"]["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sidecar["linuxParameters"]["capabilities"]
    uid, gid = sidecar["user"].split(":")
    assert int(uid) > 0
    assert int(gid) > 0
    assert "secrets" not in sidecar


def test_sidecar_health_check_runs_cli(task_definition: dict[str, Any]) -> None:
    check = container(task_definition, SIDECAR_CONTAINER)["healthCheck"]
    assert check["command"] == ["CMD", "sidecar", "healthcheck"]
    # `sidecar healthcheck` gives up after 2 seconds; the timeout leaves room for that.
    assert check["timeout"] > 2
    assert check["interval"] > check["timeout"]


def test_sidecar_health_check_within_ecs_limits(task_definition: dict[str, Any]) -> None:
    """ECS documents these ranges for RegisterTaskDefinition; its model does not encode them."""
    check = container(task_definition, SIDECAR_CONTAINER)["healthCheck"]
    assert 5 <= check["interval"] <= 300
    assert 2 <= check["timeout"] <= 60
    assert 1 <= check["retries"] <= 10
    assert 0 <= check.get("startPeriod", 0) <= 300


def test_sidecar_start_and_stop_timeouts(task_definition: dict[str, Any]) -> None:
    sidecar = container(task_definition, SIDECAR_CONTAINER)
    # On Fargate, startTimeout is 2 to 120 s and bounds how long the application
    # waits for the sidecar to become healthy. stopTimeout is at most 120 s.
    assert 2 <= sidecar["startTimeout"] <= 120
    assert SHUTDOWN_TIMEOUT < sidecar["stopTimeout"] <= 120
    assert "startTimeout" not in container(task_definition, APP_CONTAINER)


def test_sidecar_memory_reservation(task_definition: dict[str, Any]) -> None:
    sidecar = container(task_definition, SIDECAR_CONTAINER)
    assert sidecar["memoryReservation"] == SIDECAR_MEMORY_RESERVATION_MIB
    reserved = sum(
        item.get("memoryReservation", 0) for item in task_definition["containerDefinitions"]
    )
    assert reserved <= int(task_definition["memory"])


def test_every_container_logs_to_awslogs(task_definition: dict[str, Any]) -> None:
    for definition in task_definition["containerDefinitions"]:
        logging = definition["logConfiguration"]
        assert logging["logDriver"] == "awslogs", definition["name"]
        assert {"awslogs-group", "awslogs-region", "awslogs-stream-prefix"} <= set(
            logging["options"]
        )


def test_app_waits_for_healthy_sidecar(task_definition: dict[str, Any]) -> None:
    app = container(task_definition, APP_CONTAINER)
    assert app["dependsOn"] == [{"containerName": SIDECAR_CONTAINER, "condition": "HEALTHY"}]


def test_token_volume_is_task_scoped(task_definition: dict[str, Any]) -> None:
    """A volume with no host, EFS or Docker configuration is Fargate task storage."""
    assert task_definition["volumes"] == [{"name": token_volume(task_definition)}]


def test_token_volume_mount_modes(task_definition: dict[str, Any]) -> None:
    volume = token_volume(task_definition)
    sidecar_mount = mount_of(container(task_definition, SIDECAR_CONTAINER), volume)
    app_mount = mount_of(container(task_definition, APP_CONTAINER), volume)
    assert sidecar_mount["readOnly"] is False
    assert app_mount["readOnly"] is True


def test_token_file_lives_on_token_volume(task_definition: dict[str, Any]) -> None:
    volume = token_volume(task_definition)
    sidecar = container(task_definition, SIDECAR_CONTAINER)
    app = container(task_definition, APP_CONTAINER)
    sidecar_file = environment(sidecar)[PREFIX + "TOKEN_FILE"]
    app_file = environment(app)[PREFIX + "TOKEN_FILE"]
    assert posixpath.dirname(sidecar_file) == mount_of(sidecar, volume)["containerPath"]
    assert posixpath.dirname(app_file) == mount_of(app, volume)["containerPath"]
    assert posixpath.basename(sidecar_file) == posixpath.basename(app_file)


def test_app_is_told_keys_url(task_definition: dict[str, Any]) -> None:
    sidecar_env = environment(container(task_definition, SIDECAR_CONTAINER))
    app_env = environment(container(task_definition, APP_CONTAINER))
    port = sidecar_env[PREFIX + "PORT"]
    assert app_env["SIDECAR_KEYS_URL"] == f"http://127.0.0.1:{port}/v1/keys"


def test_keys_port_is_not_published(task_definition: dict[str, Any]) -> None:
    keys_port = int(environment(container(task_definition, SIDECAR_CONTAINER))[PREFIX + "PORT"])
    for definition in task_definition["containerDefinitions"]:
        published = [mapping["containerPort"] for mapping in definition.get("portMappings", [])]
        assert keys_port not in published, definition["name"]


def test_metrics_port_is_published(task_definition: dict[str, Any]) -> None:
    sidecar = container(task_definition, SIDECAR_CONTAINER)
    metrics_port = int(environment(sidecar)[PREFIX + "METRICS_PORT"])
    assert [mapping["containerPort"] for mapping in sidecar["portMappings"]] == [metrics_port]


def test_sidecar_lists_every_setting(task_definition: dict[str, Any]) -> None:
    """Every SIDECAR_* setting is listed, so operators see each tunable in one place."""
    names = set(environment(container(task_definition, SIDECAR_CONTAINER)))
    assert names == KNOWN_VARIABLES - FORBIDDEN_VARIABLES


def test_sidecar_tunables_have_defaults(task_definition: dict[str, Any]) -> None:
    """The listed values are valid and equal the defaults, so listing them changes nothing."""
    settings = load_settings(environment(container(task_definition, SIDECAR_CONTAINER)))
    for field in fields(Settings):
        if field.name in DEPLOYMENT_SETTINGS or field.name == "token":
            continue
        assert field.default is not MISSING, (
            f"{field.name} has no default; add it to DEPLOYMENT_SETTINGS"
        )
        assert getattr(settings, field.name) == field.default, PREFIX + field.name.upper()


def test_secret_matches_task_role_policy(task_definition: dict[str, Any]) -> None:
    secret_id = environment(container(task_definition, SIDECAR_CONTAINER))[PREFIX + "SECRET_ID"]
    statements = load_json(TASK_ROLE_POLICY)["Statement"]
    resources = [
        item["Resource"] for item in statements if item["Action"] == "secretsmanager:GetSecretValue"
    ]
    assert len(resources) == 1
    assert resources[0].endswith(f":secret:{secret_id}-??????")


def token_volume(task_definition: dict[str, Any]) -> str:
    """Return the name of the volume that contains the sidecar's token file."""
    sidecar = container(task_definition, SIDECAR_CONTAINER)
    token_directory = posixpath.dirname(environment(sidecar)[PREFIX + "TOKEN_FILE"])
    names: list[str] = [
        mount["sourceVolume"]
        for mount in sidecar["mountPoints"]
        if mount["containerPath"] == token_directory
    ]
    assert len(names) == 1, f"expected one volume mounted at {token_directory}"
    return names[0]


def mount_of(definition: dict[str, Any], volume: str) -> dict[str, Any]:
    """Return the one mount point of ``volume`` in a container definition."""
    mounts: list[dict[str, Any]] = [
        item for item in definition.get("mountPoints", []) if item["sourceVolume"] == volume
    ]
    assert len(mounts) == 1, f"{definition['name']} mounts {volume} {len(mounts)} times"
    return mounts[0]
