"""Scrape a running sidecar's metrics listener and read metric names out of PromQL."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import SidecarProcess, http_request, wait_until

# Grafana replaces these variables before it sends a query. Any valid duration
# in their place parses the same way.
GRAFANA_DURATION_VARIABLES = re.compile(r"\$(__rate_interval|__interval|__range)\b")


def require_promtool() -> str:
    """Return the path of promtool, or fail under CI and skip elsewhere when it is missing."""
    path = shutil.which("promtool")
    if path is not None:
        return path
    message = (
        "promtool not found: install Debian's prometheus package "
        "(`sh tools/install-system-deps.sh` as root installs it)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class Scrape:
    """One parsed scrape of /metrics."""

    text: str
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        """Parse the Prometheus text format with prometheus-client's parser."""
        samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        return cls(text, samples)

    def value(self, name: str, **labels: str) -> float | None:
        """Return the value of one series, or None when it is not exported."""
        return self.samples.get((name, frozenset(labels.items())))

    def label_sets(self, name: str) -> list[dict[str, str]]:
        """Return the label sets of every series of the sample name ``name``."""
        return [dict(labels) for sample_name, labels in self.samples if sample_name == name]

    def names(self) -> set[str]:
        """Return every sample name, for example ``sidecar_polls_total``."""
        return {name for name, _labels in self.samples}


def scrape(sidecar: SidecarProcess) -> Scrape:
    """GET /metrics from the sidecar's metrics listener and parse it."""
    reply = http_request(sidecar.metrics_url("/metrics"))
    assert reply.status == 200, f"/metrics returned {reply.status}: {reply.body!r}"
    return Scrape.parse(reply.body.decode())


def wait_for_scrape(
    sidecar: SidecarProcess, condition: Callable[[Scrape], bool], message: str, timeout: float = 15
) -> Scrape:
    """Scrape until ``condition`` returns True and return that scrape."""
    matched: list[Scrape] = []

    def check() -> bool:
        current = scrape(sidecar)
        if condition(current):
            matched.append(current)
            return True
        return False

    wait_until(check, timeout, interval=0.1, message=f"{message}; log:\n{sidecar.log_text()}")
    return matched[0]


def promql_metric_names(expression: str) -> set[str]:
    """Return the metric names that a PromQL expression selects.

    Grafana's duration variables are replaced with a fixed duration first, so that
    dashboard queries parse. A selector without a metric name fails the calling
    test, because the name it matches cannot be checked.
    """
    parsed = promql_parser.parse(GRAFANA_DURATION_VARIABLES.sub("5m", expression))
    names: set[str] = set()

    def collect(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expression!r}"
            names.add(node.name)

    promql_parser.walk(parsed, collect)
    return names


def exported_names(sidecar: SidecarProcess) -> set[str]:
    """Return every sample name that a loaded sidecar exports.

    One request to /v1/keys first creates the sidecar_requests_total series, so
    the scrape contains every metric that a dashboard or rule can select.
    """
    sidecar.keys()
    return scrape(sidecar).names()
