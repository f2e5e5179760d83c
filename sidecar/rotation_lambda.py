"""Secrets Manager rotation function for the key pair (native, scheduled rotation).

Handler: ``sidecar.rotation_lambda.lambda_handler``. Secrets Manager invokes it
once per step with ``{"Step", "SecretId", "ClientRequestToken"}``, plus
``RotationToken`` for rotations through an assumed role. The ClientRequestToken
is the id of the new version. The steps give the guarantees of ``sidecar rotate``:

- createSecret writes the rotated pair (a new key as current, the current key as
  previous) as version ``ClientRequestToken`` with the AWSPENDING label. Run
  again, it keeps a pending version that was built on the current key, so a
  retried rotation creates no second key.
- setSecret has nothing to update: the sidecars read the secret themselves.
- testSecret parses the pending version with the sidecar's parser and checks
  that it keeps the current key as previous.
- finishSecret moves AWSCURRENT to the pending version with RemoveFromVersionId
  set to the version whose key the pair keeps, so a rotation that finished in
  between makes this step fail instead of dropping a key.

This module imports only the standard library, botocore and the package's
pure-Python modules, which Lambda's Python runtime provides; the sidecar's own
dependencies (aiohttp, aiobotocore, structlog, tenacity) are not needed.
SIDECAR_CURRENT_FIELD and SIDECAR_PREVIOUS_FIELD in the function's environment
name the JSON fields, as for the sidecar.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sidecar.errors import RotationError
from sidecar.keygen import generate_key
from sidecar.rotation import (
    AWSCURRENT,
    AWSPENDING,
    Rotator,
    SecretFields,
    build_next_pair,
    parse_version,
    require_built_on,
)
from sidecar.settings import load_rotation_settings

if TYPE_CHECKING:
    from sidecar.rotation import SecretsManagerClient

log = logging.getLogger(__name__)
log.setLevel(logging.INFO)

# The rotation templates and events use camelCase step names; parts of the
# Secrets Manager user guide spell them in snake_case. Both are accepted.
_STEP_NAMES = {
    "createSecret": "createSecret",
    "create_secret": "createSecret",
    "setSecret": "setSecret",
    "set_secret": "setSecret",
    "testSecret": "testSecret",
    "test_secret": "testSecret",
    "finishSecret": "finishSecret",
    "finish_secret": "finishSecret",
}

# One client per execution environment, reused by later invocations.
_client: SecretsManagerClient | None = None


def lambda_handler(event: Mapping[str, Any], context: object) -> None:
    """Run one rotation step; raising fails the step and Secrets Manager retries it."""
    del context  # The Lambda context carries nothing this function needs.
    global _client  # noqa: PLW0603 - one client per execution environment
    if _client is None:
        _client = _create_client()
    run_step(_client, event, os.environ)


def _create_client() -> SecretsManagerClient:
    import botocore.session  # noqa: PLC0415 - created on the first invocation only
    from botocore.config import Config  # noqa: PLC0415

    client: SecretsManagerClient = botocore.session.get_session().create_client(
        "secretsmanager", config=Config(retries={"mode": "standard"})
    )
    return client


def run_step(
    client: SecretsManagerClient, event: Mapping[str, Any], environ: Mapping[str, str]
) -> None:
    """Run the step named in ``event`` against ``client``."""
    secret_id, token, step = _read_event(event)
    rotation_token = event.get("RotationToken")
    settings = load_rotation_settings(environ)
    fields = SecretFields(current=settings.current_field, previous=settings.previous_field)
    rotator = Rotator(client, secret_id, fields)
    log.info("rotation.step_started step=%s secret_id=%s version_id=%s", step, secret_id, token)

    stages = rotator.version_stages().get(token)
    if stages is not None and AWSCURRENT in stages:
        # A retried finishSecret, or a step of a rotation that already finished.
        log.info("rotation.already_current step=%s version_id=%s", step, token)
        return
    if stages is not None and AWSPENDING not in stages:
        msg = f"version {token} of {secret_id} does not hold AWSPENDING, so it is not being rotated"
        raise RotationError(msg)
    # RotateSecret creates version ClientRequestToken, labelled AWSPENDING and
    # without a value, before it invokes createSecret. An invocation outside
    # RotateSecret (a test, a manual run) has no such version, and createSecret
    # creates it; every later step needs it.
    if stages is None and step != "createSecret":
        msg = f"the secret {secret_id} has no version {token}; createSecret must run first"
        raise RotationError(msg)

    if step == "createSecret":
        create_pending(rotator, token, rotation_token if isinstance(rotation_token, str) else None)
    elif step == "setSecret":
        # The application learns the keys from the sidecars, which read the
        # secret themselves: there is no other service to update.
        log.info("rotation.set_skipped version_id=%s", token)
    elif step == "testSecret":
        verify_pending(rotator, token)
    else:
        finish_rotation(rotator, token)
    log.info("rotation.step_finished step=%s version_id=%s", step, token)


def _read_event(event: Mapping[str, Any]) -> tuple[str, str, str]:
    values = []
    for name in ("SecretId", "ClientRequestToken", "Step"):
        value = event.get(name)
        if not isinstance(value, str) or not value:
            msg = f"the event has no {name}; expected a Secrets Manager rotation event"
            raise ValueError(msg)
        values.append(value)
    secret_id, token, step = values
    if step not in _STEP_NAMES:
        msg = f"invalid Step {step!r}; expected createSecret, setSecret, testSecret or finishSecret"
        raise ValueError(msg)
    return secret_id, token, _STEP_NAMES[step]


def create_pending(rotator: Rotator, token: str, rotation_token: str | None = None) -> None:
    """Write the rotated pair as version ``token`` with AWSPENDING, unless it exists already."""
    current_version = rotator.read_current()
    current = parse_version(current_version, rotator.fields, AWSCURRENT)
    existing = rotator.read_version(token)
    if existing is not None and existing.secret_string is not None:
        # A retry of this rotation: keep the key it generated, as long as the
        # pair still keeps the current key as previous.
        pending = parse_version(existing, rotator.fields, AWSPENDING)
        require_built_on(pending, current, token)
        log.info("rotation.pending_kept version_id=%s", token)
        return
    _, text = build_next_pair(current, generate_key(), rotator.fields)
    rotator.put_pending(token, text, rotation_token)
    log.info(
        "rotation.pending_created version_id=%s built_on_version_id=%s",
        token,
        current_version.version_id,
    )


def verify_pending(rotator: Rotator, token: str) -> None:
    """Check the pending version with the sidecar's parser and against AWSCURRENT."""
    pending_version = rotator.read_version(token)
    if pending_version is None:
        msg = f"version {token} has no value; createSecret must run first"
        raise RotationError(msg)
    pending = parse_version(pending_version, rotator.fields, AWSPENDING)
    current = parse_version(rotator.read_current(), rotator.fields, AWSCURRENT)
    require_built_on(pending, current, token)


def finish_rotation(rotator: Rotator, token: str) -> None:
    """Move AWSCURRENT to version ``token`` if it still builds on the current version."""
    current_version = rotator.read_current()
    if current_version.version_id == token:
        return
    current = parse_version(current_version, rotator.fields, AWSCURRENT)
    pending_version = rotator.read_version(token)
    if pending_version is None:
        msg = f"version {token} has no value; createSecret must run first"
        raise RotationError(msg)
    pending = parse_version(pending_version, rotator.fields, AWSPENDING)
    require_built_on(pending, current, token)
    rotator.promote(token, current_version.version_id)
    log.info(
        "rotation.finished version_id=%s previous_version_id=%s",
        token,
        current_version.version_id,
    )
