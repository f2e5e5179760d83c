"""Throughput and latency of GET /v1/keys against a bare aiohttp server and nginx."""

from __future__ import annotations

from typing import Any

from bench.loops import LOOPS
from bench.options import Options, Outcome
from bench.processes import cpu_seconds, start_bare_server, start_nginx
from bench.rig import TOKEN, Rig
from bench.wrk import Load, WrkResult, run_wrk
from tests.helpers import http_request

# Each measurement follows a short run whose numbers are dropped, so that
# connection setup and the first allocations are not measured.
WARMUP_S = 1.0
TOKEN_HEADERS = {"X-Sidecar-Token": TOKEN}
TOKEN_LOAD = Load(headers=TOKEN_HEADERS)


def measure(url: str, connections: int, options: Options) -> WrkResult:
    """Warm up, then run wrk with GET and the token for the measured duration."""
    run_wrk(url, TOKEN_LOAD, connections=connections, duration_s=WARMUP_S)
    return run_wrk(url, TOKEN_LOAD, connections=connections, duration_s=options.duration_s)


def measure_with_cpu(
    url: str, pid: int, connections: int, options: Options, load: Load = TOKEN_LOAD
) -> dict[str, Any]:
    """Measure like ``measure`` and add the CPU time per request of process ``pid``.

    CPU time per request depends far less than requests per second on what
    else runs on a shared machine, so it compares servers more steadily.
    """
    run_wrk(url, load, connections=connections, duration_s=WARMUP_S)
    cpu_before = cpu_seconds(pid)
    result = run_wrk(url, load, connections=connections, duration_s=options.duration_s)
    cpu_used = cpu_seconds(pid) - cpu_before
    cpu_per_request = cpu_used / result.requests * 1e6 if result.requests else None
    return {**result.to_json(), "cpu_us_per_request": cpu_per_request}


def error_notes(name: str, result: WrkResult) -> list[str]:
    """Return a note for each kind of failed request in ``result``."""
    notes = []
    if result.status_errors:
        notes.append(
            f"{name} at {result.connections} connections: "
            f"{result.status_errors} replies with status 400 or above"
        )
    if result.socket_errors:
        notes.append(
            f"{name} at {result.connections} connections: {result.socket_errors} socket errors"
        )
    return notes


def keys_throughput(rig: Rig, options: Options) -> Outcome:
    """Measure GET /v1/keys on the sidecar, a bare aiohttp server and nginx, interleaved."""
    sidecar = rig.sidecar()
    reply = sidecar.get("/v1/keys")
    if reply.status != 200:
        return Outcome(skipped=f"GET /v1/keys returned {reply.status}")
    body, etag = reply.body, reply.headers["ETag"]
    bare = start_bare_server(rig.workdir, body, etag)
    rig.servers.append(bare)
    nginx = start_nginx(rig.workdir, body)
    rig.servers.append(nginx)
    outcome = Outcome()
    urls = {
        "sidecar": sidecar.url("/v1/keys"),
        "bare aiohttp": bare.url("/v1/keys"),
        "nginx": nginx.url("/v1/keys"),
    }
    pids = {"sidecar": sidecar.pid, "bare aiohttp": bare.process.pid, "nginx": nginx.process.pid}
    for name, url in urls.items():
        served = http_request(url, headers=TOKEN_HEADERS).body
        if served != body:
            return Outcome(skipped=f"{name} served other bytes than the sidecar")

    results: dict[str, dict[str, object]] = {name: {} for name in urls}
    # Interleaving the servers at each connection count spreads the noise of
    # the shared machine across all three instead of loading it onto one.
    for connections in options.connections:
        for name, url in urls.items():
            run = measure_with_cpu(url, pids[name], connections, options)
            results[name][str(connections)] = run
            outcome.notes += error_notes(name, WrkResult.from_json(run))
    bare.stop()
    nginx.stop()
    rig.stop_sidecar(sidecar)
    outcome.data = {"results": results, "body_bytes": len(body)}
    return outcome


def event_loop(rig: Rig, options: Options) -> Outcome:
    """Measure GET /v1/keys on the sidecar run on asyncio's event loop and on uvloop."""
    modules = {"asyncio": "sidecar", "uvloop": "bench.uvloop_sidecar"}
    sidecars = {loop: rig.sidecar(module=modules[loop]) for loop in LOOPS}
    outcome = Outcome()
    results: dict[str, dict[str, object]] = {loop: {} for loop in LOOPS}
    for connections in options.connections:
        for loop, sidecar in sidecars.items():
            run = measure_with_cpu(sidecar.url("/v1/keys"), sidecar.pid, connections, options)
            results[loop][str(connections)] = run
            outcome.notes += error_notes(f"sidecar on {loop}", WrkResult.from_json(run))
    for sidecar in sidecars.values():
        rig.stop_sidecar(sidecar)
    outcome.data = {"results": results}
    return outcome
