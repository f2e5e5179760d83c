"""Metrics of a real sidecar, scraped over HTTP through rotations and failures."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from typing import Any

from sidecar.source import REASONS
from tests.conftest import CURRENT_KEY, PREVIOUS_KEY, pair_string, put_secret
from tests.helpers import TOKEN, SidecarProcess, http_request
from tests.scrape import Scrape, require_promtool, scrape, wait_for_scrape

NEW_KEY = "key-new-CCCCCCCCCCCCCCCCCCCCCCCCCCCC"
NEWER_KEY = "key-newer-DDDDDDDDDDDDDDDDDDDDDDDDDD"

# The names that dashboards and alert rules depend on, as the text format spells
# the samples. Keep in step with the Metrics section of the README.
INTERFACE_NAMES = {
    "sidecar_polls_total",
    "sidecar_poll_errors_total",
    "sidecar_poll_duration_seconds_bucket",
    "sidecar_poll_duration_seconds_count",
    "sidecar_poll_duration_seconds_sum",
    "sidecar_last_success_timestamp_seconds",
    "sidecar_last_reload_timestamp_seconds",
    "sidecar_keys_loaded",
    "sidecar_keys_stale",
    "sidecar_ready",
    "sidecar_secret_version_info",
    "sidecar_reloads_total",
    "sidecar_requests_total",
    "sidecar_verify_total",
    "sidecar_watchers",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "python_info",
}


def current_version(secrets_client: Any, secret_id: str) -> str:
    """Return the version id of AWSCURRENT."""
    reply = secrets_client.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
    version_id: str = reply["VersionId"]
    return version_id


def served_versions(scraped: Scrape) -> list[str]:
    """Return the version ids that sidecar_secret_version_info exports."""
    return [labels["version_id"] for labels in scraped.label_sets("sidecar_secret_version_info")]


def polls(scraped: Scrape, outcome: str) -> float:
    """Return sidecar_polls_total for one outcome."""
    count = scraped.value("sidecar_polls_total", outcome=outcome)
    assert count is not None, f"no sidecar_polls_total series for outcome {outcome!r}"
    return count


def errors(scraped: Scrape, reason: str) -> float:
    """Return sidecar_poll_errors_total for one reason."""
    count = scraped.value("sidecar_poll_errors_total", reason=reason)
    assert count is not None, f"no sidecar_poll_errors_total series for reason {reason!r}"
    return count


def requests_by_route(scraped: Scrape) -> dict[tuple[str, str], float]:
    """Return sidecar_requests_total by (route, code)."""
    counts: dict[tuple[str, str], float] = {}
    for labels in scraped.label_sets("sidecar_requests_total"):
        value = scraped.value("sidecar_requests_total", **labels)
        assert value is not None
        counts[labels["route"], labels["code"]] = value
    return counts


def gauge(scraped: Scrape, name: str) -> float:
    """Return an unlabelled gauge, which is always exported."""
    value = scraped.value(name)
    assert value is not None, f"{name} is not exported"
    return value


def assert_consistent(scraped: Scrape) -> None:
    """Check the counters that one poll updates together.

    The poller updates them without yielding to the event loop, and /metrics
    renders on the same loop, so no scrape falls between two of the updates.
    """
    total_polls = sum(polls(scraped, outcome) for outcome in ("changed", "unchanged", "error"))
    assert scraped.value("sidecar_poll_duration_seconds_count") == total_polls
    assert sum(errors(scraped, reason) for reason in REASONS) == polls(scraped, "error")
    assert gauge(scraped, "sidecar_reloads_total") == polls(scraped, "changed")


def test_metrics_follow_rotation_and_failures(  # noqa: PLR0915 - one story, many checks
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """Every metric moves as a rotation, failures and recoveries happen."""
    secret_id = make_secret()
    first_version = current_version(secrets_client, secret_id)
    sidecar = start_sidecar(secret_id, metrics_port=-1)

    # First load, then at least one unchanged poll.
    loaded = wait_for_scrape(
        sidecar, lambda s: polls(s, "unchanged") >= 1, "no unchanged poll after the first load"
    )
    assert polls(loaded, "changed") == 1
    assert polls(loaded, "error") == 0
    assert gauge(loaded, "sidecar_reloads_total") == 1
    assert gauge(loaded, "sidecar_keys_loaded") == 1
    assert gauge(loaded, "sidecar_keys_stale") == 0
    assert gauge(loaded, "sidecar_ready") == 1
    assert served_versions(loaded) == [first_version]
    assert loaded.value("sidecar_secret_version_info", version_id=first_version) == 1
    assert gauge(loaded, "sidecar_last_reload_timestamp_seconds") > 0
    assert gauge(loaded, "sidecar_last_success_timestamp_seconds") >= gauge(
        loaded, "sidecar_last_reload_timestamp_seconds"
    )
    assert {labels["reason"] for labels in loaded.label_sets("sidecar_poll_errors_total")} == set(
        REASONS
    )
    assert_consistent(loaded)

    # Rotation: the new version replaces the old series.
    second_version = put_secret(secrets_client, secret_id, pair_string(NEW_KEY, CURRENT_KEY))
    rotated = wait_for_scrape(
        sidecar,
        lambda s: served_versions(s) == [second_version],
        "the rotated version is not exported",
    )
    assert first_version not in rotated.text
    assert polls(rotated, "changed") == 2
    assert gauge(rotated, "sidecar_reloads_total") == 2
    assert gauge(rotated, "sidecar_last_reload_timestamp_seconds") > gauge(
        loaded, "sidecar_last_reload_timestamp_seconds"
    )
    assert gauge(rotated, "sidecar_keys_stale") == 0
    assert_consistent(rotated)

    # A value that is not JSON: the last good pair is served, marked stale.
    put_secret(secrets_client, secret_id, "{not json")
    invalid = wait_for_scrape(
        sidecar,
        lambda s: errors(s, "invalid_secret") >= 1 and gauge(s, "sidecar_keys_stale") == 1,
        "the invalid secret is not counted",
    )
    assert polls(invalid, "error") >= 1
    assert served_versions(invalid) == [second_version]
    assert gauge(invalid, "sidecar_ready") == 1
    assert gauge(invalid, "sidecar_keys_loaded") == 1
    assert sidecar.keys()["stale"] is True
    assert_consistent(invalid)
    # Another failed poll leaves the last success where it was.
    failing = wait_for_scrape(
        sidecar,
        lambda s: polls(s, "error") > polls(invalid, "error"),
        "no second failed poll",
    )
    assert gauge(failing, "sidecar_last_success_timestamp_seconds") == gauge(
        invalid, "sidecar_last_success_timestamp_seconds"
    )
    assert gauge(failing, "sidecar_keys_stale") == 1

    # A valid version clears the stale flag and switches the series again.
    third_version = put_secret(secrets_client, secret_id, pair_string(NEWER_KEY, NEW_KEY))
    recovered = wait_for_scrape(
        sidecar,
        lambda s: served_versions(s) == [third_version],
        "the version written after the invalid one is not exported",
    )
    assert second_version not in recovered.text
    assert gauge(recovered, "sidecar_keys_stale") == 0
    assert gauge(recovered, "sidecar_reloads_total") == 3
    assert gauge(recovered, "sidecar_last_success_timestamp_seconds") > gauge(
        failing, "sidecar_last_success_timestamp_seconds"
    )
    assert_consistent(recovered)

    # Scheduled deletion, then a restore: same version, so no reload.
    secrets_client.delete_secret(SecretId=secret_id, RecoveryWindowInDays=7)
    marked = wait_for_scrape(
        sidecar,
        lambda s: errors(s, "marked_for_deletion") >= 1 and gauge(s, "sidecar_keys_stale") == 1,
        "the scheduled deletion is not counted",
    )
    secrets_client.restore_secret(SecretId=secret_id)
    restored = wait_for_scrape(
        sidecar,
        lambda s: gauge(s, "sidecar_keys_stale") == 0,
        "the stale flag is not cleared after the restore",
    )
    assert polls(restored, "unchanged") > polls(marked, "unchanged")
    assert gauge(restored, "sidecar_reloads_total") == 3
    assert served_versions(restored) == [third_version]

    # Deleted for good: not found, and the last pair is still served.
    secrets_client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
    deleted = wait_for_scrape(
        sidecar,
        lambda s: errors(s, "not_found") >= 1 and gauge(s, "sidecar_keys_stale") == 1,
        "the deleted secret is not counted",
    )
    assert served_versions(deleted) == [third_version]
    assert gauge(deleted, "sidecar_ready") == 1
    assert_consistent(deleted)
    for reason in set(REASONS) - {"invalid_secret", "marked_for_deletion", "not_found"}:
        assert errors(deleted, reason) == 0, reason


def test_requests_counted_by_route_and_code(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """Each request to the keys listener is counted once under its route and status code."""
    sidecar = start_sidecar(make_secret(), metrics_port=-1)
    before = requests_by_route(scrape(sidecar))

    etag = sidecar.get("/v1/keys").headers["ETag"]
    sidecar.get("/v1/keys", {"If-None-Match": etag})
    sidecar.get("/v1/keys", token=False)
    sidecar.get("/v1/keys", {"X-Forwarded-For": "203.0.113.7"})
    sidecar.get("/no/such/path")
    sidecar.get("/healthz")
    http_request(sidecar.url("/v1/keys"), method="POST", headers={"X-Sidecar-Token": TOKEN})
    # The metrics listener's own routes are not counted.
    http_request(sidecar.metrics_url("/readyz"))
    http_request(sidecar.metrics_url("/healthz"))
    after = requests_by_route(scrape(sidecar))

    added = {key: count - before.get(key, 0) for key, count in after.items()}
    assert {key: count for key, count in added.items() if count} == {
        ("/v1/keys", "200"): 1,
        ("/v1/keys", "304"): 1,
        ("/v1/keys", "403"): 1,
        ("/v1/keys", "400"): 1,
        ("other", "404"): 1,
        ("/healthz", "200"): 1,
        ("/v1/keys", "405"): 1,
    }


def test_not_ready_until_first_load(
    start_sidecar: Callable[..., SidecarProcess], secrets_client: Any
) -> None:
    """Before the first load nothing is loaded, stale or served, and the first load counts."""
    secret_id = f"test/{uuid.uuid4().hex}"
    sidecar = start_sidecar(secret_id, metrics_port=-1, wait_ready=False)

    waiting = wait_for_scrape(
        sidecar, lambda s: errors(s, "not_found") >= 1, "the missing secret is not counted"
    )
    assert gauge(waiting, "sidecar_keys_loaded") == 0
    assert gauge(waiting, "sidecar_ready") == 0
    assert gauge(waiting, "sidecar_keys_stale") == 0
    assert gauge(waiting, "sidecar_reloads_total") == 0
    assert gauge(waiting, "sidecar_last_success_timestamp_seconds") == 0
    assert served_versions(waiting) == []
    assert http_request(sidecar.metrics_url("/readyz")).status == 503

    created = secrets_client.create_secret(
        Name=secret_id, SecretString=pair_string(CURRENT_KEY, None)
    )
    try:
        loaded = wait_for_scrape(
            sidecar, lambda s: gauge(s, "sidecar_ready") == 1, "not ready after the secret exists"
        )
    finally:
        secrets_client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
    assert gauge(loaded, "sidecar_keys_loaded") == 1
    assert gauge(loaded, "sidecar_reloads_total") == 1
    assert polls(loaded, "changed") == 1
    assert served_versions(loaded) == [created["VersionId"]]


def test_ready_drops_past_max_staleness(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """sidecar_ready follows /readyz: 0 past SIDECAR_MAX_STALENESS, 1 after a success."""
    secret_id = make_secret()
    sidecar = start_sidecar(secret_id, metrics_port=-1, max_staleness=2)
    secrets_client.delete_secret(SecretId=secret_id, RecoveryWindowInDays=7)

    unready = wait_for_scrape(
        sidecar, lambda s: gauge(s, "sidecar_ready") == 0, "sidecar_ready stays 1 past the limit"
    )
    assert gauge(unready, "sidecar_keys_stale") == 1
    assert gauge(unready, "sidecar_keys_loaded") == 1
    assert http_request(sidecar.metrics_url("/readyz")).status == 503

    secrets_client.restore_secret(SecretId=secret_id)
    ready = wait_for_scrape(
        sidecar, lambda s: gauge(s, "sidecar_ready") == 1, "sidecar_ready stays 0 after recovery"
    )
    assert gauge(ready, "sidecar_keys_stale") == 0
    assert http_request(sidecar.metrics_url("/readyz")).status == 200


def test_scrape_exports_interface_names(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """A scrape has every documented name, no *_created twins, and no key material."""
    sidecar = start_sidecar(make_secret(), metrics_port=-1)
    sidecar.keys()

    scraped = scrape(sidecar)

    assert scraped.names() >= INTERFACE_NAMES
    assert not [name for name in scraped.names() if name.endswith("_created")]
    for secret in (CURRENT_KEY, PREVIOUS_KEY, TOKEN):
        assert secret not in scraped.text


def test_promtool_check_metrics_clean(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """`promtool check metrics` reports nothing on a live scrape."""
    promtool = require_promtool()
    sidecar = start_sidecar(make_secret(), metrics_port=-1)
    sidecar.keys()
    sidecar.get("/v1/keys", token=False)
    text = scrape(sidecar).text

    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )

    assert result.stdout == b""
    assert result.stderr == b""
    assert result.returncode == 0
