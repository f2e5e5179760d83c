"""Rotate the API key pair in Secrets Manager without losing a key.

These are the steps that ``sidecar rotate`` and the Lambda rotation function
share. Both take a synchronous botocore Secrets Manager client, and this module
imports nothing beyond botocore and the package's pure-Python modules, because
the Lambda runtime provides only botocore (with boto3).

A rotation reads AWSCURRENT, writes the new pair (the new key as current, the
old current key as previous) as a new version labelled AWSPENDING, and then
moves AWSCURRENT to it with RemoveFromVersionId set to the version it read.
That move is a compare-and-swap: Secrets Manager rejects it with
InvalidParameterException when AWSCURRENT has moved in between, so of two
concurrent rotations exactly one wins and the loser changes nothing that
clients read.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from botocore import exceptions as botocore_errors

from sidecar.errors import InvalidSecretError, RotationConflictError, RotationError
from sidecar.keygen import generate_key
from sidecar.secret import (
    KEY_RULE,
    KeyPair,
    format_secret_string,
    is_valid_key,
    parse_secret_string,
)

AWSCURRENT = "AWSCURRENT"
AWSPENDING = "AWSPENDING"
AWSPREVIOUS = "AWSPREVIOUS"

EXIT_INVALID = 2

# ClientRequestToken becomes the VersionId; Secrets Manager accepts 32 to 64
# characters. A UUID in hex has 32.
MIN_TOKEN_LENGTH = 32
MAX_TOKEN_LENGTH = 64


@dataclass(frozen=True, slots=True)
class Version:
    """One version of the secret: its id, its staging labels and its SecretString.

    ``created`` is the version's CreatedDate, the time it was written. ``read_at``
    is the Date header of the reply that returned it, so the age of the version
    can be computed on Secrets Manager's clock rather than the local one.
    """

    version_id: str
    stages: tuple[str, ...]
    secret_string: str | None
    created: datetime | None = None
    read_at: datetime | None = None

    def age(self) -> timedelta | None:
        """Return how long ago the version was written, or None when CreatedDate is missing."""
        if self.created is None:
            return None
        now = self.read_at if self.read_at is not None else datetime.now(UTC)
        return now - self.created

    def __repr__(self) -> str:
        return f"Version(version_id={self.version_id!r}, stages={self.stages!r})"


@dataclass(frozen=True, slots=True)
class SecretFields:
    """The JSON field names of the pair, SIDECAR_CURRENT_FIELD and SIDECAR_PREVIOUS_FIELD."""

    current: str
    previous: str


@dataclass(frozen=True, slots=True)
class RotationResult:
    """The outcome of one ``Rotator.rotate`` call.

    ``outcome`` is ``rotated`` (a new version is AWSCURRENT), ``resumed`` (an
    earlier run with the same token wrote the version and this run moved
    AWSCURRENT to it), ``already_current`` (an earlier run with the same token
    finished) or ``dry_run`` (nothing was written).
    """

    version_id: str
    outcome: str


class CurrentTooRecentError(RotationConflictError):
    """Raised when AWSCURRENT replaced another version less than the minimum age ago.

    ``wait`` is the time left until the AWSCURRENT version reaches that age.
    ``sidecar rotate`` exits with 3.
    """

    def __init__(self, message: str, wait: timedelta) -> None:
        self.wait = wait
        super().__init__(message)


def new_request_token() -> str:
    """Return a fresh ClientRequestToken (a random UUID in hex, 32 characters)."""
    return uuid.uuid4().hex


def token_problem(token: str) -> str | None:
    """Describe what is accepted if ``token`` is not a usable ClientRequestToken."""
    if MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH and all(
        char.isascii() and (char.isalnum() or char in "-_") for char in token
    ):
        return None
    return (
        f"{MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} characters of letters, digits, - and _ "
        "(a UUID works)"
    )


def client_error_code(error: BaseException) -> str | None:
    """Return the AWS error code of a botocore ClientError, or None for other errors."""
    if isinstance(error, botocore_errors.ClientError):
        return str(error.response.get("Error", {}).get("Code") or "Unknown")
    return None


class SecretsManagerClient(Protocol):
    """The calls of a synchronous botocore Secrets Manager client that rotation makes."""

    def get_secret_value(self, **parameters: object) -> dict[str, Any]:
        """Call GetSecretValue."""

    def put_secret_value(self, **parameters: object) -> dict[str, Any]:
        """Call PutSecretValue."""

    def update_secret_version_stage(self, **parameters: object) -> dict[str, Any]:
        """Call UpdateSecretVersionStage."""

    def describe_secret(self, **parameters: object) -> dict[str, Any]:
        """Call DescribeSecret."""


def _failure(operation: str, error: Exception) -> RotationError:
    if isinstance(error, botocore_errors.ClientError):
        details = error.response.get("Error", {})
        code = details.get("Code") or "Unknown"
        # AWS error messages name the secret and the version, never a value.
        message = details.get("Message") or ""
        return RotationError(f"{operation} failed: {code}: {message}")
    return RotationError(f"{operation} failed: {error}")


_BOTOCORE_ERRORS = (botocore_errors.ClientError, botocore_errors.BotoCoreError)


def _version_from_reply(reply: dict[str, Any]) -> Version:
    secret_string = reply.get("SecretString")
    created = reply.get("CreatedDate")
    return Version(
        version_id=str(reply["VersionId"]),
        stages=tuple(reply.get("VersionStages") or ()),
        secret_string=secret_string if isinstance(secret_string, str) else None,
        created=created if isinstance(created, datetime) else None,
        read_at=_reply_date(reply),
    )


def _reply_date(reply: dict[str, Any]) -> datetime | None:
    """Return the time in the reply's Date header, or None when it is missing or invalid."""
    headers = reply.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    text = headers.get("date")
    if not isinstance(text, str):
        return None
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    # An HTTP date is always GMT; a naive result means the header gave the zone as -0000.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_version(version: Version, fields: SecretFields, label: str) -> KeyPair:
    """Parse ``version`` with the sidecar's parser, or raise RotationError (status 2)."""
    if version.secret_string is None:
        msg = f"the {label} version {version.version_id} has no SecretString"
        raise RotationError(msg, EXIT_INVALID)
    try:
        return parse_secret_string(version.secret_string, fields.current, fields.previous)
    except InvalidSecretError as error:
        msg = f"the {label} version {version.version_id} is not a valid key pair: {error}"
        raise RotationError(msg, EXIT_INVALID) from None


def build_next_pair(current: KeyPair, new_key: str, fields: SecretFields) -> tuple[KeyPair, str]:
    """Return the rotated pair and its SecretString, checked with the sidecar's parser.

    The new key becomes current and the old current key becomes previous.
    """
    if not is_valid_key(new_key):
        msg = f"the new key is invalid: expected {KEY_RULE}"
        raise RotationError(msg, EXIT_INVALID)
    if same_key(new_key, current.current) or (
        current.previous is not None and same_key(new_key, current.previous)
    ):
        msg = "the new key is already in the secret; expected a key that was never used"
        raise RotationError(msg, EXIT_INVALID)
    pair = KeyPair(current=new_key, previous=current.current)
    text = format_secret_string(pair, fields.current, fields.previous)
    # Parse what is about to be written with the parser of every sidecar, so this
    # can never write a secret that the fleet would reject.
    try:
        checked = parse_secret_string(text, fields.current, fields.previous)
    except InvalidSecretError as error:
        msg = f"the new secret would be rejected by the sidecar: {error}"
        raise RotationError(msg, EXIT_INVALID) from None
    if checked != pair:
        msg = "the new secret does not read back as the pair that was built"
        raise RotationError(msg, EXIT_INVALID)
    return pair, text


def same_key(first: str, second: str) -> bool:
    """Compare two keys in constant time."""
    return hmac.compare_digest(first.encode(), second.encode())


def builds_on(pending: KeyPair, current: KeyPair) -> bool:
    """Tell whether ``pending`` keeps the key of ``current`` as its previous key."""
    return pending.previous is not None and same_key(pending.previous, current.current)


def require_built_on(pending: KeyPair, current: KeyPair, version_id: str) -> None:
    """Raise RotationConflictError unless ``pending`` keeps the current key as previous.

    Moving AWSCURRENT to a version built from an older current key would drop the
    key that clients use now.
    """
    if not builds_on(pending, current):
        msg = (
            f"version {version_id} was built from a key that is no longer current: another "
            "rotation finished after it was written; start a new rotation"
        )
        raise RotationConflictError(msg)


class Rotator:
    """The Secrets Manager calls of a rotation, for one secret and one field layout."""

    def __init__(self, client: SecretsManagerClient, secret_id: str, fields: SecretFields) -> None:
        self.client = client
        self.secret_id = secret_id
        self.fields = fields
        # Set before the first PutSecretValue or UpdateSecretVersionStage call: from
        # then on a failed run may have changed the secret, and a retry should reuse
        # the same client request token.
        self.write_attempted = False

    def read_stage(self, stage: str) -> Version | None:
        """Return the version that has the label ``stage``, or None when no version has it."""
        try:
            reply = self.client.get_secret_value(SecretId=self.secret_id, VersionStage=stage)
        except _BOTOCORE_ERRORS as error:
            if client_error_code(error) == "ResourceNotFoundException" and stage != AWSCURRENT:
                return None
            raise _failure("GetSecretValue", error) from error
        return _version_from_reply(reply)

    def read_current(self) -> Version:
        """Return the AWSCURRENT version; a missing secret raises RotationError."""
        version = self.read_stage(AWSCURRENT)
        if version is None:  # pragma: no cover - read_stage raises for AWSCURRENT
            msg = f"the secret {self.secret_id} has no AWSCURRENT version"
            raise RotationError(msg)
        return version

    def read_version(self, version_id: str) -> Version | None:
        """Return the version ``version_id``, or None when the secret has no such version.

        The version is read by id alone, because moto 5.2 rejects a VersionId
        together with a VersionStage that the version does not hold.
        """
        try:
            reply = self.client.get_secret_value(SecretId=self.secret_id, VersionId=version_id)
        except _BOTOCORE_ERRORS as error:
            if client_error_code(error) == "ResourceNotFoundException":
                return None
            raise _failure("GetSecretValue", error) from error
        return _version_from_reply(reply)

    def version_stages(self) -> dict[str, tuple[str, ...]]:
        """Return the staging labels of every version (DescribeSecret's VersionIdsToStages).

        Unlike GetSecretValue, this also lists a version that has no value yet,
        such as the AWSPENDING version that RotateSecret creates before it
        invokes the rotation function.
        """
        try:
            reply = self.client.describe_secret(SecretId=self.secret_id)
        except _BOTOCORE_ERRORS as error:
            raise _failure("DescribeSecret", error) from error
        versions = reply.get("VersionIdsToStages") or {}
        return {str(version): tuple(stages) for version, stages in versions.items()}

    def put_pending(
        self, token: str, secret_string: str, rotation_token: str | None = None
    ) -> None:
        """Write ``secret_string`` as version ``token`` with the AWSPENDING label.

        The label moves from any other version to this one. Retried with the same
        token and value, the call changes nothing (PutSecretValue is idempotent).
        """
        parameters: dict[str, object] = {
            "SecretId": self.secret_id,
            "ClientRequestToken": token,
            "SecretString": secret_string,
            "VersionStages": [AWSPENDING],
        }
        if rotation_token is not None:
            parameters["RotationToken"] = rotation_token
        self.write_attempted = True
        try:
            self.client.put_secret_value(**parameters)
        except _BOTOCORE_ERRORS as error:
            raise _failure("PutSecretValue", error) from error

    def promote(self, version_id: str, expected_current: str) -> None:
        """Move AWSCURRENT from ``expected_current`` to ``version_id``, or raise a conflict.

        Secrets Manager moves AWSPREVIOUS to ``expected_current`` in the same call.
        """
        self.write_attempted = True
        try:
            self.client.update_secret_version_stage(
                SecretId=self.secret_id,
                VersionStage=AWSCURRENT,
                MoveToVersionId=version_id,
                RemoveFromVersionId=expected_current,
            )
        except _BOTOCORE_ERRORS as error:
            if client_error_code(error) != "InvalidParameterException":
                raise _failure("UpdateSecretVersionStage", error) from error
        else:
            return
        # Either AWSCURRENT moved to another version, or an earlier attempt of this
        # same call succeeded and only its reply was lost (botocore retries).
        now_current = self.read_current()
        if now_current.version_id == version_id:
            return
        msg = (
            f"another rotation moved AWSCURRENT from {expected_current} to "
            f"{now_current.version_id} while this one ran; this run did not change AWSCURRENT "
            "and no key was lost. Check the secret, then rotate again if it is still needed"
        )
        raise RotationConflictError(msg)

    def release_pending(self, version_id: str) -> None:
        """Remove AWSPENDING from ``version_id`` if the label is still there; best effort.

        A version left with AWSPENDING that is not AWSCURRENT makes Secrets Manager
        treat a rotation as still in progress.
        """
        try:
            self.client.update_secret_version_stage(
                SecretId=self.secret_id, VersionStage=AWSPENDING, RemoveFromVersionId=version_id
            )
        except _BOTOCORE_ERRORS:
            # The label already moved to another version, or the call failed; the
            # next rotation moves the label anyway.
            return

    def rotate(
        self,
        token: str,
        new_key: str | None = None,
        *,
        dry_run: bool = False,
        min_current_age: timedelta = timedelta(0),
    ) -> RotationResult:
        """Rotate the pair once, or finish the rotation that an earlier run with ``token`` began.

        ``new_key`` is generated when None. Raises RotationError,
        RotationConflictError when another rotation got in the way, or
        CurrentTooRecentError when AWSCURRENT replaced another version less than
        ``min_current_age`` ago.
        """
        existing = self.read_version(token)
        if existing is not None:
            return self._resume(existing, new_key, dry_run=dry_run, min_current_age=min_current_age)

        current_version = self.read_current()
        current = parse_version(current_version, self.fields, AWSCURRENT)
        self._check_no_rotation_in_progress(current_version, current)
        self._check_current_age(current_version, min_current_age)
        key = new_key if new_key is not None else generate_key()
        _, text = build_next_pair(current, key, self.fields)
        if dry_run:
            return RotationResult(version_id=token, outcome="dry_run")

        self.put_pending(token, text)
        self._promote_and_release(token, current_version.version_id)
        return RotationResult(version_id=token, outcome="rotated")

    def _promote_and_release(self, token: str, expected_current: str) -> None:
        try:
            self.promote(token, expected_current)
        finally:
            # On success the label is no longer needed; after a conflict it must
            # not stay on a version that will never become current.
            self.release_pending(token)

    def _check_no_rotation_in_progress(self, current_version: Version, current: KeyPair) -> None:
        """Raise RotationConflictError when the AWSPENDING version builds on the current key.

        Such a version belongs to a rotation that is running (the Lambda rotation
        function, another operator) or was interrupted and can still be finished.
        A pending version built from an older key can never be finished, so it is
        ignored, and this rotation takes its label.
        """
        pending_version = self.read_stage(AWSPENDING)
        if pending_version is None or pending_version.version_id == current_version.version_id:
            return
        try:
            pending = parse_version(pending_version, self.fields, AWSPENDING)
        except RotationError:
            return
        if builds_on(pending, current):
            msg = (
                f"a rotation is in progress: version {pending_version.version_id} holds "
                "AWSPENDING and was built from the current key. Wait for it to finish; if it "
                f"was interrupted, finish it with: sidecar rotate --secret-id {self.secret_id} "
                f"--client-request-token {pending_version.version_id}"
            )
            raise RotationConflictError(msg)

    def _check_current_age(self, current_version: Version, min_age: timedelta) -> None:
        """Raise CurrentTooRecentError when AWSCURRENT replaced a version less than ``min_age`` ago.

        Until every sidecar serves the AWSCURRENT pair, clients may still use the
        current key of the pair before it, which is the previous key now. A
        rotation moves that key out of the pair.
        """
        age = current_version.age()
        if min_age <= timedelta(0) or age is None or age >= min_age:
            return
        # The first version of a secret replaced nothing that a sidecar served.
        # Secrets Manager gives AWSPREVIOUS to the version that AWSCURRENT leaves.
        if not any(AWSPREVIOUS in labels for labels in self.version_stages().values()):
            return
        # NOTE: CreatedDate is when the version was written, not when it became
        # AWSCURRENT. A version that waited as AWSPENDING (an interrupted rotation
        # finished later) looks older than it is to this check.

        # The Date header has whole seconds, so the age of a version written in the
        # last second can come out negative.
        shown_age = max(age, timedelta(0)).total_seconds()
        msg = (
            f"the AWSCURRENT version {current_version.version_id} was written {shown_age:.0f} s "
            f"ago, less than the {min_age.total_seconds():.0f} s that sidecars may take to serve "
            "it. Clients may still use its previous key, and rotating now would remove that key "
            "from the pair"
        )
        wait = min_age - age
        raise CurrentTooRecentError(msg, wait)

    def _resume(
        self,
        existing: Version,
        new_key: str | None,
        *,
        dry_run: bool,
        min_current_age: timedelta,
    ) -> RotationResult:
        """Finish or confirm the rotation whose version ``existing`` an earlier run wrote."""
        token = existing.version_id
        written = parse_version(existing, self.fields, "requested")
        if new_key is not None and not same_key(new_key, written.current):
            msg = (
                f"version {token} already exists with a different key; use a new "
                "--client-request-token for a new key"
            )
            raise RotationError(msg, EXIT_INVALID)
        if AWSCURRENT in existing.stages:
            return RotationResult(version_id=token, outcome="already_current")

        current_version = self.read_current()
        current = parse_version(current_version, self.fields, AWSCURRENT)
        require_built_on(written, current, token)
        self._check_current_age(current_version, min_current_age)
        if dry_run:
            return RotationResult(version_id=token, outcome="dry_run")
        self._promote_and_release(token, current_version.version_id)
        return RotationResult(version_id=token, outcome="resumed")
