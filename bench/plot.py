"""Plot throughput and p99 latency against connections for each server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib as mpl

# Agg draws to files only, so the harness runs without a display.
mpl.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter

# Tick values for the log-scale latency axis, in milliseconds.
LATENCY_TICKS_MS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
STYLES = {"sidecar": "o-", "bare aiohttp": "s--", "nginx": "^:"}


def plot_serving(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Save a two-panel PNG: requests per second and p99 against connections."""
    figure, (rate_axes, p99_axes) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    all_tails: list[float] = []
    for name, by_connections in results.items():
        connections = [int(count) for count in by_connections]
        rates = [run["requests_per_s"] for run in by_connections.values()]
        tails = [run["p99_ms"] for run in by_connections.values()]
        all_tails += tails
        style = STYLES.get(name, "x-")
        rate_axes.plot(connections, rates, style, label=name)
        p99_axes.plot(connections, tails, style, label=name)
    for axes in (rate_axes, p99_axes):
        axes.set_xscale("log", base=2)
        axes.set_xticks(connections, [str(count) for count in connections])
        axes.set_xlabel("connections (wrk, 2 threads)")
        axes.grid(visible=True, alpha=0.3)
    rate_axes.set_ylabel("requests/s")
    rate_axes.set_ylim(bottom=0)
    rate_axes.set_title("GET /v1/keys throughput")
    p99_axes.set_ylabel("p99 latency (ms, log scale)")
    p99_axes.set_yscale("log")
    # Plain numbers instead of powers of ten on the log axis.
    p99_axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    p99_axes.yaxis.set_minor_formatter(NullFormatter())
    low, high = min(all_tails) / 1.5, max(all_tails) * 1.5
    p99_axes.set_yticks([tick for tick in LATENCY_TICKS_MS if low <= tick <= high])
    p99_axes.set_title("p99 latency")
    rate_axes.legend()
    figure.savefig(path, dpi=100)
    plt.close(figure)
