"""The benchmark scenarios, one function each, in the order a run executes them.

A scenario takes the rig and the options and returns an Outcome. To measure a
new endpoint, add a function that checks the endpoint exists (and returns a
skipped Outcome when it does not), list it here, and render it in bench.report.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.options import Options, Outcome
from bench.rig import Rig
from bench.scenarios import app_api, backoff, footprint, rotation, serving

Scenario = Callable[[Rig, Options], Outcome]

SCENARIOS: dict[str, Scenario] = {
    "keys_throughput": serving.keys_throughput,
    "verify_throughput": app_api.verify_throughput,
    "gc_freeze": serving.gc_freeze,
    "event_loop": serving.event_loop,
    "rotation_poll": rotation.poll_latency,
    "rotation_refresh": rotation.refresh_latency,
    "rotation_watch": rotation.watch_latency,
    "startup": footprint.startup,
    "memory": footprint.memory,
    "calls": footprint.secrets_manager_calls,
    "failing_polls": backoff.keys_while_polls_fail,
}
