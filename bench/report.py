"""Write docs/benchmarks.md from bench/template.md, and the plot docs/benchmarks.png."""

from __future__ import annotations

import itertools
import string
from pathlib import Path
from typing import Any

from bench import targets
from bench.plot import plot_serving

TEMPLATE = Path(__file__).with_name("template.md")
KIB_PER_MIB = 1024
# A fall in RSS larger than this between two readings gets a sentence on the page.
DROP_NOTE_KIB = 1024


def write_report(results: dict[str, Any], docs_dir: Path) -> None:
    """Render the page and the plot from one run's results."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    scenarios = results["scenarios"]
    serving = scenarios.get("keys_throughput", {})
    plotted = False
    if serving.get("data"):
        plot_serving(serving["data"]["results"], docs_dir / "benchmarks.png")
        plotted = True
    meta = results["meta"]
    values = {
        "date": meta["date"],
        "command": meta["command"],
        "quick_warning": _quick_warning(meta),
        "machine": _machine(meta),
        "noise": _noise(meta),
        "duration": f"{meta['options']['duration_s']:g}",
        "rounds": _rounds(meta["options"].get("rounds", 1)),
        "targets": targets.render(scenarios),
        "serving": _serving(serving, plotted),
        "event_loop": _event_loop(scenarios.get("event_loop", {})),
        "gc_freeze": _gc_freeze(scenarios.get("gc_freeze", {})),
        "verify": _verify(scenarios.get("verify_throughput", {})),
        "rotation": _rotation(scenarios),
        "startup": _startup(scenarios.get("startup", {})),
        "memory": _memory(scenarios.get("memory", {})),
        "calls": _calls(scenarios.get("calls", {})),
        "failing_polls": _failing_polls(scenarios.get("failing_polls", {})),
        "notes": _notes(scenarios),
    }
    page = string.Template(TEMPLATE.read_text()).substitute(values)
    (docs_dir / "benchmarks.md").write_text(page)


def mib(kib: float) -> str:
    """Format KiB as MiB with one decimal."""
    return f"{kib / KIB_PER_MIB:.1f} MiB"


def ms(seconds: float) -> str:
    """Format seconds as milliseconds."""
    return f"{seconds * 1000:.0f} ms"


def _missing(outcome: dict[str, Any]) -> str | None:
    if not outcome:
        return "_Not run in this run._"
    if outcome.get("skipped"):
        return f"_Skipped: {outcome['skipped']}._"
    return None


def _rounds(count: int) -> str:
    return "one round" if count == 1 else f"{count} rounds"


def _quick_warning(meta: dict[str, Any]) -> str:
    if not meta.get("quick"):
        return ""
    return (
        "\n> **This page comes from a `--quick` run**: tiny sizes that check the harness, "
        "not measurements. Run `make bench` for real numbers.\n"
    )


def _machine(meta: dict[str, Any]) -> str:
    machine, versions = meta["machine"], meta["versions"]
    rows = [
        ("CPU", machine["cpu_model"]),
        ("cores", str(machine["cores"])),
        ("memory", f"{machine['memory_gib']} GiB"),
        ("kernel", machine["kernel"]),
    ]
    rows += [(name, version) for name, version in versions.items()]
    lines = ["| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def _noise(meta: dict[str, Any]) -> str:
    start = ", ".join(f"{value:.2f}" for value in meta["load_average_start"])
    end = ", ".join(f"{value:.2f}" for value in meta.get("load_average_end", []))
    return f"Load average (1, 5, 15 min) at the start of the run: {start}; at the end: {end}."


def _wrk_table(results: dict[str, dict[str, Any]], baseline: str | None) -> str:
    header = "| server | connections | requests/s | p50 | p90 | p99 | max | CPU per request |"
    if baseline:
        header += f" requests/s / {baseline} |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, by_connections in results.items():
        for connections, run in by_connections.items():
            cpu = run.get("cpu_us_per_request")
            row = (
                f"| {name} | {connections} | {run['requests_per_s']:,.0f} | "
                f"{run['p50_ms']:.2f} ms | {run['p90_ms']:.2f} ms | {run['p99_ms']:.2f} ms | "
                f"{run['max_ms']:.1f} ms | {_us(cpu)} |"
            )
            if baseline:
                reference = results[baseline][connections]["requests_per_s"]
                row += f" {run['requests_per_s'] / reference:.2f} |"
            lines.append(row)
    return "\n".join(lines)


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} µs"


def _cpu_ratio(results: dict[str, dict[str, Any]], name: str, connections: str) -> str:
    """Return the CPU time per request of ``name`` over the sidecar's.

    Below 1, the sidecar spends more CPU per request than ``name``.
    """
    sidecar = results["sidecar"][connections].get("cpu_us_per_request")
    other = results[name][connections].get("cpu_us_per_request")
    if not sidecar or not other:
        return "n/a"
    return f"{other / sidecar:.2f}"


def _serving(outcome: dict[str, Any], plotted: bool) -> str:  # noqa: FBT001 - internal
    missing = _missing(outcome)
    if missing:
        return missing
    results = outcome["data"]["results"]
    lines = [
        f"The reply is {outcome['data']['body_bytes']} bytes of JSON.",
        "",
        _wrk_table(results, None),
        "",
        (
            "Ratios of the sidecar to each baseline. For requests per second it is the "
            "sidecar's over the baseline's. For CPU it is the baseline's CPU time per "
            "request over the sidecar's, so below 1 means the sidecar spends more CPU "
            "per request."
        ),
        "",
        (
            "| connections | requests/s, sidecar / bare aiohttp | requests/s, sidecar / nginx "
            "| CPU per request, bare aiohttp / sidecar | CPU per request, nginx / sidecar |"
        ),
        "|---|---|---|---|---|",
    ]
    for connections, run in results["sidecar"].items():
        bare = results["bare aiohttp"][connections]["requests_per_s"]
        nginx = results["nginx"][connections]["requests_per_s"]
        lines.append(
            f"| {connections} | {run['requests_per_s'] / bare:.2f} | "
            f"{run['requests_per_s'] / nginx:.2f} | "
            f"{_cpu_ratio(results, 'bare aiohttp', connections)} | "
            f"{_cpu_ratio(results, 'nginx', connections)} |"
        )
    if plotted:
        lines += ["", "![Throughput and p99 against connections](benchmarks.png)"]
    return "\n".join(lines)


def _event_loop(outcome: dict[str, Any]) -> str:
    return _missing(outcome) or _wrk_table(outcome["data"]["results"], "asyncio")


def _gc_freeze(outcome: dict[str, Any]) -> str:
    return _missing(outcome) or _wrk_table(outcome["data"]["results"], "not frozen")


def _verify(outcome: dict[str, Any]) -> str:
    return _missing(outcome) or _wrk_table(outcome["data"]["results"], "bare aiohttp")


def _rotation(scenarios: dict[str, Any]) -> str:
    lines = ["| picked up by | rotations | median | min | max |", "|---|---|---|---|---|"]
    poll = scenarios.get("rotation_poll", {})
    for interval, summary in poll.get("data", {}).items():
        lines.append(_rotation_row(f"poll, interval {interval} s (jitter 0.1)", summary))
    refresh = scenarios.get("rotation_refresh", {})
    if refresh.get("data"):
        lines.append(_rotation_row("POST /v1/refresh right after the put", refresh["data"]))
    watch = scenarios.get("rotation_watch", {})
    if watch.get("data"):
        lines.append(_rotation_row("a long-poll watcher, poll interval 1 s", watch["data"]))
    for name, label in (
        ("rotation_poll", "Poll"),
        ("rotation_refresh", "Forced refresh"),
        ("rotation_watch", "Watcher"),
    ):
        missing = _missing(scenarios.get(name, {}))
        if missing:
            lines += ["", f"{label}: {missing}"]
    return "\n".join(lines)


def _rotation_row(label: str, summary: dict[str, Any]) -> str:
    return (
        f"| {label} | {summary['count']} | {ms(summary['median_s'])} | "
        f"{ms(summary['min_s'])} | {ms(summary['max_s'])} |"
    )


def _startup(outcome: dict[str, Any]) -> str:
    missing = _missing(outcome)
    if missing:
        return missing
    data = outcome["data"]
    samples = ", ".join(f"{value:.2f}" for value in data["ready_samples_s"])
    return (
        f"Median {data['ready_median_s']:.2f} s, maximum {data['ready_max_s']:.2f} s over "
        f"{len(data['ready_samples_s'])} starts (each in seconds: {samples}). "
        f"CPU time used by then: median {data['cpu_median_s']:.2f} s. "
        f"RSS when ready: median {mib(data['rss_median_kib'])}."
    )


def _memory(outcome: dict[str, Any]) -> str:
    missing = _missing(outcome)
    if missing:
        return missing
    data = outcome["data"]
    lines = [
        "| moment | RSS |",
        "|---|---|",
        f"| after start (first poll done) | {mib(data['rss_start_kib'])} |",
    ]
    samples = data["load_samples"]
    if len(samples) > 1:
        first = samples[0]
        lines.append(f"| after {first['requests']:,} requests | {mib(first['rss_kib'])} |")
    lines.append(f"| after {data['requests']:,} requests | {mib(data['rss_after_requests_kib'])} |")
    lines.append(
        f"| after {data['rotations']:,} more rotations ({data['rotation_mode']}) "
        f"| {mib(data['rss_after_rotations_kib'])} |"
    )
    readings = ", ".join(
        f"{sample['requests'] / 1000:,.0f}k: {sample['rss_kib'] / KIB_PER_MIB:.1f}"
        for sample in samples
    )
    rotation_readings = ", ".join(
        f"{sample['rotations']}: {sample['rss_kib'] / KIB_PER_MIB:.1f}"
        for sample in data["rotation_samples"]
    )
    lines += [
        "",
        f"RSS in MiB by requests served: {readings}.",
        "",
        f"RSS in MiB by rotations: {rotation_readings}.",
    ]
    drops = [
        (earlier, later)
        for earlier, later in itertools.pairwise(data["rotation_samples"])
        if earlier["rss_kib"] - later["rss_kib"] > DROP_NOTE_KIB
    ]
    for earlier, later in drops:
        lines += [
            "",
            (
                f"RSS fell by {mib(earlier['rss_kib'] - later['rss_kib'])} between "
                f"{earlier['rotations']} and {later['rotations']} rotations: the process "
                "returned memory to the operating system. The harness does not show "
                "which allocation released it."
            ),
        ]
    return "\n".join(lines)


def _calls(outcome: dict[str, Any]) -> str:
    missing = _missing(outcome)
    if missing:
        return missing
    data = outcome["data"]
    gap = f"{data['mean_gap_s']:.2f} s" if data["mean_gap_s"] is not None else "n/a"
    window = f"{data['window_s']:.0f} s, poll interval {data['poll_interval_s']:g} s, jitter 0.1"
    rows = [
        ("window", window),
        ("/v1/keys requests served in the window", f"{data['requests_in_window']:,}"),
        ("GetSecretValue calls counted at the proxy", str(data["calls_in_window"])),
        ("polls counted by the sidecar", str(data["polls_in_window"])),
        ("calls per poll", f"{data['calls_per_poll']:.2f}"),
        ("mean time between calls", gap),
        ("calls per hour at this interval (measured)", f"{data['calls_per_hour_measured']:,.0f}"),
        (
            "calls per hour at the default 60 s interval (estimate)",
            f"{data['calls_per_hour_default']:,.0f}",
        ),
        ("X-Amz-Target values seen", ", ".join(data["targets"])),
    ]
    lines = ["| | |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in rows]
    return "\n".join(lines)


def _failing_polls(outcome: dict[str, Any]) -> str:
    missing = _missing(outcome)
    if missing:
        return missing
    data = outcome["data"]
    lines = [
        "| polls | connections | requests/s | p50 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    for state in ("healthy", "failing"):
        for connections, run in data[state].items():
            lines.append(
                f"| {state} | {connections} | {run['requests_per_s']:,.0f} | "
                f"{run['p50_ms']:.2f} ms | {run['p99_ms']:.2f} ms | {run['max_ms']:.1f} ms |"
            )
    lines += [
        "",
        (
            f"The proxy answered every call with 503 for {data['failure_window_s']:.0f} s and "
            f"saw {data['failed_calls']} calls in that time, where polling once a second "
            f"without backoff would have made about {data['failure_window_s']:.0f}. "
            f"During the failure /v1/keys returned "
            f"{data['stale_reply_status']} with `stale: {str(data['stale_reply_flag']).lower()}`. "
            f"The sidecar served fresh keys again {data['recovered_after_window_s']:.1f} s after "
            "the failure ended, at the end of the backoff wait that was in progress."
        ),
    ]
    return "\n".join(lines)


def _notes(scenarios: dict[str, Any]) -> str:
    lines = [
        f"- {name}: {note}"
        for name, outcome in scenarios.items()
        for note in outcome.get("notes", [])
    ]
    return "\n".join(lines) if lines else "- none"
