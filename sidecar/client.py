"""A small async client of the sidecar's keys API, for Python applications in the same task.

Two ways to use it::

    async with SidecarClient(token_file="/run/sidecar/token") as client:
        # Ask the sidecar for each incoming key; the application never stores the pair.
        result = await client.verify(presented_key)

        # Or fetch the pair once, keep it current with a long poll, and check locally.
        async for keys in client.watch():
            ...  # called with the first pair and again after every rotation
        client.check(presented_key)

The client uses only aiohttp and the standard library, so it can be copied into an
application that does not install the sidecar package.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import aiohttp

DEFAULT_URL = "http://127.0.0.1:8910"
TOKEN_HEADER = "X-Sidecar-Token"  # noqa: S105 - a header name, not a secret
DEFAULT_WAIT = 60.0
MAX_WAIT = 300.0

log = logging.getLogger("sidecar.client")

Match = Literal["current", "previous"] | None


@dataclass(frozen=True, slots=True)
class Keys:
    """One key pair served by the sidecar, with its version and ETag."""

    current: str = field(repr=False)
    previous: str | None = field(repr=False)
    version_id: str
    created_date: datetime | None
    loaded_at: datetime
    stale: bool
    etag: str

    @classmethod
    def from_document(cls, document: Mapping[str, Any], etag: str) -> Keys:
        """Build Keys from a GET /v1/keys body and its ETag header."""
        created = document.get("created_date")
        return cls(
            current=document["current"],
            previous=document.get("previous"),
            version_id=document["version_id"],
            created_date=None if created is None else datetime.fromisoformat(created),
            loaded_at=datetime.fromisoformat(document["loaded_at"]),
            stale=bool(document.get("stale", False)),
            etag=etag,
        )


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Whether a key is valid, and which key of the pair it matched."""

    valid: bool
    matched: Match


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """The version served after POST /v1/refresh, and whether that poll changed it."""

    version_id: str | None
    changed: bool


class SidecarClientError(Exception):
    """Raised when the sidecar cannot be reached or returns an error status.

    ``status`` is the HTTP status, or None when no response arrived. ``retry_after``
    is the Retry-After header of a 429 response in seconds.
    """

    def __init__(
        self, message: str, status: int | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class SidecarClient:
    """Fetches, caches and watches the key pair, and verifies keys, over loopback HTTP."""

    def __init__(  # noqa: PLR0913 - every option is keyword-only and has a default
        self,
        base_url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        token_file: str | Path | None = None,
        session: aiohttp.ClientSession | None = None,
        request_timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        if token is not None and token_file is not None:
            msg = "pass token or token_file, not both"
            raise ValueError(msg)
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._token_file = Path(token_file) if token_file is not None else None
        self._session = session
        self._owns_session = session is None
        self._request_timeout = request_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._rng = random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self.keys: Keys | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    async def fetch(self) -> Keys:
        """GET /v1/keys, store the pair in ``keys`` and return it."""
        status, headers, document = await self._request("GET", "/v1/keys")
        if status != 200:
            raise _error(status, headers, document)
        self.keys = Keys.from_document(document, headers.get("ETag", ""))
        return self.keys

    async def wait_for_change(self, wait: float = DEFAULT_WAIT) -> Keys | None:
        """Long-poll for a version newer than ``keys``; return it, or None when ``wait`` ends.

        Without a cached pair this is the same as fetch().
        """
        if not 0 < wait <= MAX_WAIT:
            msg = f"wait must be greater than 0 and at most {MAX_WAIT:g} seconds, not {wait!r}"
            raise ValueError(msg)
        if self.keys is None:
            return await self.fetch()
        status, headers, document = await self._request(
            "GET",
            f"/v1/keys?wait={wait:g}",
            headers={"If-None-Match": self.keys.etag},
            timeout=wait + self._request_timeout,
        )
        if status == 304:
            return None
        if status != 200:
            raise _error(status, headers, document)
        self.keys = Keys.from_document(document, headers.get("ETag", ""))
        return self.keys

    async def watch(self, wait: float = DEFAULT_WAIT) -> AsyncIterator[Keys]:
        """Yield the pair now and again after every change, for as long as the caller iterates.

        Errors (the sidecar restarting, keys not loaded yet, a refused connection)
        are logged and retried with exponential backoff and jitter; a success resets
        the backoff. A response that retrying cannot fix (400, 404, 405) raises
        SidecarClientError.
        """
        failures = 0
        last_yielded: str | None = None
        while True:
            try:
                keys = await (self.fetch() if self.keys is None else self.wait_for_change(wait))
            except SidecarClientError as error:
                if error.status in {400, 404, 405}:
                    raise
                failures += 1
                delay = self._backoff(failures)
                log.warning("sidecar watch failed (%s); retrying in %.2f s", error, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            if keys is not None and keys.version_id != last_yielded:
                last_yielded = keys.version_id
                yield keys

    async def verify(self, key: str) -> VerifyResult:
        """Ask the sidecar whether ``key`` is the current or the previous key (POST /v1/verify)."""
        status, headers, document = await self._request(
            "POST", "/v1/verify", json_body={"key": key}
        )
        if status != 200:
            raise _error(status, headers, document)
        return VerifyResult(valid=bool(document["valid"]), matched=document["matched"])

    def check(self, key: str) -> VerifyResult:
        """Check ``key`` against the cached pair without a request, in constant time.

        Raises SidecarClientError when no pair has been fetched yet.
        """
        keys = self.keys
        if keys is None:
            msg = "no key pair cached yet; call fetch() or watch() first"
            raise SidecarClientError(msg)
        presented = _digest(key)
        # Both comparisons always run, on digests of equal length.
        is_current = hmac.compare_digest(presented, _digest(keys.current))
        is_previous = keys.previous is not None and hmac.compare_digest(
            presented, _digest(keys.previous)
        )
        if is_current:
            return VerifyResult(valid=True, matched="current")
        if is_previous:
            return VerifyResult(valid=True, matched="previous")
        return VerifyResult(valid=False, matched=None)

    async def refresh(self) -> RefreshResult:
        """Ask the sidecar to poll Secrets Manager now (POST /v1/refresh)."""
        status, headers, document = await self._request("POST", "/v1/refresh")
        if status != 200:
            raise _error(status, headers, document)
        return RefreshResult(version_id=document["version_id"], changed=bool(document["changed"]))

    async def _request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json_body: object = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the timeout of one HTTP request
    ) -> tuple[int, Mapping[str, str], dict[str, Any]]:
        """Send one request; on 403 read the token file again and retry once."""
        for attempt in range(2):
            sent = dict(headers or {})
            token = self._load_token(reload=attempt > 0)
            if token is not None:
                sent[TOKEN_HEADER] = token
            status, reply_headers, document = await self._send(
                method, path, sent, json_body, timeout or self._request_timeout
            )
            # The token file may have been replaced (a new task's sidecar wrote a new token).
            if status != 403 or self._token_file is None:
                break
        return status, reply_headers, document

    async def _send(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        json_body: object,
        timeout: float,  # noqa: ASYNC109 - the timeout of one HTTP request
    ) -> tuple[int, Mapping[str, str], dict[str, Any]]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.request(
                method,
                self._base_url + path,
                headers=headers,
                json=json_body,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                body = await response.read()
                document = _decode(body, response.content_type)
                return response.status, response.headers.copy(), document
        except (aiohttp.ClientError, TimeoutError) as error:
            reason = type(error).__name__ if isinstance(error, TimeoutError) else str(error)
            msg = f"cannot reach the sidecar at {self._base_url}: {reason}"
            raise SidecarClientError(msg) from error

    def _load_token(self, *, reload: bool) -> str | None:
        if self._token_file is None or (self._token is not None and not reload):
            return self._token
        try:
            self._token = self._token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            msg = f"cannot read the token file {str(self._token_file)!r}: {error.strerror}"
            raise SidecarClientError(msg) from error
        return self._token

    def _backoff(self, failures: int) -> float:
        ceiling = min(self._backoff_max, self._backoff_initial * 2.0 ** (failures - 1))
        return ceiling * self._rng.uniform(0.5, 1.0)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _decode(body: bytes, content_type: str) -> dict[str, Any]:
    # Every body that the keys API sends is a JSON object; 304 has none.
    if not body or content_type != "application/json":
        return {}
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _error(
    status: int, headers: Mapping[str, str], document: Mapping[str, Any]
) -> SidecarClientError:
    message = document.get("error")
    retry_after = headers.get("Retry-After")
    return SidecarClientError(
        f"the sidecar returned {status}: {message or 'no error message'}",
        status=status,
        retry_after=int(retry_after) if retry_after and retry_after.isdigit() else None,
    )
