"""Read the deployment files at the repository root: task definition, IAM policies, Dockerfile."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TASK_DEFINITION = ROOT / "task-definition.json"
DOCKERFILE = ROOT / "Dockerfile"
TASK_ROLE_POLICY = ROOT / "deploy" / "iam" / "task-role-policy.json"
ROTATION_POLICY = ROOT / "deploy" / "iam" / "rotation-policy.json"

SIDECAR_CONTAINER = "sidecar"
APP_CONTAINER = "app"


def load_json(path: Path) -> Any:
    """Parse one JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))


def container(task_definition: dict[str, Any], name: str) -> dict[str, Any]:
    """Return the container definition called ``name``; fails if there is not exactly one."""
    found = [item for item in task_definition["containerDefinitions"] if item["name"] == name]
    assert len(found) == 1, f"expected one container named {name!r}, found {len(found)}"
    definition: dict[str, Any] = found[0]
    return definition


def environment(definition: dict[str, Any]) -> dict[str, str]:
    """Return a container's environment as a dict; fails on a name listed twice."""
    pairs = [(item["name"], item["value"]) for item in definition.get("environment", [])]
    names = [name for name, _ in pairs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert not duplicates, f"variables listed twice: {duplicates}"
    return dict(pairs)


def venv_tool(name: str) -> Path:
    """Return a console script installed beside this interpreter, or on PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return beside
    found = shutil.which(name)
    assert found is not None, f"{name} not found; install the dev extra: pip install -e '.[dev]'"
    return Path(found)
