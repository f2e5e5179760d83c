"""The performance targets, checked against one run's results.

Each check returns what was measured and whether the target was met. The page
shows a missed target with its reason from ``WHY_MISSED``, and the numbers come
from the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KIB_PER_MIB = 1024
THROUGHPUT_RATIO = 0.9
P99_LIMIT_MS = 1.0
P99_CONNECTIONS = "16"
RSS_LIMIT_KIB = 64 * KIB_PER_MIB
READY_LIMIT_S = 1.0
# RSS may move by this much over one million requests and still count as no
# growth: the allocator returns and reuses pages, so readings jitter by a few
# hundred KiB even when nothing accumulates.
GROWTH_TOLERANCE_KIB = 1024


@dataclass(frozen=True)
class Check:
    """The measured value for one target and whether it meets the target."""

    measured: str
    met: bool


Scenarios = dict[str, Any]


def _data(scenarios: Scenarios, name: str) -> dict[str, Any] | None:
    outcome = scenarios.get(name, {})
    data: dict[str, Any] | None = outcome.get("data") or None
    return data


def throughput(scenarios: Scenarios) -> Check | None:
    """Check that the sidecar reaches 0.9 x the bare aiohttp handler at every connection count."""
    data = _data(scenarios, "keys_throughput")
    if data is None:
        return None
    results = data["results"]
    bare = results["bare aiohttp"]
    ratios = {
        connections: run["requests_per_s"] / bare[connections]["requests_per_s"]
        for connections, run in results["sidecar"].items()
    }
    measured = ", ".join(f"{ratio:.2f} at {count}" for count, ratio in ratios.items())
    cpu = [
        bare[connections].get("cpu_us_per_request", 0) / run["cpu_us_per_request"]
        for connections, run in results["sidecar"].items()
        if run.get("cpu_us_per_request")
    ]
    if cpu:
        measured += " (CPU per request: " + ", ".join(f"{ratio:.2f}" for ratio in cpu) + ")"
    return Check(measured, all(ratio >= THROUGHPUT_RATIO for ratio in ratios.values()))


def p99(scenarios: Scenarios) -> Check | None:
    """Check that the sidecar's p99 is under 1 ms at 16 connections."""
    data = _data(scenarios, "keys_throughput")
    if data is None or P99_CONNECTIONS not in data["results"]["sidecar"]:
        return None
    results = data["results"]
    value = results["sidecar"][P99_CONNECTIONS]["p99_ms"]
    baselines = ", ".join(
        f"{name} {by_connections[P99_CONNECTIONS]['p99_ms']:.2f} ms"
        for name, by_connections in results.items()
        if name != "sidecar"
    )
    return Check(f"{value:.2f} ms (same run: {baselines})", value < P99_LIMIT_MS)


def rss(scenarios: Scenarios) -> Check | None:
    """Check that every RSS reading is under 64 MiB."""
    data = _data(scenarios, "memory")
    if data is None:
        return None
    readings = [data["rss_start_kib"], data["rss_after_requests_kib"]]
    readings += [sample["rss_kib"] for sample in data["rotation_samples"]]
    largest = max(readings)
    return Check(f"{largest / KIB_PER_MIB:.1f} MiB at most", largest < RSS_LIMIT_KIB)


def ready(scenarios: Scenarios) -> Check | None:
    """Check that the median time from process start to /readyz 200 is under 1 s."""
    data = _data(scenarios, "startup")
    if data is None:
        return None
    value = data["ready_median_s"]
    return Check(f"{value:.2f} s (median)", value < READY_LIMIT_S)


def calls_per_poll(scenarios: Scenarios) -> Check | None:
    """Check that each poll made exactly one GetSecretValue call."""
    data = _data(scenarios, "calls")
    if data is None:
        return None
    calls, polls = data["calls_in_window"], data["polls_in_window"]
    return Check(f"{calls} calls for {polls} polls", calls == polls and polls > 0)


def growth(scenarios: Scenarios) -> Check | None:
    """Check that RSS after one million requests is within 1 MiB of the first reading."""
    data = _data(scenarios, "memory")
    if data is None or len(data["load_samples"]) < 2:
        return None
    first, last = data["load_samples"][0], data["load_samples"][-1]
    change = last["rss_kib"] - first["rss_kib"]
    measured = (
        f"{change / KIB_PER_MIB:+.1f} MiB from {first['requests']:,} "
        f"to {last['requests']:,} requests"
    )
    return Check(measured, abs(change) <= GROWTH_TOLERANCE_KIB)


TARGETS: list[tuple[str, str, Callable[[Scenarios], Check | None]]] = [
    ("throughput", "throughput >= 0.9 x bare aiohttp (same run)", throughput),
    ("p99", "p99 < 1 ms at 16 connections", p99),
    ("rss", "RSS < 64 MiB", rss),
    ("ready", "ready < 1 s after start", ready),
    ("calls", "exactly one Secrets Manager call per poll", calls_per_poll),
    ("growth", "no memory growth over one million requests", growth),
]

# The reason for each missed target on this machine, shown only when the
# rendered run misses that target.
WHY_MISSED = {
    "throughput": (
        "The gap is the cost of the sidecar's own request path, and CPU time per "
        "request (ratio in brackets), which depends far less than requests/s on the "
        "load of the shared machine, shows it too. For each request the sidecar runs "
        "the listener's request limits, the hop guard, the token check "
        "(hmac.compare_digest), the route lookup, the staleness check and a "
        "Prometheus counter, and the bare handler runs none of them. In a py-spy "
        "profile at 16 connections, frames of the sidecar's code, with the aiohttp "
        "calls they make, were on the stack in about 30 % of the busy samples; the "
        "rest was aiohttp, asyncio and socket calls. Every one of these checks is "
        "required, and uvloop, which would save about an eighth of the CPU per "
        "request, is not used because of its worse tail latency (see below)."
    ),
    "p99": (
        "At 16 connections the p99 is set by scheduling, not by the request path: "
        "wrk's two threads, the server and the other sessions on this machine "
        "compete for two cores, so now and then a request waits for a whole time "
        "slice. The baselines' p99 in the same run, in brackets, is of the same "
        "order. Meeting this target needs a machine with a core to spare for wrk."
    ),
    "rss": (
        "Most of the resident memory is the libraries, not the data: botocore loads "
        "its service models and endpoint rules, and aiohttp, aiobotocore, structlog and "
        "prometheus-client add their modules. A Python process that only imports them "
        "is already close to the limit."
    ),
    "ready": (
        "Start-up time is dominated by importing botocore and aiobotocore and by "
        "creating the client; the first poll against the local emulator takes a few "
        "milliseconds. On a shared machine the imports take longer."
    ),
    "calls": "The proxy saw a different number of calls than the sidecar counted polls.",
    "growth": "RSS grew by more than the tolerance over the load.",
}


def render(scenarios: Scenarios) -> str:
    """Return the targets table and, for each missed target, the reason."""
    lines = ["| target | measured | met |", "|---|---|---|"]
    missed = []
    for key, label, check_target in TARGETS:
        check = check_target(scenarios)
        if check is None:
            lines.append(f"| {label} | not measured in this run | - |")
            continue
        lines.append(f"| {label} | {check.measured} | {'yes' if check.met else '**no**'} |")
        if not check.met:
            missed.append(f"- **{label}**: {WHY_MISSED[key]}")
    if missed:
        lines += ["", "Why the missed targets are missed:", "", *missed]
    return "\n".join(lines)
