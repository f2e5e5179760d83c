"""Scenarios for the application-facing endpoints: verify, long-poll watch and refresh.

Each scenario first checks that the endpoint exists. On a build that does not
have it yet, the scenario is skipped with a note that gives the reason.
"""

from __future__ import annotations

import json

from bench.options import Options, Outcome
from bench.processes import BenchSidecar, start_bare_server
from bench.rig import Rig
from bench.scenarios.serving import TOKEN_HEADERS, compare
from bench.wrk import Load

# The smallest SIDECAR_REFRESH_MIN_INTERVAL values to try, so that forced
# refreshes can follow each other quickly; the documented default is 5 s.
REFRESH_MIN_INTERVALS = ("0", "0.1", "1")
DEFAULT_REFRESH_MIN_INTERVAL_S = 5.0


def missing_endpoint(sidecar: BenchSidecar, path: str, body: bytes) -> str | None:
    """Return why POST ``path`` cannot be measured on this build, or None if it returns 200."""
    reply = sidecar.post(path, body)
    if reply.status == 404:
        return f"POST {path} returns 404: this build of the sidecar does not have it yet"
    if reply.status != 200:
        snippet = reply.body[:200].decode("utf-8", "replace")
        return (
            f"POST {path} returned {reply.status} ({snippet}); "
            "check the request that the harness sends"
        )
    return None


def verify_throughput(rig: Rig, options: Options) -> Outcome:
    """Measure POST /v1/verify on the sidecar against a bare aiohttp POST handler."""
    sidecar = rig.sidecar()
    current = sidecar.keys()["current"]
    body = json.dumps({"key": current}).encode()
    reason = missing_endpoint(sidecar, "/v1/verify", body)
    if reason is not None:
        rig.stop_sidecar(sidecar)
        return Outcome(skipped=reason)
    reply = sidecar.get("/v1/keys")
    bare = start_bare_server(rig.workdir, reply.body, reply.headers["ETag"])
    rig.servers.append(bare)
    load = Load(
        headers={**TOKEN_HEADERS, "Content-Type": "application/json"}, method="POST", body=body
    )
    targets = {
        "sidecar": (sidecar.url("/v1/verify"), sidecar.pid),
        "bare aiohttp": (bare.url("/v1/verify"), bare.process.pid),
    }
    results, notes = compare(targets, options, load)
    bare.stop()
    rig.stop_sidecar(sidecar)
    return Outcome(data={"results": results}, notes=notes)


def fast_refresh_settings(rig: Rig) -> tuple[dict[str, object], float]:
    """Return the smallest refresh spacing this build accepts, as settings and seconds."""
    for value in REFRESH_MIN_INTERVALS:
        if rig.supports_setting("refresh_min_interval", value):
            return {"refresh_min_interval": value}, float(value)
    return {}, DEFAULT_REFRESH_MIN_INTERVAL_S
