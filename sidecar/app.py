"""Run the sidecar: bind the listeners, poll in the background, shut down cleanly."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable
from contextlib import suppress

import structlog
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from sidecar import __version__
from sidecar.api import KeysApi
from sidecar.cache import KeyCache
from sidecar.listener import (
    KEEPALIVE_TIMEOUT,
    LINGERING_TIME,
    MAX_FIELD_SIZE,
    MAX_HEADERS,
    MAX_LINE_SIZE,
    KeysServer,
    keys_socket,
)
from sidecar.metrics import Metrics
from sidecar.output import OutputFile
from sidecar.poller import Poller
from sidecar.refresh import Refresher
from sidecar.settings import Settings, is_loopback
from sidecar.source import SecretSource

log = structlog.get_logger("sidecar.app")

# In-flight requests get this long to finish after SIGTERM. ECS waits 30 s by
# default (stopTimeout) before it sends SIGKILL.
SHUTDOWN_TIMEOUT = 5.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def run(settings: Settings, token: str | None) -> int:
    """Open the Secrets Manager client, serve until a stop signal, then close the client."""
    source = SecretSource(
        settings.secret_id,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
    )
    async with source:
        status = await serve(settings, token, source)
    # Every task should be finished by now. One still pending is a shutdown bug:
    # asyncio.run() would cancel it without a trace, so it is logged by name.
    current = asyncio.current_task()
    pending = sorted(task.get_name() for task in asyncio.all_tasks() if task is not current)
    if pending:
        log.warning("shutdown.tasks_pending", tasks=pending)
    log.info("shutdown.complete", exit_status=status, pending_tasks=len(pending))
    return status


async def serve(settings: Settings, token: str | None, source: SecretSource) -> int:
    """Bind the listeners, poll in the background until SIGTERM or SIGINT, return the status."""
    metrics = Metrics()
    cache = KeyCache(settings.max_staleness)
    metrics.track_readiness(cache)
    output = OutputFile(settings.output_file) if settings.output_file is not None else None
    poller = Poller(settings, source, cache, metrics, output=output)
    # A refresh may wait for a poll under way and then its own poll, each bounded
    # by the client's connect and read timeouts.
    refresh_timeout = 2 * (settings.connect_timeout + settings.read_timeout) + 1
    refresher = Refresher(poller.request_poll, settings.refresh_min_interval, refresh_timeout)
    api = KeysApi(cache, token, metrics, refresher)

    runners = await start_listeners(settings, api, metrics)
    if runners is None:
        return 1
    # Start-up leaves about 80,000 long-lived objects (imported modules,
    # botocore's service model), and a full garbage collection scans them all,
    # which took about 30 ms on a 2-core machine. Freezing them takes them out of
    # later collections, which shortens those pauses: in the benchmark at 256
    # connections the p99 and the maximum latency fell (docs/benchmarks.md).
    # Reference counting still frees them.
    gc.collect()
    gc.freeze()
    log.info(
        "sidecar.started",
        version=__version__,
        secret_id=settings.secret_id,
        host=settings.host,
        port=settings.port,
        metrics_port=settings.metrics_port or None,
        poll_interval_s=settings.poll_interval,
        token_required=token is not None,
    )
    if token is None:
        log.warning(
            "sidecar.token_disabled",
            detail="SIDECAR_REQUIRE_TOKEN=false: any process in the task can read the keys",
        )

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    # Strong references keep the tasks alive: the loop only holds weak ones.
    poll_task = asyncio.create_task(poller.run(), name="sidecar-poller")
    stop_task = asyncio.create_task(stop.wait(), name="sidecar-stop")
    try:
        await asyncio.wait({poll_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        log.info("shutdown.started")
        # A second SIGTERM or SIGINT during the drain (Ctrl-C in a terminal sends
        # SIGINT to the whole group, then a supervisor may send SIGTERM) must not
        # kill the process with the default handler. These handlers only log, and
        # asyncio.run() removes them when it closes the loop.
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, _log_repeated_signal, signum)
        # 1. Release waiting long polls at once; they could otherwise hold the
        #    shutdown for up to SHUTDOWN_TIMEOUT.
        api.close()
        # 2. Stop accepting connections, then give in-flight requests up to
        #    SHUTDOWN_TIMEOUT seconds before they are cancelled.
        for runner in runners:
            await runner.cleanup()
        # 3. Stop polling. run() closes the AWS client after this returns.
        crashed = poll_task.done() and not poll_task.cancelled()
        for task in (poll_task, stop_task):
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
    if crashed:
        # Poller.run only returns by raising, which is a bug: exit non-zero.
        log.error("poller.crashed", error=repr(poll_task.exception()))
        return 1
    return 0


def _log_repeated_signal(signum: int) -> None:
    log.info("shutdown.signal_ignored", signal=signal.Signals(signum).name)


async def start_listeners(
    settings: Settings, api: KeysApi, metrics: Metrics
) -> list[web.BaseRunner] | None:
    """Bind the keys listener and, unless turned off, the metrics listener.

    Returns the runners to clean up at shutdown, or None when a bind failed.
    """
    server = KeysServer(
        api.handle,
        max_connections=settings.max_connections,
        over_limit=api.over_limit,
        # A client that disconnects cancels its handler, so a long poll that nobody
        # waits for any more does not hold its place until the wait ends.
        handler_cancellation=True,
        access_log=None,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        lingering_time=LINGERING_TIME,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
        max_headers=MAX_HEADERS,
        # No client needs to compress a body of at most 4 KiB. With decompression
        # on, a body that is not valid gzip fails again while aiohttp drains it
        # after the reply, and aiohttp logs a traceback. Off, it is invalid JSON.
        auto_decompress=False,
    )
    keys_runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await keys_runner.setup()
    runners: list[web.BaseRunner] = [keys_runner]
    addresses = [(settings.host, settings.port)]
    if settings.metrics_port != 0:
        metrics_runner = web.AppRunner(
            metrics_application(metrics, api), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await metrics_runner.setup()
        runners.append(metrics_runner)
        addresses.append((settings.metrics_host, settings.metrics_port))

    for runner, (host, port) in zip(runners, addresses, strict=True):
        site: web.BaseSite
        try:
            if runner is keys_runner:
                # A socket of our own, because TCPSite cannot set the hop limit.
                site = web.SockSite(runner, keys_socket(host, port))
            else:
                site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
        except OSError as error:
            # The errno text (address in use, permission denied) is the whole explanation.
            log.error("server.bind_failed", host=host, port=port, error=error.strerror)  # noqa: TRY400
            for started in runners:
                await started.cleanup()
            return None
    if not is_loopback(settings.host):
        log.warning(
            "sidecar.non_loopback_bind",
            host=settings.host,
            detail=(
                "SIDECAR_ALLOW_NON_LOOPBACK=true: the keys listener accepts connections "
                "from other hosts; its replies carry a hop limit of 1, so only hosts on "
                "the same link receive them"
            ),
        )
    return runners


def metrics_application(metrics: Metrics, api: KeysApi) -> web.Application:
    """Build the metrics listener: /metrics, /healthz and /readyz, no key material."""
    application = web.Application()
    application.router.add_get("/metrics", metrics_handler(metrics))
    application.router.add_get("/healthz", api.healthz)
    application.router.add_get("/readyz", api.readyz)
    return application


def metrics_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Build the /metrics handler, which renders the registry with prometheus-client."""

    async def handle(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(metrics.registry), headers={"Content-Type": content_type})

    return handle
