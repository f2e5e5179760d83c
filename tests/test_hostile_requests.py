"""Hostile clients on the keys listener: too many connections, large or slow requests."""

from __future__ import annotations

import asyncio
import http.client
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager

import pytest

from sidecar.api import KeysApi
from sidecar.app import start_listeners
from sidecar.cache import KeyCache
from sidecar.listener import (
    HOP_LIMIT,
    KEEPALIVE_TIMEOUT,
    MAX_BODY_SIZE,
    KeysServer,
    keys_socket,
)
from sidecar.metrics import Metrics
from sidecar.settings import load_settings
from tests.helpers import TOKEN, HttpReply, SidecarProcess, http_request, wait_until
from tools.emulator import free_port

KEYS_REQUEST = (
    f"GET /v1/keys HTTP/1.1\r\nHost: sidecar\r\nX-Sidecar-Token: {TOKEN}\r\n\r\n".encode()
)
# Long enough for a reply that the server sends right away, short enough to fail fast.
READ_TIMEOUT = 10.0


def connect(sidecar: SidecarProcess) -> socket.socket:
    """Open a TCP connection to the keys listener."""
    return socket.create_connection(("127.0.0.1", sidecar.port), timeout=READ_TIMEOUT)


def read_reply(connection: socket.socket) -> HttpReply:
    """Read one HTTP response from ``connection`` with the standard library's parser."""
    response = http.client.HTTPResponse(connection)
    response.begin()
    body = response.read()
    return HttpReply(response.status, dict(response.getheaders()), body)


def exchange(connection: socket.socket, request: bytes) -> HttpReply:
    """Send raw request bytes and read the response."""
    connection.sendall(request)
    return read_reply(connection)


def closed_by_server(connection: socket.socket) -> bool:
    """Tell whether the server closed ``connection`` (recv returns EOF or a reset)."""
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True


def open_admitted(sidecar: SidecarProcess) -> socket.socket:
    """Open a connection that the server admitted, shown by a 200 on /v1/keys.

    Connections of earlier requests may take a moment to be counted as closed, so
    a 429 here is retried on a new connection.
    """
    opened: list[socket.socket] = []

    def admitted() -> bool:
        connection = connect(sidecar)
        if exchange(connection, KEYS_REQUEST).status == 200:
            opened.append(connection)
            return True
        connection.close()
        return False

    wait_until(admitted, 10.0, interval=0.1, message="no connection was admitted")
    return opened[0]


@contextmanager
def admitted_connections(sidecar: SidecarProcess, count: int) -> Iterator[list[socket.socket]]:
    """Hold ``count`` admitted keep-alive connections open for the block."""
    connections = [open_admitted(sidecar) for _ in range(count)]
    try:
        yield connections
    finally:
        for connection in connections:
            connection.close()


def test_connection_over_limit_gets_429(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """A connection beyond SIDECAR_MAX_CONNECTIONS gets 429, and admitted ones keep working."""
    sidecar = start_sidecar(make_secret(), max_connections=2)

    with admitted_connections(sidecar, 2) as admitted, closing(connect(sidecar)) as extra:
        rejected = exchange(extra, KEYS_REQUEST)
        extra_closed = closed_by_server(extra)
        later = [exchange(connection, KEYS_REQUEST).status for connection in admitted]

    assert rejected.status == 429
    assert rejected.headers["Retry-After"] == "1"
    assert rejected.headers["Connection"] == "close"
    assert "too many open connections" in rejected.json()["error"]
    assert extra_closed
    assert later == [200, 200]


def test_slot_freed_when_connection_closes(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """Once an admitted connection closes, a new connection is admitted again."""
    sidecar = start_sidecar(make_secret(), max_connections=1)

    with admitted_connections(sidecar, 1), closing(connect(sidecar)) as extra:
        while_full = exchange(extra, KEYS_REQUEST).status
    with closing(open_admitted(sidecar)) as after:
        after_close = exchange(after, KEYS_REQUEST).status

    assert while_full == 429
    assert after_close == 200


def test_over_limit_counted_in_metrics(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """A 429 is counted in sidecar_requests_total like every other reply."""
    sidecar = start_sidecar(make_secret(), max_connections=1, metrics_port=-1)

    with admitted_connections(sidecar, 1), closing(connect(sidecar)) as extra:
        exchange(extra, KEYS_REQUEST)
    metrics = http_request(sidecar.metrics_url()).body.decode()

    assert 'sidecar_requests_total{code="429",route="/v1/keys"} 1.0' in metrics


@pytest.mark.parametrize(
    ("name", "request_bytes"),
    [
        (
            "content-length",
            b"POST /v1/keys HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000,
        ),
        (
            "chunked",
            b"POST /v1/keys HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"800\r\n" + b"a" * 0x800 + b"\r\n") * 3
            + b"0\r\n\r\n",
        ),
    ],
)
def test_body_over_limit_gets_413(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    name: str,
    request_bytes: bytes,
) -> None:
    """A body over 4 KiB gets 413 and the connection is closed, however it is framed."""
    sidecar = start_sidecar(make_secret())

    with closing(connect(sidecar)) as connection:
        reply = exchange(connection, request_bytes)
        closed = closed_by_server(connection)

    assert reply.status == 413, name
    assert reply.json() == {"error": f"the request body is larger than {MAX_BODY_SIZE} bytes"}
    assert reply.headers["Connection"] == "close"
    assert closed


def test_body_at_limit_is_accepted(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """A body of exactly 4 KiB passes the size check and the request is served."""
    sidecar = start_sidecar(make_secret())
    request = (
        f"GET /v1/keys HTTP/1.1\r\nHost: x\r\nX-Sidecar-Token: {TOKEN}\r\n"
        f"Content-Length: {MAX_BODY_SIZE}\r\n\r\n"
    ).encode() + b"a" * MAX_BODY_SIZE

    with closing(connect(sidecar)) as connection:
        reply = exchange(connection, request)

    assert reply.status == 200


def test_slow_body_gets_408(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """A body that stops arriving gets 408 and the connection is closed."""
    sidecar = start_sidecar(make_secret())
    request = b"POST /v1/keys HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123"

    with closing(connect(sidecar)) as connection:
        reply = exchange(connection, request)
        closed = closed_by_server(connection)

    assert reply.status == 408
    assert "did not arrive" in reply.json()["error"]
    assert closed


LONG = b"a" * 5000
TOO_MANY_HEADERS = b"".join(b"X-Filler-%d: 1\r\n" % number for number in range(40))


@pytest.mark.parametrize(
    ("name", "request_bytes", "expected_status"),
    [
        ("long header value", b"GET /v1/keys HTTP/1.1\r\nX-Long: " + LONG + b"\r\n\r\n", 431),
        ("long header name", b"GET /v1/keys HTTP/1.1\r\nX-" + LONG + b": 1\r\n\r\n", 431),
        ("long request line", b"GET /" + LONG + b" HTTP/1.1\r\n\r\n", 431),
        ("too many headers", b"GET /v1/keys HTTP/1.1\r\n" + TOO_MANY_HEADERS + b"\r\n", 400),
        ("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ],
)
def test_oversized_or_malformed_headers_rejected(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    name: str,
    request_bytes: bytes,
    expected_status: int,
) -> None:
    """Requests that break the parser's limits get a JSON 431 or 400, and nothing is logged."""
    sidecar = start_sidecar(make_secret())

    with closing(connect(sidecar)) as connection:
        reply = exchange(connection, request_bytes)
        closed = closed_by_server(connection)

    assert reply.status == expected_status, name
    assert reply.headers["Content-Type"] == "application/json"
    assert set(reply.json()) == {"error"}
    assert b"aaaa" not in reply.body
    assert closed
    # aiohttp's own handler logs these at ERROR with a traceback and the bytes.
    assert "aaaa" not in sidecar.log_text()
    assert [event["event"] for event in sidecar.log_events() if event["level"] != "info"] == []


def test_metrics_listener_parse_errors_not_logged(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """Malformed requests to the metrics listener get 400 and leave no log line."""
    sidecar = start_sidecar(make_secret(), metrics_port=-1)
    requests = [
        b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nContent-Length: aaaa\r\n\r\n",
    ]

    statuses = []
    for request in requests:
        with closing(
            socket.create_connection(("127.0.0.1", sidecar.metrics_port), timeout=READ_TIMEOUT)
        ) as connection:
            statuses.append(exchange(connection, request).status)
    scrape = http_request(sidecar.metrics_url())

    assert statuses == [400, 400]
    assert scrape.status == 200
    assert "aaaa" not in sidecar.log_text()
    assert [event["event"] for event in sidecar.log_events() if event["level"] != "info"] == []


def test_slow_headers_cut_off(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """A client that sends its headers a byte at a time is disconnected by the server."""
    sidecar = start_sidecar(make_secret())
    started = time.monotonic()
    deadline = started + KEEPALIVE_TIMEOUT + 10

    with closing(connect(sidecar)) as connection:
        connection.sendall(b"GET /v1/keys HTTP/1.1\r\n")
        cut_off = False
        while time.monotonic() < deadline:
            try:
                connection.sendall(b"X")
            except OSError:
                cut_off = True
                break
            time.sleep(0.25)
    elapsed = time.monotonic() - started

    assert cut_off, f"still connected after {elapsed:.1f} s"
    assert elapsed >= KEEPALIVE_TIMEOUT - 1
    assert sidecar.get("/healthz").status == 200


def test_non_loopback_bind_logs_warning(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """Binding the keys listener wider, with SIDECAR_ALLOW_NON_LOOPBACK=true, logs a warning."""
    sidecar = start_sidecar(make_secret(), host="0.0.0.0", allow_non_loopback="true")

    warnings = sidecar.events_named("sidecar.non_loopback_bind")

    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["host"] == "0.0.0.0"


def test_loopback_bind_logs_no_warning(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """The default loopback bind logs no non-loopback warning."""
    sidecar = start_sidecar(make_secret())

    assert sidecar.events_named("sidecar.non_loopback_bind") == []


@pytest.mark.parametrize(
    ("host", "level", "option"),
    [
        ("127.0.0.1", socket.IPPROTO_IP, socket.IP_TTL),
        ("::1", socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS),
    ],
)
async def test_keys_listener_hop_limit(host: str, level: int, option: int) -> None:
    """A connection accepted by the keys listener inherits the hop limit of 1."""
    settings = load_settings(
        {
            "SIDECAR_SECRET_ID": "hop-limit",
            "SIDECAR_TOKEN": TOKEN,
            "SIDECAR_HOST": host,
            "SIDECAR_PORT": str(free_port()),
            "SIDECAR_METRICS_PORT": "0",
        }
    )
    metrics = Metrics()
    runners = await start_listeners(settings, KeysApi(KeyCache(), TOKEN, metrics), metrics)
    assert runners is not None
    server = runners[0].server
    assert isinstance(server, KeysServer)
    try:
        _, writer = await asyncio.open_connection(host, settings.port)
        for _ in range(100):
            if server.connections:
                break
            await asyncio.sleep(0.01)
        accepted = server.connections[0].transport
        assert accepted is not None
        accepted_value = accepted.get_extra_info("socket").getsockopt(level, option)
        writer.close()
        await writer.wait_closed()
    finally:
        for runner in runners:
            await runner.cleanup()

    assert accepted_value == HOP_LIMIT


@pytest.mark.parametrize(
    ("host", "level", "option"),
    [
        ("127.0.0.1", socket.IPPROTO_IP, socket.IP_TTL),
        ("::1", socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS),
        # IPv4 traffic on a dual-stack IPv6 socket uses the IPv4 option.
        ("::1", socket.IPPROTO_IP, socket.IP_TTL),
    ],
)
def test_listening_socket_hop_limit(host: str, level: int, option: int) -> None:
    """The keys listener's own socket has a hop limit of 1, where a plain socket does not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as plain, keys_socket(host, 0) as listener:
        default = plain.getsockopt(level, option)
        value = listener.getsockopt(level, option)

    assert default != HOP_LIMIT
    assert value == HOP_LIMIT


def test_compressed_body_not_decoded(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """A body sent as gzip that is not gzip gets a JSON 400, and nothing is logged above debug."""
    sidecar = start_sidecar(make_secret())
    body = b"this is not gzip"
    request = (
        f"POST /v1/verify HTTP/1.1\r\nHost: x\r\nX-Sidecar-Token: {TOKEN}\r\n"
        f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    with closing(connect(sidecar)) as connection:
        reply = exchange(connection, request)
    sidecar.stop()

    assert reply.status == 400
    assert "not valid JSON" in reply.json()["error"]
    assert [event for event in sidecar.log_events() if event["level"] in {"warning", "error"}] == []
