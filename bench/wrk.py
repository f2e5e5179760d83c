"""Run wrk against a loopback URL and read its results.

wrk prints a summary for people. A small Lua ``done`` hook prints the same numbers
as one JSON line after a marker, so nothing depends on wrk's text layout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

THREADS = 2
# Connections that take longer than this count as timeouts in wrk's summary.
REQUEST_TIMEOUT_S = 5
_MARKER = "BENCH-RESULT "

# wrk calls done() once after the run, with latencies in microseconds.
_DONE_HOOK = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,'
    .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    "MARKER", summary.requests, summary.duration, summary.bytes, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
""".replace("MARKER", _MARKER)


@dataclass(frozen=True)
class Load:
    """The request that wrk sends over and over."""

    headers: Mapping[str, str]
    method: str = "GET"
    body: bytes | None = None


@dataclass(frozen=True)
class WrkResult:
    """Throughput and latency of one wrk run."""

    connections: int
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    # Replies with a status of 400 or more, and socket errors of any kind.
    status_errors: int
    socket_errors: int

    @property
    def requests_per_s(self) -> float:
        """Completed requests per second over the run."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """Return the fields and the derived rate as a JSON-ready dict."""
        return {**asdict(self), "requests_per_s": self.requests_per_s}

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> WrkResult:
        """Rebuild a result saved by ``to_json``."""
        fields = {name: document[name] for name in cls.__dataclass_fields__}
        return cls(**fields)


def wrk_path() -> str:
    """Return the wrk executable or raise FileNotFoundError with the fix."""
    found = shutil.which("wrk")
    if found is None:
        msg = "wrk not found; install it with `make bench-deps` (Debian package wrk)"
        raise FileNotFoundError(msg)
    return found


def run_wrk(url: str, load: Load, *, connections: int, duration_s: float) -> WrkResult:
    """Run wrk for ``duration_s`` seconds with ``connections`` and return its numbers."""
    script = _DONE_HOOK
    if load.method != "GET":
        script = f"wrk.method = {json.dumps(load.method)}\n{script}"
    if load.body is not None:
        # JSON string escapes are valid Lua string escapes for ASCII text.
        script = f"wrk.body = {json.dumps(load.body.decode())}\n{script}"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        script_path = Path(handle.name)
    command = [
        wrk_path(),
        f"--threads={min(THREADS, connections)}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        f"--timeout={REQUEST_TIMEOUT_S}s",
        "--latency",
        f"--script={script_path}",
    ]
    for name, value in load.headers.items():
        command += ["--header", f"{name}: {value}"]
    command.append(url)
    try:
        # wrk stops itself after the duration; the timeout only guards a hang.
        completed = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=duration_s + 60
        )
    finally:
        script_path.unlink(missing_ok=True)
    if completed.returncode != 0:
        msg = f"wrk exited with status {completed.returncode}: {completed.stderr.strip()}"
        raise RuntimeError(msg)
    return _parse(completed.stdout, connections)


def _parse(output: str, connections: int) -> WrkResult:
    for line in output.splitlines():
        if line.startswith(_MARKER):
            numbers = json.loads(line.removeprefix(_MARKER))
            break
    else:
        msg = f"wrk printed no result line; its output:\n{output}"
        raise RuntimeError(msg)
    socket_errors = sum(
        numbers[name] for name in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return WrkResult(
        connections=connections,
        requests=numbers["requests"],
        duration_s=numbers["duration_us"] / 1e6,
        p50_ms=numbers["p50_us"] / 1000,
        p90_ms=numbers["p90_us"] / 1000,
        p99_ms=numbers["p99_us"] / 1000,
        max_ms=numbers["max_us"] / 1000,
        status_errors=numbers["status_errors"],
        socket_errors=socket_errors,
    )
