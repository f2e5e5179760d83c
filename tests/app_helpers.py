"""Helpers for the tests of the application-facing API: metrics and JSON requests."""

from __future__ import annotations

import json
from typing import Any

from tests.helpers import HttpReply, SidecarProcess, http_request
from tests.scrape import scrape


def metric_value(sidecar: SidecarProcess, sample_name: str, **labels: str) -> float:
    """Return one sample from the sidecar's /metrics, or fail if it is missing."""
    value = scrape(sidecar).value(sample_name, **labels)
    assert value is not None, f"no sample {sample_name}{labels} in /metrics"
    return value


def post(
    sidecar: SidecarProcess,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    token: bool = True,
) -> HttpReply:
    """POST ``body`` to ``path`` on the keys listener, with the token unless ``token`` is False."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token and sidecar.token is not None:
        sent.setdefault("X-Sidecar-Token", sidecar.token)
    return http_request(sidecar.url(path), method="POST", headers=sent, body=body or b"")


def verify(sidecar: SidecarProcess, key: Any) -> HttpReply:
    """POST /v1/verify with ``{"key": key}``."""
    return post(sidecar, "/v1/verify", json.dumps({"key": key}).encode())
