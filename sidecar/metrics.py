"""Prometheus metrics of the poller and the keys API.

The metric names and label values are an interface that dashboards and alert
rules depend on. No label ever carries a key, a token or a credential: the only
free-form label is the secret's version id, which Secrets Manager generates.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from sidecar.cache import KeyCache
from sidecar.source import REASONS

POLL_OUTCOMES = ("changed", "unchanged", "error")
VERIFY_RESULTS = ("current", "previous", "invalid")
# Poll latency buckets in seconds: loopback emulator calls take milliseconds, and
# the default read timeout is 5 s.
POLL_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The sidecar's metrics, registered into one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # Without this, every counter and histogram series gets a *_created twin
        # that no dashboard or alert reads. The switch is process-wide in
        # prometheus-client, and the sidecar process has one Metrics object.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
        # The process and platform collectors that prometheus-client's global
        # registry has, added to this registry so that tests can make a fresh one.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.polls = Counter(
            "sidecar_polls",
            "Polls of Secrets Manager by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.poll_errors = Counter(
            "sidecar_poll_errors",
            "Failed polls by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.poll_duration = Histogram(
            "sidecar_poll_duration_seconds",
            "Duration of one poll, successful or not: the GetSecretValue call and, "
            "for a new version, parsing the secret.",
            buckets=POLL_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.last_success = Gauge(
            "sidecar_last_success_timestamp_seconds",
            "Unix time of the last successful poll.",
            registry=self.registry,
        )
        self.last_reload = Gauge(
            "sidecar_last_reload_timestamp_seconds",
            "Unix time at which the served secret version last changed.",
            registry=self.registry,
        )
        self.keys_loaded = Gauge(
            "sidecar_keys_loaded",
            "1 once a key pair is loaded, else 0.",
            registry=self.registry,
        )
        self.keys_stale = Gauge(
            "sidecar_keys_stale",
            "1 while the latest poll failed and the last good pair is served, else 0.",
            registry=self.registry,
        )
        self.ready = Gauge(
            "sidecar_ready",
            "1 while /readyz returns 200: keys are loaded and the last successful poll "
            "is within SIDECAR_MAX_STALENESS, else 0.",
            registry=self.registry,
        )
        self.version_info = Gauge(
            "sidecar_secret_version_info",
            "1 for the secret version being served.",
            ["version_id"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "sidecar_reloads",
            "New secret versions loaded since start, the first load included.",
            registry=self.registry,
        )
        self.requests = Counter(
            "sidecar_requests",
            "Requests to the keys listener by route and status code.",
            ["route", "code"],
            registry=self.registry,
        )
        self.verify_results = Counter(
            "sidecar_verify",
            "POST /v1/verify results: which key of the pair matched, or invalid.",
            ["result"],
            registry=self.registry,
        )
        self.watchers = Gauge(
            "sidecar_watchers",
            "Long-poll requests (GET /v1/keys?wait=) waiting for a new version.",
            registry=self.registry,
        )
        # Create every series up front so rate() works from the first scrape.
        for outcome in POLL_OUTCOMES:
            self.polls.labels(outcome=outcome)
        for reason in REASONS:
            self.poll_errors.labels(reason=reason)
        for result in VERIFY_RESULTS:
            self.verify_results.labels(result=result)
        self._served_version: str | None = None

    def track_readiness(self, cache: KeyCache) -> None:
        """Compute sidecar_ready from ``cache`` at every scrape, with the rule of /readyz."""
        self.ready.set_function(lambda: 1.0 if cache.is_ready() else 0.0)

    def serve_version(self, version_id: str) -> None:
        """Point sidecar_secret_version_info at ``version_id`` and drop the old series."""
        if self._served_version == version_id:
            return
        if self._served_version is not None:
            self.version_info.remove(self._served_version)
        self.version_info.labels(version_id=version_id).set(1)
        self._served_version = version_id
