"""docs/openapi.yaml against a live sidecar: schemathesis generates the requests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from sidecar.api import MAX_WAIT
from tests.helpers import TOKEN, SidecarProcess

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
SCHEMA = schemathesis.openapi.from_path(SCHEMA_PATH)
# The keys API ignores query parameters that it does not know, as most HTTP
# servers do, so a request with extra ones is not negative data.
SCHEMA.config.generation.update(allow_extra_parameters=False)


@SCHEMA.auth()
class SidecarToken:
    """Sends the test token in X-Sidecar-Token, so that schemathesis can also leave it out."""

    def get(self, _case: schemathesis.Case[Any], _context: schemathesis.AuthContext) -> str:
        """Return the token of the sidecars that the tests start."""
        return TOKEN

    def set(
        self, case: schemathesis.Case[Any], token: str, _context: schemathesis.AuthContext
    ) -> None:
        """Put the token in the request headers."""
        case.headers["X-Sidecar-Token"] = token


KEYS_LISTENER = SCHEMA.include(path_regex="^/(v1/keys|v1/verify|v1/refresh|healthz|readyz)$")
METRICS_LISTENER = SCHEMA.include(path_regex="^/(metrics|healthz|readyz)$")
# A long poll (?wait= with a matching If-None-Match, which "*" is) waits up to
# this long here. The full waits are tested in test_watch.py.
LONG_POLL_CAP = 0.5
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
    wait = (case.query or {}).get("wait")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 < wait <= MAX_WAIT:
        case.query["wait"] = min(wait, LONG_POLL_CAP)
    case.call_and_validate(base_url=sidecar.url(""))


@METRICS_LISTENER.parametrize()
@FUZZ_SETTINGS
def test_metrics_listener_conforms(case: schemathesis.Case[Any], sidecar: SidecarProcess) -> None:
    """The metrics listener returns no 5xx and only documented statuses, headers and bodies."""
    case.call_and_validate(base_url=sidecar.metrics_url(""))
