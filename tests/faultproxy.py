"""A fault-injecting HTTP proxy between the sidecar and the Secrets Manager emulator.

The proxy forwards every request to the emulator until a test switches it to a
fault with ``inject``; ``clear`` switches it back. It records each request it
receives (arrival time, the fault applied, the access key id that signed it), so
a test can count retries and check that one poll makes exactly one call.

AWS error replies use the shape of the Secrets Manager JSON protocol: status 400
with a ``__type`` field and a message, the shape that botocore maps to
``ClientError.response["Error"]["Code"]``.
"""

from __future__ import annotations

import asyncio
import enum
import json
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from tests.background import BackgroundServer

# Headers that describe one connection, not the message, so they are not copied
# from one side of the proxy to the other. aiohttp sets its own framing headers.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
    }
)
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
# A malformed or truncated reply is the real reply without this many final bytes,
# so it still contains the SecretString: a test can check that no code path logs
# the raw reply.
CUT_BYTES = 24
AMZ_JSON = "application/x-amz-json-1.1"


class Fault(enum.Enum):
    """What the proxy does with each request."""

    NONE = "none"
    THROTTLING = "throttling"
    INTERNAL_ERROR = "internal_error"
    UNAVAILABLE = "unavailable"
    RESET = "reset"
    REFUSED = "refused"
    SLOW = "slow"
    TRUNCATED = "truncated"
    MALFORMED = "malformed"
    ACCESS_DENIED = "access_denied"
    NOT_FOUND = "not_found"
    MARKED_FOR_DELETION = "marked_for_deletion"
    DECRYPTION_FAILURE = "decryption_failure"
    EXPIRED_TOKEN = "expired_token"


@dataclass(frozen=True)
class AwsError:
    """An AWS error reply: HTTP status, ``__type`` and message."""

    status: int
    code: str
    message: str


# Error codes and messages follow the GetSecretValue API reference.
AWS_ERRORS = {
    Fault.THROTTLING: AwsError(400, "ThrottlingException", "Rate exceeded"),
    Fault.INTERNAL_ERROR: AwsError(
        500, "InternalServiceError", "An error occurred on the server side."
    ),
    Fault.ACCESS_DENIED: AwsError(
        400,
        "AccessDeniedException",
        "User is not authorized to perform: secretsmanager:GetSecretValue",
    ),
    Fault.NOT_FOUND: AwsError(
        400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret."
    ),
    Fault.MARKED_FOR_DELETION: AwsError(
        400,
        "InvalidRequestException",
        "You can't perform this operation on the secret because it was marked for deletion.",
    ),
    Fault.DECRYPTION_FAILURE: AwsError(
        400,
        "DecryptionFailure",
        "Secrets Manager can't decrypt the protected secret text using the provided KMS key.",
    ),
    Fault.EXPIRED_TOKEN: AwsError(
        400, "ExpiredTokenException", "The security token included in the request is expired"
    ),
}


@dataclass(frozen=True)
class SeenRequest:
    """One request that reached the proxy."""

    # POSIX time (time.time()) of arrival, comparable with the sidecar's log timestamps.
    at: float
    fault: Fault
    access_key_id: str | None
    session_token: str | None


class FaultProxy(BackgroundServer):
    """Forward to ``upstream`` or reply with the fault chosen by the test.

    Every method is safe to call from the test's thread.
    """

    def __init__(self, upstream: str, *, slow_seconds: float = 3.0) -> None:
        super().__init__("fault-proxy")
        self.upstream = upstream.rstrip("/")
        # A slow reply waits this long before it is forwarded; set it above the
        # sidecar's read timeout. The wait also bounds how long a handler lives.
        self.slow_seconds = slow_seconds
        self._lock = threading.Lock()
        self._fault = Fault.NONE
        # time.time() of the last inject or clear, None before the first.
        self.switched_at: float | None = None
        self._seen: list[SeenRequest] = []
        self._session: aiohttp.ClientSession | None = None

    def application(self) -> web.Application:
        """Build the application: every method and path goes to one handler."""
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", self._handle)
        return application

    @property
    def fault(self) -> Fault:
        """Return the fault applied to new requests."""
        with self._lock:
            return self._fault

    def inject(self, fault: Fault) -> float:
        """Apply ``fault`` to every new request and return the time.time() of the switch.

        REFUSED stops listening. Requests that arrive after the returned time get
        ``fault``; those before it got the previous one.
        """
        if fault is Fault.REFUSED:
            switched_at = self._switch(fault)
            self.stop_listening()
            return switched_at
        # Listen first when leaving REFUSED, so no connection is refused after the switch.
        self.listen()
        return self._switch(fault)

    def clear(self) -> float:
        """Forward every request again and return the time.time() of the switch."""
        return self.inject(Fault.NONE)

    def _switch(self, fault: Fault) -> float:
        with self._lock:
            self._fault = fault
            self.switched_at = time.time()
            return self.switched_at

    def requests(self, since: float = 0.0, until: float = float("inf")) -> list[SeenRequest]:
        """Return the requests that arrived from ``since`` to ``until`` (time.time() values)."""
        with self._lock:
            return [seen for seen in self._seen if since <= seen.at <= until]

    def count(
        self, since: float = 0.0, until: float = float("inf"), fault: Fault | None = None
    ) -> int:
        """Count the requests from ``since`` to ``until`` that got ``fault`` (any if None)."""
        return sum(
            1 for seen in self.requests(since, until) if fault is None or seen.fault is fault
        )

    async def on_close(self) -> None:
        """Close the upstream client session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._record(request)
        body = await request.read()
        aws_error = AWS_ERRORS.get(fault)
        if aws_error is not None:
            return _aws_error_response(aws_error)
        if fault is Fault.UNAVAILABLE:
            # What a load balancer in front of the service sends: not JSON.
            return web.Response(
                status=503, text="503 Service Temporarily Unavailable", content_type="text/html"
            )
        if fault in {Fault.RESET, Fault.REFUSED}:
            # A REFUSED request came in on a connection opened before the listener
            # closed; it is dropped like a reset.
            _reset(request)
            return web.Response()
        if fault is Fault.SLOW:
            await asyncio.sleep(self.slow_seconds)

        status, headers, payload = await self._forward(request, body)
        if fault is Fault.MALFORMED:
            # A complete reply whose JSON is cut short: the framing is valid, the
            # document is not.
            return web.Response(status=status, headers=headers, body=payload[:-CUT_BYTES])
        if fault is Fault.TRUNCATED:
            return await _truncated(request, status, headers, payload)
        return web.Response(status=status, headers=headers, body=payload)

    def _record(self, request: web.Request) -> Fault:
        """Record the request and return the fault it gets, both under one lock."""
        match = _CREDENTIAL.search(request.headers.get("Authorization", ""))
        with self._lock:
            seen = SeenRequest(
                at=time.time(),
                fault=self._fault,
                access_key_id=match.group(1) if match else None,
                session_token=request.headers.get("X-Amz-Security-Token"),
            )
            self._seen.append(seen)
            return seen.fault

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in _HOP_BY_HOP
        }
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as reply:
            payload = await reply.read()
            reply_headers = {
                name: value
                for name, value in reply.headers.items()
                if name.lower() not in _HOP_BY_HOP
            }
            return reply.status, reply_headers, payload


def _aws_error_response(error: AwsError) -> web.Response:
    body = json.dumps({"__type": error.code, "message": error.message})
    return web.Response(
        status=error.status,
        body=body.encode(),
        headers={
            "Content-Type": AMZ_JSON,
            "x-amzn-RequestId": str(uuid.uuid4()),
            "X-Amzn-ErrorType": error.code,
        },
    )


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP RST instead of a reply."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger on with a zero timeout makes close() send RST, not FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _truncated(
    request: web.Request, status: int, headers: dict[str, str], payload: bytes
) -> web.StreamResponse:
    """Announce the full Content-Length, send less, then close the connection."""
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = len(payload)
    await response.prepare(request)
    await response.write(payload[:-CUT_BYTES])
    transport = request.transport
    if transport is not None:
        # close() sends what is buffered, then FIN: the client reads a short body.
        transport.close()
    return response
