"""Resolve the AWS region the way ECS sets it.

botocore reads the region from AWS_DEFAULT_REGION and the config file, but not
from AWS_REGION (checked with botocore 1.43), which is the variable that AWS
documents for SDKs and that ECS sets in every task next to AWS_DEFAULT_REGION.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

MISSING_REGION = (
    "AWS_REGION: missing; expected the region of the secret, for example us-east-1 "
    "(ECS sets AWS_REGION and AWS_DEFAULT_REGION in every task; set one by hand elsewhere)"
)


class ConfigSession(Protocol):
    """The part of a botocore or aiobotocore session that region resolution uses."""

    def get_config_variable(self, logical_name: str) -> Any: ...  # noqa: D102, ANN401

    def set_config_variable(self, logical_name: str, value: Any) -> None: ...  # noqa: D102, ANN401


def resolve_region(session: ConfigSession, environ: Mapping[str, str] | None = None) -> str | None:
    """Return the session's region, taking AWS_REGION when botocore found none.

    ``session`` is a botocore or aiobotocore session; the fallback is stored in it
    so that clients it creates use the same region.
    """
    region: str | None = session.get_config_variable("region")
    if region:
        return region
    env = os.environ if environ is None else environ
    fallback = env.get("AWS_REGION", "").strip()
    if not fallback:
        return None
    session.set_config_variable("region", fallback)
    return fallback
