"""The keys API: a small aiohttp low-level server on the keys listener.

Each request passes the checks in a fixed order: the connection limit, the body
size, the hop guard (no proxied callers), then the token for every route but
/healthz and /readyz, then the route and method. Responses to /v1/keys are bytes
prepared once per secret version, so the request path does no I/O beyond the
socket and never calls AWS. The one exception is POST /v1/refresh, which wakes
the poller and waits for its result.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from sidecar.cache import KeyCache
from sidecar.listener import MAX_BODY_SIZE
from sidecar.refresh import Refresher, Throttled, TimedOut
from sidecar.verify import InvalidBodyError, match_key, parse_verify_body

if TYPE_CHECKING:
    from prometheus_client.metrics import Counter

    from sidecar.metrics import Metrics

log = structlog.get_logger("sidecar.api")

TOKEN_HEADER = "X-Sidecar-Token"  # noqa: S105 - a header name, not a secret
# Headers that only a proxy adds. The keys are for the containers of this task,
# so a request that crossed a proxy is rejected before anything else.
HOP_HEADERS = ("X-Forwarded-For", "Forwarded")
# A client on a connection over SIDECAR_MAX_CONNECTIONS is asked to retry after
# this many seconds, on a new connection.
RETRY_AFTER_SECONDS = 1
# Seconds to receive a request body of at most MAX_BODY_SIZE bytes.
BODY_TIMEOUT = 5.0

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

_JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}
# The maximum wait that GET /v1/keys?wait= accepts, in seconds.
MAX_WAIT = 300.0


def json_response(status: int, document: dict[str, object], **headers: str) -> web.Response:
    """Build a JSON response with Cache-Control: no-store."""
    body = json.dumps(document, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, headers={**_JSON_HEADERS, **headers})


def error_response(status: int, message: str, **headers: str) -> web.Response:
    """Build the ``{"error": message}`` response used for every failure."""
    return json_response(status, {"error": message}, **headers)


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Tell whether an If-None-Match header value matches ``etag`` (weak comparison)."""
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        tag = tag.removeprefix("W/")
        if tag == etag:
            return True
    return False


def _over_limit_response() -> web.Response:
    response = error_response(
        429,
        "too many open connections to the keys API; retry on a new connection",
        **{"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
    # Closing frees the connection's slot, so the retry can be admitted.
    return _closing(response)


async def _read_body(request: web.BaseRequest) -> web.Response | None:
    """Read a request body of at most MAX_BODY_SIZE bytes, or return the rejection.

    The body stays cached in the request, so a handler can still read it.
    """
    too_large = f"the request body is larger than {MAX_BODY_SIZE} bytes"
    length = request.content_length
    if length is not None and length > MAX_BODY_SIZE:
        return _closing(error_response(413, too_large))
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            await request.read()
    except web.HTTPRequestEntityTooLarge:
        # A chunked body has no Content-Length, so read() finds the size.
        response = error_response(413, too_large)
    except TimeoutError:
        response = error_response(
            408, f"the request body did not arrive within {BODY_TIMEOUT:g} seconds"
        )
    except (web.RequestPayloadError, ConnectionError):
        # A malformed chunk, or the client closed the connection mid-body.
        response = error_response(400, "the request body is malformed or incomplete")
    else:
        return None
    return _closing(response)


def _closing(response: web.Response) -> web.Response:
    # aiohttp sends Connection: close and closes the connection after the reply,
    # because the rest of a rejected body is never read, and a connection over the
    # limit must free its slot.
    response.force_close()
    return response


class KeysApi:
    """Request handler of the keys listener."""

    def __init__(
        self,
        cache: KeyCache,
        token: str | None,
        metrics: Metrics,
        refresher: Refresher | None = None,
    ) -> None:
        self._cache = cache
        self._token = token.encode() if token is not None else None
        self._metrics = metrics
        self._refresher = refresher
        self._request_counters: dict[tuple[str, int], Counter] = {}
        # Resolved once, so a verify request does not look up its label.
        self._verify_counters = {
            result: metrics.verify_results.labels(result=result)
            for result in ("current", "previous", "invalid")
        }
        # Connections opened beyond SIDECAR_MAX_CONNECTIONS, filled by KeysServer.
        self.over_limit: set[web.RequestHandler] = set()
        # route -> method -> handler. Routes without a token check are public.
        self._public: dict[str, dict[str, Handler]] = {
            "/healthz": {"GET": self.healthz, "HEAD": self.healthz},
            "/readyz": {"GET": self.readyz, "HEAD": self.readyz},
        }
        self._protected: dict[str, dict[str, Handler]] = {
            "/v1/keys": {"GET": self.keys, "HEAD": self.keys},
            "/v1/verify": {"POST": self.verify},
        }
        if refresher is not None:
            self._protected["/v1/refresh"] = {"POST": self.refresh}

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Handle one request and count it by route and status code."""
        try:
            route, response = await self._dispatch(request)
        except (asyncio.CancelledError, web.HTTPException):
            raise
        except Exception as error:  # noqa: BLE001 - the last line of defence, logged below
            # A bug must not turn into aiohttp's plain-text 500 with a traceback:
            # reply in JSON, count it, and log the class and the raising line. The
            # message and traceback are not logged, because they may quote request data.
            route = self._route_label(request.path)
            frame = traceback.extract_tb(error.__traceback__)[-1]
            where = f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"
            log.error("request.failed", route=route, error=type(error).__name__, where=where)  # noqa: TRY400
            response = error_response(500, "internal error; see the sidecar log")
        self._count(route, response.status)
        return response

    async def _dispatch(self, request: web.BaseRequest) -> tuple[str, web.StreamResponse]:
        headers = request.headers
        path = request.path
        # Most requests have no body and an admitted connection, so they skip the await.
        if request.body_exists or request.protocol in self.over_limit:
            rejection = await self._admit(request)
            if rejection is not None:
                return self._route_label(path), rejection
        for name in HOP_HEADERS:
            if name in headers:
                message = (
                    f"the {name} header is not accepted: the keys API serves only "
                    "callers inside this task, never a proxied request"
                )
                return self._route_label(path), error_response(400, message)

        methods = self._public.get(path)
        if methods is None:
            rejection = self._check_token(headers.get(TOKEN_HEADER))
            if rejection is not None:
                return self._route_label(path), rejection
            methods = self._protected.get(path)
            if methods is None:
                # The path is not echoed: a misconfigured client may put a key in it.
                return "other", error_response(404, "no such route; the keys are at GET /v1/keys")

        handler = methods.get(request.method)
        if handler is None:
            allowed = ", ".join(methods)
            message = f"method {request.method} is not allowed on {path}; expected {allowed}"
            return path, error_response(405, message, Allow=allowed)
        return path, await handler(request)

    async def _admit(self, request: web.BaseRequest) -> web.Response | None:
        if request.protocol in self.over_limit:
            return _over_limit_response()
        return await _read_body(request)

    def _check_token(self, presented: str | None) -> web.Response | None:
        expected = self._token
        if expected is None:
            return None
        if presented is None:
            return error_response(
                403, f"missing {TOKEN_HEADER} header; send the token from the token file"
            )
        # compare_digest takes time independent of where the values differ.
        if not hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected):
            return error_response(403, f"invalid {TOKEN_HEADER} header")
        return None

    def _route_label(self, path: str) -> str:
        # Unknown paths share one label so a scan cannot grow the metric without bound.
        known = path in self._public or path in self._protected
        return path if known else "other"

    def _count(self, route: str, status: int) -> None:
        counter = self._request_counters.get((route, status))
        if counter is None:
            counter = self._metrics.requests.labels(route=route, code=str(status))
            self._request_counters[(route, status)] = counter
        counter.inc()

    async def keys(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve the key pair, 304 when If-None-Match contains its ETag, or 503.

        With ``?wait=SECONDS`` and a matching If-None-Match, the request waits up to
        that long for a new version and returns it as soon as it loads (long poll).
        """
        wait_text = request.query.get("wait")
        wait = None if wait_text is None else parse_wait(wait_text)
        if wait_text is not None and wait is None:
            return error_response(
                400,
                f"invalid wait parameter; expected seconds greater than 0 and at most {MAX_WAIT:g}",
            )
        unavailable = self._unavailable()
        if unavailable is not None:
            return unavailable
        snapshot = self._cache.state.snapshot
        assert snapshot is not None  # noqa: S101 - _unavailable() checked it
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is None or not etag_matches(if_none_match, snapshot.etag):
            return self._keys_response()
        if wait is None:
            return _not_modified(snapshot.etag)
        return await self._wait_for_new_version(snapshot.version_id, wait)

    async def _wait_for_new_version(self, version_id: str, wait: float) -> web.Response:
        watchers = self._metrics.watchers
        watchers.inc()
        try:
            await self._cache.wait_for_change(wait)
        finally:
            watchers.dec()
        if self._cache.closed:
            return error_response(503, "shutting down; send the request again after a restart")
        unavailable = self._unavailable()
        if unavailable is not None:
            return unavailable
        current = self._cache.state.snapshot
        assert current is not None  # noqa: S101 - _unavailable() checked it
        if current.version_id == version_id:
            return _not_modified(current.etag)
        return self._keys_response()

    def _keys_response(self) -> web.Response:
        state = self._cache.state
        assert state.snapshot is not None  # noqa: S101 - callers check it first
        return web.Response(body=state.body, headers={**_JSON_HEADERS, "ETag": state.snapshot.etag})

    def _unavailable(self) -> web.Response | None:
        if self._cache.state.snapshot is None:
            return error_response(503, self._not_loaded_message())
        if self._cache.past_max_staleness():
            return error_response(503, self._too_stale_message())
        return None

    async def verify(self, request: web.BaseRequest) -> web.StreamResponse:
        """Tell whether the key in the body is the current key, the previous one, or neither."""
        # _dispatch has read the body already, at most MAX_BODY_SIZE bytes, so this
        # returns the cached bytes.
        body = await request.read()
        try:
            key = parse_verify_body(body)
        except InvalidBodyError as error:
            return error_response(400, str(error))

        unavailable = self._unavailable()
        if unavailable is not None:
            return unavailable
        snapshot = self._cache.state.snapshot
        assert snapshot is not None  # noqa: S101 - _unavailable() checked it
        matched = match_key(snapshot, key)
        self._verify_counters[matched or "invalid"].inc()
        return json_response(200, {"valid": matched is not None, "matched": matched})

    async def refresh(self, _request: web.BaseRequest) -> web.StreamResponse:
        """Poll Secrets Manager now and return the served version and whether it changed."""
        assert self._refresher is not None  # noqa: S101 - the route exists only with one
        outcome = await self._refresher.refresh()
        if isinstance(outcome, Throttled):
            return error_response(
                429,
                f"a refresh ran less than SIDECAR_REFRESH_MIN_INTERVAL ago; "
                f"retry in {outcome.retry_after} s",
                **{"Retry-After": str(outcome.retry_after)},
            )
        if isinstance(outcome, TimedOut):
            return error_response(
                504, f"the poll of Secrets Manager did not finish within {outcome.seconds:g} s"
            )
        served = self._cache.state.snapshot
        served_version = None if served is None else served.version_id
        if outcome.error is not None:
            if served_version is None:
                keeping = "; no keys are loaded yet"
            elif self._cache.past_max_staleness():
                keeping = (
                    "; the last successful poll is older than SIDECAR_MAX_STALENESS, so "
                    f"/v1/keys returns 503 instead of version {served_version}"
                )
            else:
                keeping = f"; still serving version {served_version}"
            return error_response(
                502, f"the poll of Secrets Manager failed with {outcome.error.error_class}{keeping}"
            )
        return json_response(200, {"version_id": served_version, "changed": outcome.changed})

    async def healthz(self, _request: web.BaseRequest) -> web.StreamResponse:
        """Liveness: 200 while the process serves requests."""
        return json_response(200, {"status": "ok"})

    async def readyz(self, _request: web.BaseRequest) -> web.StreamResponse:
        """Readiness: 200 once keys are loaded and not past SIDECAR_MAX_STALENESS."""
        state = self._cache.state
        if state.snapshot is None:
            return error_response(503, self._not_loaded_message())
        if self._cache.past_max_staleness():
            return error_response(503, self._too_stale_message())
        return json_response(
            200,
            {"status": "ready", "version_id": state.snapshot.version_id, "stale": state.stale},
        )

    def close(self) -> None:
        """Release every waiting long poll with 503 now, so that they do not delay the shutdown."""
        self._cache.close()

    def _not_loaded_message(self) -> str:
        last_error = self._cache.state.last_error
        if last_error is None:
            return "keys not loaded yet: the first poll of Secrets Manager has not finished"
        return f"keys not loaded yet: the last poll of Secrets Manager failed with {last_error}"

    def _too_stale_message(self) -> str:
        age = self._cache.seconds_since_success() or 0.0
        last_error = self._cache.state.last_error or "an error"
        return (
            f"keys are stale: the last successful poll was {age:.0f} s ago, more than "
            f"SIDECAR_MAX_STALENESS ({self._cache.max_staleness:g} s); polls fail with {last_error}"
        )


def parse_wait(text: str) -> float | None:
    """Return the seconds of a ``wait`` query parameter, or None if it is out of range."""
    try:
        seconds = float(text)
    except ValueError:
        return None
    # NaN fails the comparison too.
    if not (0 < seconds <= MAX_WAIT) or not math.isfinite(seconds):
        return None
    return seconds


def _not_modified(etag: str) -> web.Response:
    return web.Response(status=304, headers={"ETag": etag, "Cache-Control": "no-store"})
