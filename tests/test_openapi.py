"""docs/openapi.yaml against a live sidecar: schemathesis generates the requests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.helpers import TOKEN, SidecarProcess

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
SCHEMA = schemathesis.openapi.from_path(SCHEMA_PATH)
KEYS_LISTENER = SCHEMA.include(path_regex="^/(v1/keys|healthz|readyz)$")
METRICS_LISTENER = SCHEMA.include(path_regex="^/(metrics|healthz|readyz)$")
# Examples per operation: enough to vary methods and headers, few enough that
# both tests finish in about 10 s.
MAX_EXAMPLES = 25
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    # One sidecar serves every example of an operation, on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture
def sidecar(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> SidecarProcess:
    """A ready sidecar with both listeners."""
    return start_sidecar(make_secret(), metrics_port=-1)


@KEYS_LISTENER.parametrize()
@FUZZ_SETTINGS
def test_keys_listener_conforms(case: schemathesis.Case[Any], sidecar: SidecarProcess) -> None:
    """The keys listener returns no 5xx and only documented statuses, headers and bodies."""
    case.call_and_validate(base_url=sidecar.url(""), headers={"X-Sidecar-Token": TOKEN})


@METRICS_LISTENER.parametrize()
@FUZZ_SETTINGS
def test_metrics_listener_conforms(case: schemathesis.Case[Any], sidecar: SidecarProcess) -> None:
    """The metrics listener returns no 5xx and only documented statuses, headers and bodies."""
    case.call_and_validate(base_url=sidecar.metrics_url(""))
