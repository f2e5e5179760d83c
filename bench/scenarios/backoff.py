"""GET /v1/keys under load while every poll fails and the poller backs off."""

from __future__ import annotations

import json
import time
import urllib.request

from bench.options import Options, Outcome
from bench.processes import BenchSidecar, ServerProcess
from bench.rig import Rig
from bench.scenarios.serving import WARMUP_S, error_notes, measure

# The failure lasts through every measurement plus this margin.
FAILURE_MARGIN_S = 5.0
STATE_TIMEOUT_S = 15.0
# With the default backoff (1 s doubling to 60 s), the wait in progress when the
# failure ends can be long, so recovery is awaited this long after the end.
RECOVERY_TIMEOUT_S = 75.0


def keys_while_polls_fail(rig: Rig, options: Options) -> Outcome:
    """Measure /v1/keys with healthy polls, then while the proxy fails every poll with 503."""
    proxy = rig.counting_proxy()
    # The default backoff settings, and a short interval so failures start at once.
    sidecar = rig.sidecar(
        endpoint=proxy.url(""), poll_interval=1, backoff_initial=1, backoff_max=60
    )
    outcome = Outcome()
    url = sidecar.url("/v1/keys")
    healthy = {}
    for connections in options.connections:
        result = measure(url, connections, options)
        healthy[str(connections)] = result.to_json()
        outcome.notes += error_notes("healthy polls", result)

    window_s = len(options.connections) * (WARMUP_S + options.duration_s) + FAILURE_MARGIN_S
    _control(proxy, f"/__bench/fail?seconds={window_s:g}")
    failing_since = time.time()
    _wait_for_stale(sidecar, stale=True, timeout=STATE_TIMEOUT_S)
    failing = {}
    for connections in options.connections:
        result = measure(url, connections, options)
        failing[str(connections)] = result.to_json()
        outcome.notes += error_notes("failing polls", result)
    stale_reply = sidecar.get("/v1/keys")

    recovered_after_s = _wait_for_stale(
        sidecar, stale=False, timeout=window_s + RECOVERY_TIMEOUT_S
    ) - (failing_since + window_s)
    calls = _control(proxy, "/__bench/calls", method="GET")["calls"]
    failed_calls = [call for call in calls if call[2] == 503]
    rig.stop_sidecar(sidecar)
    outcome.data = {
        "healthy": healthy,
        "failing": failing,
        "failure_window_s": window_s,
        "failed_calls": len(failed_calls),
        "stale_reply_status": stale_reply.status,
        "stale_reply_flag": stale_reply.json().get("stale"),
        "recovered_after_window_s": recovered_after_s,
    }
    return outcome


def _control(
    proxy: ServerProcess, path: str, method: str = "POST"
) -> dict[str, list[list[object]]]:
    request = urllib.request.Request(proxy.url(path), method=method)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: S310
        document: dict[str, list[list[object]]] = json.loads(reply.read())
        return document


def _wait_for_stale(sidecar: BenchSidecar, *, stale: bool, timeout: float) -> float:
    """Wait until /v1/keys reports ``stale`` and return time.time() at that reply."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = sidecar.get("/v1/keys")
        if reply.status == 200 and reply.json()["stale"] is stale:
            return time.time()
        time.sleep(0.05)
    msg = f"/v1/keys did not report stale={stale} within {timeout:g} s"
    raise TimeoutError(msg)
