"""Footprint: start-up time, memory over requests and rotations, Secrets Manager calls."""

from __future__ import annotations

import itertools
import json
import statistics
import time
import urllib.request
from typing import Any

from bench.options import Options, Outcome
from bench.processes import BenchSidecar, ServerProcess, cpu_seconds
from bench.rig import Rig
from bench.scenarios.app_api import fast_refresh_settings, missing_endpoint
from bench.scenarios.rotation import KeysReader
from bench.scenarios.serving import TOKEN_LOAD, error_notes
from bench.wrk import run_wrk
from tests.helpers import http_request

READY_TIMEOUT_S = 20.0
READY_CHECK_INTERVAL_S = 0.005
# The memory load runs in chunks of this many seconds, with an RSS reading after each.
LOAD_CHUNK_S = 10.0
LOAD_CONNECTIONS = 16
# An RSS reading is taken after this many rotations.
ROTATION_SAMPLE_EVERY = 25
KEYS_SERIES = {"route": "/v1/keys", "code": "200"}
DEFAULT_POLL_INTERVAL_S = 60.0
SECONDS_PER_HOUR = 3600.0
# A call the proxy recorded this long ago has been counted by the sidecar too.
CALL_SETTLE_S = 0.1


def startup(rig: Rig, options: Options) -> Outcome:
    """Measure the time from process start to /readyz 200, and the RSS then."""
    seconds, cpu, rss = [], [], []
    for _ in range(options.starts):
        sidecar = rig.sidecar(wait_ready=False)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while http_request(sidecar.url("/readyz")).status != 200:
            if time.monotonic() > deadline:
                return Outcome(skipped=f"not ready within {READY_TIMEOUT_S:g} s")
            time.sleep(READY_CHECK_INTERVAL_S)
        seconds.append(time.monotonic() - sidecar.started_at)
        cpu.append(cpu_seconds(sidecar.pid))
        rss.append(sidecar.rss_kib())
        rig.stop_sidecar(sidecar)
    return Outcome(
        data={
            "ready_median_s": statistics.median(seconds),
            "ready_max_s": max(seconds),
            "ready_samples_s": seconds,
            # CPU time shows how much of the wall time was the sidecar's own work
            # and how much was waiting for a core on a shared machine.
            "cpu_median_s": statistics.median(cpu),
            "rss_median_kib": statistics.median(rss),
            "rss_samples_kib": rss,
        }
    )


def memory(rig: Rig, options: Options) -> Outcome:
    """Read the RSS after start, during a load of one million requests, and over rotations."""
    refresh_settings, _ = fast_refresh_settings(rig)
    sidecar = rig.sidecar(poll_interval=1, poll_jitter=0, extra_settings=refresh_settings)
    outcome = Outcome()
    # Let the first poll's allocations settle before the first reading.
    time.sleep(1)
    rss_start = sidecar.rss_kib()

    load_samples = _load(sidecar, options, outcome)
    rss_after_requests = load_samples[-1]["rss_kib"] if load_samples else rss_start
    rotation_samples, mode = _rotate(rig, sidecar, options)
    rig.stop_sidecar(sidecar)

    requests = load_samples[-1]["requests"] if load_samples else 0
    if requests < options.requests:
        outcome.notes.append(
            f"the load stopped at its time limit of {options.requests_limit_s:g} s "
            f"after {requests:,} requests"
        )
    rotations = rotation_samples[-1]["rotations"]
    if rotations < options.footprint_rotations:
        outcome.notes.append(
            f"{rotations} rotations fitted in the time limit of {options.rotations_limit_s:g} s "
            f"({mode}); the reading is after those, not after {options.footprint_rotations:,}"
        )
    outcome.data = {
        "rss_start_kib": rss_start,
        "rss_after_requests_kib": rss_after_requests,
        "requests": requests,
        "load_samples": load_samples,
        "rss_after_rotations_kib": rotation_samples[-1]["rss_kib"],
        "rotations": rotations,
        "rotation_mode": mode,
        "rotation_samples": rotation_samples,
    }
    return outcome


def _load(sidecar: BenchSidecar, options: Options, outcome: Outcome) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + options.requests_limit_s
    served = 0.0
    while served < options.requests and time.monotonic() < deadline:
        result = run_wrk(
            sidecar.url("/v1/keys"),
            TOKEN_LOAD,
            connections=LOAD_CONNECTIONS,
            duration_s=LOAD_CHUNK_S,
        )
        outcome.notes += error_notes("memory load", result)
        # The sidecar's own counter, so the count includes nothing wrk did not send.
        served = sidecar.metric_sum("sidecar_requests_total", **KEYS_SERIES)
        samples.append({"requests": int(served), "rss_kib": sidecar.rss_kib()})
    return samples


def _rotate(rig: Rig, sidecar: BenchSidecar, options: Options) -> tuple[list[dict[str, Any]], str]:
    """Rotate as fast as the sidecar picks rotations up, within the time limit."""
    use_refresh = missing_endpoint(sidecar, "/v1/refresh", b"") is None
    mode = "each followed by POST /v1/refresh" if use_refresh else "each picked up by a 1 s poll"
    reader = KeysReader(sidecar)
    samples = [{"rotations": 0, "rss_kib": sidecar.rss_kib()}]
    deadline = time.monotonic() + options.rotations_limit_s
    count = 0
    while count < options.footprint_rotations and time.monotonic() < deadline:
        version = rig.rotate()
        if use_refresh:
            sidecar.post("/v1/refresh", b"")
        reader.wait_for(version, timeout=15)
        count += 1
        if count % ROTATION_SAMPLE_EVERY == 0:
            samples.append({"rotations": count, "rss_kib": sidecar.rss_kib()})
    reader.close()
    if samples[-1]["rotations"] != count:
        samples.append({"rotations": count, "rss_kib": sidecar.rss_kib()})
    return samples, mode


def secrets_manager_calls(rig: Rig, options: Options) -> Outcome:
    """Count GetSecretValue calls at a proxy in front of the emulator, under keys load."""
    proxy = rig.counting_proxy()
    interval = 1.0
    sidecar = rig.sidecar(endpoint=proxy.url(""), poll_interval=interval)
    outcome = Outcome()
    calls_before, polls_before = _consistent_counts(sidecar, proxy)
    started = time.time()
    # Requests during the window show that serving the keys never calls AWS.
    result = run_wrk(
        sidecar.url("/v1/keys"),
        TOKEN_LOAD,
        connections=LOAD_CONNECTIONS,
        duration_s=options.calls_window_s,
    )
    outcome.notes += error_notes("load during the count", result)
    calls_after, polls_after = _consistent_counts(sidecar, proxy)
    window_s = time.time() - started
    rig.stop_sidecar(sidecar)

    calls = [call for call in calls_after if call[0] >= started]
    calls_in_window = len(calls_after) - len(calls_before)
    polls_in_window = polls_after - polls_before
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(calls)]
    calls_per_poll = calls_in_window / polls_in_window if polls_in_window else float("nan")
    outcome.data = {
        "poll_interval_s": interval,
        "window_s": window_s,
        "requests_in_window": result.requests,
        "calls_in_window": calls_in_window,
        "polls_in_window": polls_in_window,
        "calls_per_poll": calls_per_poll,
        "targets": sorted({call[1] for call in calls_after}),
        "mean_gap_s": statistics.mean(gaps) if gaps else None,
        "calls_per_hour_measured": calls_in_window / window_s * SECONDS_PER_HOUR,
        # One poll per interval on average, because the jitter is symmetric.
        "calls_per_hour_default": SECONDS_PER_HOUR / DEFAULT_POLL_INTERVAL_S * calls_per_poll,
    }
    return outcome


def _consistent_counts(sidecar: BenchSidecar, proxy: ServerProcess) -> tuple[list[list[Any]], int]:
    """Read the proxy's calls and the sidecar's poll count at a moment with no poll in flight.

    A poll that runs between the two readings would be counted by one side only,
    so the poll count is read on both sides of the proxy reading until it stays
    the same. The last call that the proxy recorded must also be old enough for
    the sidecar to have counted it.
    """
    for _ in range(50):
        polls = sidecar.metric_sum("sidecar_polls_total")
        with urllib.request.urlopen(proxy.url("/__bench/calls"), timeout=5) as reply:  # noqa: S310 - loopback
            calls = json.loads(reply.read())["calls"]
        settled = not calls or time.time() - calls[-1][0] > CALL_SETTLE_S
        if settled and sidecar.metric_sum("sidecar_polls_total") == polls:
            return calls, int(polls)
        time.sleep(0.05)
    msg = "the poll count never held still between two readings"
    raise RuntimeError(msg)
