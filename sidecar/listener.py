"""The keys listener's socket and aiohttp server, hardened against hostile clients.

The limits set here:

- A hop limit of 1 (IP_TTL, IPV6_UNICAST_HOPS) on the listening socket, which
  accepted sockets inherit, so that no router forwards a reply.
- A connection limit: a connection opened while SIDECAR_MAX_CONNECTIONS others are
  open is marked over the limit, and ``KeysApi`` replies 429 to its requests.
- A body limit of MAX_BODY_SIZE bytes, which ``KeysApi`` enforces with 413.
- aiohttp's parser limits on the request line, header fields and header count.
  A request that breaks them gets a JSON 431 or 400 and the connection is closed.
- aiohttp's keep-alive timer, which also bounds how long a client may take to
  send a request's headers (see ``KEEPALIVE_TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

log = structlog.get_logger("sidecar.listener")

# Idle keep-alive connections are closed after this many seconds. aiohttp starts
# this timer when a connection opens and again after each response, and closes
# the connection when it fires while no complete request has arrived
# (RequestHandler._process_keepalive in aiohttp 3.14). So it is also the deadline
# for a client that sends its headers byte by byte.
KEEPALIVE_TIMEOUT = 15.0
# aiohttp's limits on the request line, on one header field (name and value) and
# on the number of header fields. Together they cap the header block at 128 KiB.
MAX_LINE_SIZE = 4096
MAX_FIELD_SIZE = 4096
MAX_HEADERS = 32
# After a response, aiohttp reads and discards an unread request body for at most
# this many seconds before it closes the connection.
LINGERING_TIME = 2.0
# Request bodies larger than this get 413. No route of the keys API needs more.
MAX_BODY_SIZE = 4096
# The hop limit on the keys listener's packets: the reply reaches the host itself
# and hosts on the same link, and no router forwards it.
HOP_LIMIT = 1
LISTEN_BACKLOG = 128


def keys_socket(host: str, port: int) -> socket.socket:
    """Create the keys listener's socket, bound to ``host:port`` with a hop limit of 1.

    The options are set before bind() and listen(), so the SYN-ACK carries the hop
    limit too. Raises OSError when the address cannot be bound.
    """
    is_ipv6 = ipaddress.ip_address(host).version == 6
    family = socket.AF_INET6 if is_ipv6 else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if is_ipv6:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, HOP_LIMIT)
            # A dual-stack socket bound to :: also carries IPv4 traffic, which
            # Linux sends with the IP_TTL of the same socket.
            listener.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, HOP_LIMIT)
        else:
            listener.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, HOP_LIMIT)
        listener.bind((host, port))
        listener.listen(LISTEN_BACKLOG)
        listener.setblocking(False)  # noqa: FBT003 - the socket API takes a positional flag
    except BaseException:
        listener.close()
        raise
    return listener


class KeysServer(web.Server):
    """aiohttp's low-level server with a limit on open connections.

    aiohttp calls ``connection_made`` and ``connection_lost`` once per TCP
    connection, so counting there costs nothing per request. The decision is taken
    once, when the connection opens: a connection opened while the limit was
    reached is added to ``over_limit``, and the keys API replies to each of its
    requests with 429 and closes it. Connections admitted earlier are never
    affected, and each request pays one set lookup. The decision cannot wait for
    the request line, because then an admitted keep-alive connection could start
    getting 429 when others open.
    """

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        max_connections: int,
        over_limit: set[web.RequestHandler],
        handler_cancellation: bool = False,
        **kwargs: Any,  # noqa: ANN401 - aiohttp's RequestHandler options, passed through
    ) -> None:
        super().__init__(
            handler,
            request_factory=self._make_bounded_request,
            handler_cancellation=handler_cancellation,
            **kwargs,
        )
        self.max_connections = max_connections
        self.open_connections = 0
        self.over_limit = over_limit
        self._handler_options = kwargs
        self._event_loop = asyncio.get_running_loop()

    def _make_bounded_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # With client_max_size, BaseRequest.read() raises HTTPRequestEntityTooLarge
        # as soon as the body passes the limit, chunked bodies included.
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            self._event_loop,
            client_max_size=MAX_BODY_SIZE,
        )

    def __call__(self) -> web.RequestHandler:
        """Build the protocol for one new connection (asyncio's protocol factory)."""
        return KeysRequestHandler(self, loop=self._event_loop, **self._handler_options)

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        """Count the new connection and mark it if it is over the limit."""
        super().connection_made(handler, transport)
        self.open_connections += 1
        if self.open_connections > self.max_connections:
            self.over_limit.add(handler)

    def connection_lost(
        self, handler: web.RequestHandler, exc: BaseException | None = None
    ) -> None:
        """Stop counting a closed connection."""
        super().connection_lost(handler, exc)
        self.open_connections -= 1
        self.over_limit.discard(handler)


class KeysRequestHandler(web.RequestHandler):
    """aiohttp's connection protocol, with JSON replies to requests that fail to parse.

    aiohttp replies to a request it cannot parse with a text/plain 400 that quotes up
    to 100 bytes of the offending line, and logs it at ERROR with a traceback.
    Here the reply is a JSON error that quotes nothing, an oversized line gets
    431, and the rejection is logged at DEBUG only, so that a local process cannot
    fill the log or get header bytes written to it.
    """

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Build the reply to a request that aiohttp could not parse or serve."""
        if status != 400:
            # 500 (a bug in a handler) and 504 keep aiohttp's handling and its
            # ERROR log with the traceback, which is needed to find the bug.
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, LineTooLong):
            status = 431
            text = f"the request line or a header field is longer than {MAX_FIELD_SIZE} bytes"
        else:
            text = f"malformed HTTP request, or more than {MAX_HEADERS} header fields"
        log.debug("request.rejected", status=status, error=type(exc).__name__)
        body = json.dumps({"error": text}, separators=(",", ":")).encode()
        response = web.Response(
            status=status,
            body=body,
            headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
        )
        response.force_close()
        return response
