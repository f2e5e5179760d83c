"""``sidecar rotate``: rotate the key pair in Secrets Manager from a shell.

The key is never an argument: it is generated, or read from stdin with
``--new-key-stdin``, so it stays out of argv, shell history and process
listings. Nothing this command prints contains a key.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TextIO

from sidecar.errors import RotationError, SettingsError
from sidecar.region import MISSING_REGION, resolve_region
from sidecar.settings import RotationSettings, load_rotation_settings

if TYPE_CHECKING:
    from sidecar.rotation import SecretsManagerClient

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
# A key is at most 1024 characters; more input than this is not one key.
MAX_STDIN_BYTES = 16_384
RETRY_ATTEMPTS = 3

EXIT_CODES = f"""exit status:
  {EXIT_OK}  rotated, finished an interrupted rotation, or nothing to do (dry run, already done)
  {EXIT_FAILURE}  AWS or other failure; the secret was not changed, or the rotation can be
     finished by running again with the same --client-request-token
  {EXIT_USAGE}  invalid arguments, settings, new key, or a secret that is not a valid pair
  {EXIT_CONFLICT}  another rotation changed the secret or is in progress, or AWSCURRENT was written
     less than the safe delay ago (see --force); this run moved nothing
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``rotate`` subcommand."""
    parser = commands.add_parser(
        "rotate",
        help="rotate the key pair: a new current key, the old current key becomes previous",
        description=(
            "Read AWSCURRENT, write the rotated pair as AWSPENDING, then move AWSCURRENT to it "
            "only if AWSCURRENT has not moved since it was read. The JSON field names, the "
            "layout and the poll timing come from the same SIDECAR_* variables as the sidecar "
            "(defaults when unset)."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--secret-id", required=True, help="secret name or ARN")
    parser.add_argument(
        "--new-key-stdin",
        action="store_true",
        help="read the new key from stdin (one line) instead of generating one",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"version_id", "safe_after", "outcome"} as JSON',
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="read and validate everything, write nothing"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help=(
            "rotate even if AWSCURRENT was written less than the safe delay (the same "
            "delay as safe_after) ago; clients that still use its previous key lose it"
        ),
    )
    parser.add_argument(
        "--client-request-token",
        metavar="TOKEN",
        help=(
            "id of the new version (32 to 64 letters, digits, - or _); run again with the "
            "same token to finish or confirm an interrupted rotation without a second one. "
            "Default: a random UUID"
        ),
    )


def main(
    arguments: argparse.Namespace, environ: Mapping[str, str], stdin: TextIO | None = None
) -> int:
    """Run ``sidecar rotate`` and return its exit status."""
    from sidecar.rotation import (  # noqa: PLC0415 - botocore loads slowly; other commands skip it
        CurrentTooRecentError,
        RotationResult,
        Rotator,
        SecretFields,
        new_request_token,
        token_problem,
    )

    try:
        settings = load_rotation_settings(environ)
    except SettingsError as error:
        for problem in error.problems:
            _error(problem)
        return EXIT_USAGE
    token: str = arguments.client_request_token or new_request_token()
    accepted = token_problem(token)
    if accepted is not None:
        _error(f"--client-request-token: invalid value {token!r}; expected {accepted}")
        return EXIT_USAGE

    delay = safe_delay(settings)
    rotator: Rotator | None = None
    try:
        new_key = read_key(stdin or sys.stdin) if arguments.new_key_stdin else None
        client = _create_client(settings)
        rotator = Rotator(
            client,
            arguments.secret_id,
            SecretFields(current=settings.current_field, previous=settings.previous_field),
        )
        result: RotationResult = rotator.rotate(
            token,
            new_key,
            dry_run=arguments.dry_run,
            min_current_age=timedelta(0) if arguments.force else delay,
        )
    except CurrentTooRecentError as error:
        # format_time drops the fraction of a second; one more second keeps the time late.
        retry_at = format_time(datetime.now(UTC) + error.wait + timedelta(seconds=1))
        _error(f"{error}. Rotate again after {retry_at}, or pass --force to rotate now anyway")
        return error.exit_status
    except RotationError as error:
        _error(str(error))
        # Before the first write the secret is unchanged, so a plain rerun is a retry.
        if error.exit_status == EXIT_FAILURE and rotator is not None and rotator.write_attempted:
            _error(
                f"to retry this rotation without starting a second one, run the same command "
                f"with --client-request-token {token}"
            )
        return error.exit_status

    finished = result.outcome != "dry_run"
    safe_after = format_time(datetime.now(UTC) + delay) if finished else None
    if arguments.json:
        document = {
            "version_id": result.version_id if finished else None,
            "safe_after": safe_after,
            "outcome": result.outcome,
        }
        print(json.dumps(document))  # noqa: T201 - the command's output
    else:
        print(describe(arguments.secret_id, result.version_id, result.outcome, safe_after))  # noqa: T201
    return EXIT_OK


def read_key(stdin: TextIO) -> str:
    """Read one key from ``stdin``; from a terminal, without echoing it."""
    if stdin.isatty():
        text = getpass.getpass("new key (not echoed): ", stream=sys.stderr)
    else:
        text = stdin.read(MAX_STDIN_BYTES + 1)
    if len(text) > MAX_STDIN_BYTES:
        msg = f"--new-key-stdin: more than {MAX_STDIN_BYTES} bytes on stdin; expected one key"
        raise RotationError(msg, EXIT_USAGE)
    key = text.strip()
    if not key or "\n" in key:
        msg = "--new-key-stdin: expected exactly one key on one line of stdin"
        raise RotationError(msg, EXIT_USAGE)
    return key


def safe_delay(settings: RotationSettings) -> timedelta:
    """Return how long after a rotation every healthy sidecar serves the new pair.

    A sidecar waits up to POLL_INTERVAL x (1 + POLL_JITTER) between the end of one
    poll and the start of the next. A poll that was in flight at the rotation can
    still return the old version, so the request time of two polls is added. Each
    request takes at most CONNECT_TIMEOUT + READ_TIMEOUT, and a poll makes one
    request in the fields layout and up to two in the stages layout.
    """
    longest_wait = settings.poll_interval * (1 + settings.poll_jitter)
    requests_per_poll = 2 if settings.layout == "stages" else 1
    request_time = settings.connect_timeout + settings.read_timeout
    return timedelta(seconds=longest_wait + 2 * requests_per_poll * request_time)


def format_time(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with a Z suffix, to the second."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def describe(secret_id: str, version_id: str, outcome: str, safe_after: str | None) -> str:
    """Return the human-readable summary of a rotation."""
    hand_over = (
        f"every healthy sidecar serves the new pair by {safe_after}; hand the new key to clients "
        "after that time"
    )
    if outcome == "rotated":
        return f"rotated {secret_id}: version {version_id} is AWSCURRENT\n{hand_over}"
    if outcome == "resumed":
        return (
            f"finished the interrupted rotation of {secret_id}: version {version_id} is "
            f"AWSCURRENT\n{hand_over}"
        )
    if outcome == "already_current":
        return (
            f"version {version_id} of {secret_id} was already AWSCURRENT; nothing changed\n"
            f"{hand_over}"
        )
    return f"dry run: the secret and the new key are valid; nothing was written to {secret_id}"


def _create_client(settings: RotationSettings) -> SecretsManagerClient:
    """Create a synchronous Secrets Manager client from botocore's standard settings."""
    import botocore.session  # noqa: PLC0415 - botocore loads slowly; other commands skip it
    from botocore.config import Config  # noqa: PLC0415
    from botocore.exceptions import NoRegionError  # noqa: PLC0415

    config = Config(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        # Retrying PutSecretValue with the same ClientRequestToken is idempotent,
        # and Rotator.promote distinguishes a lost reply from a real conflict.
        retries={"mode": "standard", "total_max_attempts": RETRY_ATTEMPTS},
    )
    session = botocore.session.get_session()
    resolve_region(session)
    try:
        client: SecretsManagerClient = session.create_client("secretsmanager", config=config)
    except NoRegionError:
        raise RotationError(MISSING_REGION, EXIT_USAGE) from None
    return client


def _error(message: str) -> None:
    print(f"sidecar rotate: {message}", file=sys.stderr)  # noqa: T201
