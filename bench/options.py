"""Sizes of one benchmark run and the outcome type that every scenario returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Options:
    """How long and how often each scenario measures; every loop is bounded by these."""

    # Seconds of each wrk measurement, after a one-second warm-up.
    duration_s: float = 10.0
    connections: tuple[int, ...] = (16, 256)
    # Rounds of the server comparisons; each figure on the page is the median
    # over the rounds, which damps the load changes of a shared machine.
    rounds: int = 3
    # Rotations per rotation-latency measurement.
    rotations: int = 20
    poll_intervals: tuple[float, ...] = (1.0, 5.0)
    # Process starts for the start-up time.
    starts: int = 5
    # Requests served before the memory reading "after one million requests",
    # and the time limit of that load.
    requests: int = 1_000_000
    requests_limit_s: float = 600.0
    # Rotations before the memory reading "after 1,000 rotations", and the time
    # limit of that loop. With POST /v1/refresh, 1,000 rotations took under 600 s
    # on a 2-core machine; with only a 1 s poll, they take about 1,000 s.
    footprint_rotations: int = 1000
    rotations_limit_s: float = 600.0
    # Length of the window in which Secrets Manager calls are counted.
    calls_window_s: float = 30.0

    @classmethod
    def quick(cls) -> Options:
        """Return tiny sizes that check the harness end to end in about two minutes."""
        return cls(
            duration_s=2.0,
            rounds=1,
            rotations=3,
            poll_intervals=(1.0,),
            starts=2,
            requests=50_000,
            requests_limit_s=60.0,
            footprint_rotations=5,
            rotations_limit_s=30.0,
            calls_window_s=5.0,
        )


@dataclass
class Outcome:
    """The measurements of one scenario, or the reason it was skipped."""

    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the outcome as a JSON-ready dict."""
        return {"data": self.data, "notes": self.notes, "skipped": self.skipped}
