"""Read the secret from Secrets Manager and classify every way that can fail."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore import exceptions as botocore_errors

from sidecar.errors import InvalidSecretError, PollError
from sidecar.region import resolve_region

# The closed set of failure reasons used in logs and in sidecar_poll_errors_total.
REASONS = (
    "throttled",
    "access_denied",
    "not_found",
    "marked_for_deletion",
    "decryption_failed",
    "invalid_secret",
    "timeout",
    "connection",
    "server_error",
    "credentials",
    "other",
)

# AWS error codes that back off and retry, and those retried only at the normal
# interval because retrying sooner cannot help. Codes from the GetSecretValue API
# reference and the common AWS error list.
_RETRYABLE_CODES = {
    "ThrottlingException": "throttled",
    "Throttling": "throttled",
    "TooManyRequestsException": "throttled",
    "RequestLimitExceeded": "throttled",
    "InternalServiceError": "server_error",
    "InternalFailure": "server_error",
    "ServiceUnavailable": "server_error",
    # An expired session token is replaced by the credential provider on the next
    # call, so a quick retry is the right response.
    "ExpiredTokenException": "credentials",
    "ExpiredToken": "credentials",
    "RequestExpired": "credentials",
}
_PERMANENT_CODES = {
    "AccessDeniedException": "access_denied",
    "AccessDenied": "access_denied",
    "ResourceNotFoundException": "not_found",
    # GetSecretValue returns InvalidRequestException for a secret that is
    # scheduled for deletion.
    "InvalidRequestException": "marked_for_deletion",
    "DecryptionFailure": "decryption_failed",
    "UnrecognizedClientException": "credentials",
    "InvalidClientTokenId": "credentials",
    "InvalidSignatureException": "credentials",
}


@dataclass(frozen=True, slots=True)
class SecretValue:
    """The parts of a GetSecretValue reply that the sidecar uses."""

    version_id: str
    created_date: datetime | None
    secret_string: str | None

    def __repr__(self) -> str:
        return f"SecretValue(version_id={self.version_id!r}, created_date={self.created_date!r})"


class SecretSource:
    """One long-lived aiobotocore Secrets Manager client.

    botocore's own retries are turned off (one attempt per call), so the poller's
    backoff is the only retry policy and each poll makes exactly one request.
    """

    def __init__(
        self,
        secret_id: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        session: AioSession | None = None,
    ) -> None:
        self.secret_id = secret_id
        self._session = session or get_session()
        resolve_region(self._session)
        self._config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": 1},
        )
        self._stack = AsyncExitStack()
        self._client: Any = None

    def region(self) -> str | None:
        """Return the region that botocore resolved from the environment, if any."""
        return resolve_region(self._session)

    async def __aenter__(self) -> Self:
        try:
            await self._open_client()
        except Exception as error:
            if classify_error(error).reason != "credentials":
                raise
            # botocore resolves credentials when it creates the client, and the
            # ECS credentials endpoint can be unreachable for a while at task
            # start. fetch() opens the client instead, so until then each poll
            # fails with the credentials reason and the process keeps running.
        return self

    async def _open_client(self) -> None:
        self._client = await self._stack.enter_async_context(
            self._session.create_client("secretsmanager", config=self._config)
        )

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()
        self._client = None

    async def fetch(self, stage: str = "AWSCURRENT") -> SecretValue:
        """Call GetSecretValue for ``stage`` once, or raise PollError."""
        try:
            if self._client is None:
                await self._open_client()
            # The stage is named explicitly: without it, some implementations
            # (moto 5.2) can return the version that was current before the last
            # UpdateSecretVersionStage.
            reply = await self._client.get_secret_value(SecretId=self.secret_id, VersionStage=stage)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise classify_error(error) from error
        version_id = reply.get("VersionId")
        if not isinstance(version_id, str) or not version_id:
            # botocore turns a 200 reply whose body is not JSON into an empty
            # result instead of raising, so a reply cut short or garbled on the
            # way lands here. That is a fault of the transport or the service,
            # not of the secret, so it backs off like a 5xx.
            raise PollError(
                "server_error",
                "MalformedReply",
                "the GetSecretValue reply has no VersionId: its body was empty or not JSON",
                retryable=True,
            )
        secret_string = reply.get("SecretString")
        if not isinstance(secret_string, str):
            secret_string = None
        created = reply.get("CreatedDate")
        return SecretValue(
            version_id=version_id,
            created_date=created if isinstance(created, datetime) else None,
            secret_string=secret_string,
        )


def classify_error(error: BaseException) -> PollError:  # noqa: PLR0911 - one branch per class
    """Map an exception from one GetSecretValue call to a PollError."""
    if isinstance(error, PollError):
        return error
    if isinstance(error, InvalidSecretError):
        return PollError("invalid_secret", "InvalidSecret", str(error), retryable=False)
    if isinstance(error, botocore_errors.ClientError):
        return _classify_client_error(error)
    name = type(error).__name__
    if isinstance(
        error, botocore_errors.NoCredentialsError | botocore_errors.PartialCredentialsError
    ):
        return PollError("credentials", name, str(error), retryable=True)
    if isinstance(error, botocore_errors.CredentialRetrievalError):
        return PollError("credentials", name, str(error), retryable=True)
    if isinstance(error, botocore_errors.ConnectTimeoutError | botocore_errors.ReadTimeoutError):
        return PollError("timeout", name, str(error), retryable=True)
    if isinstance(error, TimeoutError):
        return PollError("timeout", name, "the request timed out", retryable=True)
    if isinstance(
        error,
        botocore_errors.EndpointConnectionError
        | botocore_errors.ConnectionClosedError
        | botocore_errors.ConnectionError
        | botocore_errors.HTTPClientError
        | aiohttp.ClientError
        | ConnectionError,
    ):
        return PollError("connection", name, str(error), retryable=True)
    if isinstance(error, botocore_errors.BotoCoreError | ValueError):
        # For example a reply body that botocore could not parse.
        return PollError("server_error", name, str(error), retryable=True)
    return PollError("other", name, str(error), retryable=False)


def _classify_client_error(error: botocore_errors.ClientError) -> PollError:
    details = error.response.get("Error", {})
    code = str(details.get("Code") or "Unknown")
    message = str(details.get("Message") or "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _RETRYABLE_CODES:
        return PollError(_RETRYABLE_CODES[code], code, message, retryable=True)
    if code in _PERMANENT_CODES:
        return PollError(_PERMANENT_CODES[code], code, message, retryable=False)
    if status == 429:
        return PollError("throttled", code, message, retryable=True)
    if isinstance(status, int) and status >= 500:
        return PollError("server_error", code, message, retryable=True)
    return PollError("other", code, message, retryable=False)
