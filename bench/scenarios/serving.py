"""Throughput and latency of GET /v1/keys against a bare aiohttp server and nginx."""

from __future__ import annotations

import statistics
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


def compare(
    targets: dict[str, tuple[str, int]], options: Options, load: Load = TOKEN_LOAD
) -> tuple[dict[str, dict[str, object]], list[str]]:
    """Measure each target (URL and process id) in turn, round after round.

    Interleaving the servers spreads the load changes of a shared machine
    across all of them instead of loading them onto one. Returns the median of
    each figure over the rounds, by server and connection count, and the notes
    about failed requests.
    """
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    notes: list[str] = []
    for connections in options.connections:
        for _ in range(options.rounds):
            for name, (url, pid) in targets.items():
                run = measure_with_cpu(url, pid, connections, options, load)
                runs.setdefault((name, connections), []).append(run)
                notes += error_notes(name, WrkResult.from_json(run))
    results: dict[str, dict[str, object]] = {name: {} for name in targets}
    for (name, connections), measured in runs.items():
        results[name][str(connections)] = median_run(measured)
    return results, notes


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the median of each figure over ``runs``; error counts are added up."""
    combined: dict[str, Any] = {"rounds": len(runs)}
    for key in runs[0]:
        values = [run[key] for run in runs if run[key] is not None]
        if key in {"status_errors", "socket_errors"}:
            combined[key] = sum(values)
        else:
            combined[key] = statistics.median(values) if values else None
    return combined


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
    urls = {
        "sidecar": sidecar.url("/v1/keys"),
        "bare aiohttp": bare.url("/v1/keys"),
        "nginx": nginx.url("/v1/keys"),
    }
    for name, url in urls.items():
        served = http_request(url, headers=TOKEN_HEADERS).body
        if served != body:
            return Outcome(skipped=f"{name} served other bytes than the sidecar")

    targets = {
        "sidecar": (urls["sidecar"], sidecar.pid),
        "bare aiohttp": (urls["bare aiohttp"], bare.process.pid),
        "nginx": (urls["nginx"], nginx.process.pid),
    }
    results, notes = compare(targets, options)
    bare.stop()
    nginx.stop()
    rig.stop_sidecar(sidecar)
    return Outcome(data={"results": results, "body_bytes": len(body)}, notes=notes)


def gc_freeze(rig: Rig, options: Options) -> Outcome:
    """Measure GET /v1/keys on the sidecar with and without gc.freeze() at start-up."""
    modules = {"frozen": "sidecar", "not frozen": "bench.unfrozen_sidecar"}
    sidecars = {name: rig.sidecar(module=module) for name, module in modules.items()}
    targets = {name: (sidecar.url("/v1/keys"), sidecar.pid) for name, sidecar in sidecars.items()}
    results, notes = compare(targets, options)
    for sidecar in sidecars.values():
        rig.stop_sidecar(sidecar)
    return Outcome(data={"results": results}, notes=notes)


def event_loop(rig: Rig, options: Options) -> Outcome:
    """Measure GET /v1/keys on the sidecar run on asyncio's event loop and on uvloop."""
    modules = {"asyncio": "sidecar", "uvloop": "bench.uvloop_sidecar"}
    sidecars = {loop: rig.sidecar(module=modules[loop]) for loop in LOOPS}
    targets = {loop: (sidecar.url("/v1/keys"), sidecar.pid) for loop, sidecar in sidecars.items()}
    results, notes = compare(targets, options)
    for sidecar in sidecars.values():
        rig.stop_sidecar(sidecar)
    return Outcome(data={"results": results}, notes=notes)
