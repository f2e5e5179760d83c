"""POST /v1/verify: matching against both keys, bad bodies, limits and the metric."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from typing import Any

import pytest

from tests.app_helpers import metric_value, post, verify
from tests.conftest import CURRENT_KEY, PREVIOUS_KEY, pair_string
from tests.helpers import SidecarProcess

VERIFY_METRIC = "sidecar_verify_total"


@pytest.fixture
def sidecar(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> SidecarProcess:
    """A ready sidecar serving CURRENT_KEY and PREVIOUS_KEY, with its metrics listener on."""
    return start_sidecar(make_secret(), metrics_port=-1)


def test_verify_matches_each_key_and_counts(sidecar: SidecarProcess) -> None:
    """The current and previous keys are valid, anything else is not, and each is counted."""
    before = {
        result: metric_value(sidecar, VERIFY_METRIC, result=result)
        for result in ("current", "previous", "invalid")
    }

    current = verify(sidecar, CURRENT_KEY)
    previous = verify(sidecar, PREVIOUS_KEY)
    wrong = [
        verify(sidecar, key)
        for key in ("wrong-key", CURRENT_KEY + "x", CURRENT_KEY[:-1], CURRENT_KEY.upper(), " ")
    ]

    assert current.status == 200
    assert current.json() == {"valid": True, "matched": "current"}
    assert previous.status == 200
    assert previous.json() == {"valid": True, "matched": "previous"}
    for reply in wrong:
        assert reply.status == 200
        assert reply.json() == {"valid": False, "matched": None}
    assert before == {"current": 0.0, "previous": 0.0, "invalid": 0.0}
    assert metric_value(sidecar, VERIFY_METRIC, result="current") == 1.0
    assert metric_value(sidecar, VERIFY_METRIC, result="previous") == 1.0
    assert metric_value(sidecar, VERIFY_METRIC, result="invalid") == len(wrong)


def test_verify_without_previous_key(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """With no previous key, only the current key is valid."""
    sidecar = start_sidecar(make_secret(pair_string(CURRENT_KEY, None)))

    assert verify(sidecar, CURRENT_KEY).json() == {"valid": True, "matched": "current"}
    assert verify(sidecar, PREVIOUS_KEY).json() == {"valid": False, "matched": None}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "empty"),
        (b"not json", "not valid JSON"),
        (b'{"key": "abc"} trailing', "not valid JSON"),
        (b"\xff\xfe\x00", "not"),
        (b'["' + CURRENT_KEY.encode() + b'"]', "JSON array, not an object"),
        (b'"' + CURRENT_KEY.encode() + b'"', "JSON string, not an object"),
        (b"{}", 'field "key" is missing'),
        (b'{"key": 42}', 'field "key" is a JSON number, not a string'),
        (b'{"key": null}', 'field "key" is a JSON null, not a string'),
        (b'{"key": ["a"]}', 'field "key" is a JSON array, not a string'),
        (b'{"key": ""}', "empty string"),
        (b'{"key": "' + CURRENT_KEY.encode() + b'", "extra": 1}', '1 field(s) besides "key"'),
        (b'{"' + CURRENT_KEY.encode() + b'": "x"}', 'field "key" is missing'),
    ],
)
def test_verify_bad_body_gets_400(sidecar: SidecarProcess, body: bytes, expected: str) -> None:
    """A body that is not {"key": "<string>"} gets 400 naming the problem, without the key."""
    reply = post(sidecar, "/v1/verify", body)
    message = reply.json()["error"]

    assert reply.status == 400
    assert expected in message
    assert '{"key": "<api key>"}' in message
    assert CURRENT_KEY not in reply.body.decode("utf-8", "replace")


def test_verify_body_over_4_kib_gets_413(sidecar: SidecarProcess) -> None:
    """A body of more than 4096 bytes gets 413, announced by length or sent chunked."""
    too_long = b'{"key": "' + b"k" * 4096 + b'"}'
    at_limit = b'{"key": "' + b"k" * (4096 - 11) + b'"}'

    announced = post(sidecar, "/v1/verify", too_long)
    chunked = _post_chunked(sidecar, too_long)
    accepted = post(sidecar, "/v1/verify", at_limit)

    assert announced.status == 413
    assert "larger than 4096 bytes" in announced.json()["error"]
    assert chunked[0] == 413
    assert len(at_limit) == 4096
    assert accepted.status == 200
    assert accepted.json() == {"valid": False, "matched": None}


def _post_chunked(sidecar: SidecarProcess, body: bytes) -> tuple[int, bytes]:
    """POST ``body`` with chunked transfer encoding, so no Content-Length announces its size."""
    connection = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=5)
    try:
        headers = {"X-Sidecar-Token": sidecar.token or "", "Content-Type": "application/json"}
        chunks = (body[i : i + 1000] for i in range(0, len(body), 1000))
        connection.request("POST", "/v1/verify", body=chunks, headers=headers, encode_chunked=True)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def test_verify_token_and_hop_rules(sidecar: SidecarProcess) -> None:
    """Verify needs the token and rejects proxied requests, like /v1/keys."""
    body = b'{"key": "' + CURRENT_KEY.encode() + b'"}'

    missing = post(sidecar, "/v1/verify", body, token=False)
    wrong = post(sidecar, "/v1/verify", body, {"X-Sidecar-Token": "x" * 26}, token=False)
    proxied = post(sidecar, "/v1/verify", body, {"X-Forwarded-For": "10.0.0.1"})

    assert missing.status == 403
    assert wrong.status == 403
    assert proxied.status == 400
    assert metric_value(sidecar, VERIFY_METRIC, result="current") == 0.0


def test_verify_needs_post(sidecar: SidecarProcess) -> None:
    """GET /v1/verify gets 405 with an Allow header naming POST."""
    reply = sidecar.get("/v1/verify")

    assert reply.status == 405
    assert reply.headers["Allow"] == "POST"


def test_verify_before_keys_load_gets_503(
    start_sidecar: Callable[..., SidecarProcess],
) -> None:
    """Before the first successful poll there is nothing to compare with: 503."""
    sidecar = start_sidecar("test/no-such-secret", wait_ready=False)

    reply = verify(sidecar, CURRENT_KEY)

    assert reply.status == 503
    assert "not loaded" in reply.json()["error"]


def test_verify_after_rotation_uses_new_pair(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """After a rotation the old previous key is rejected and the old current key is previous."""
    secret_id = make_secret()
    sidecar = start_sidecar(secret_id)
    new_key = "key-rotated-DDDDDDDDDDDDDDDDDDDDDDDDD"
    version = secrets_client.put_secret_value(
        SecretId=secret_id, SecretString=pair_string(new_key, CURRENT_KEY)
    )["VersionId"]
    sidecar.wait_for_version(version)

    assert verify(sidecar, new_key).json()["matched"] == "current"
    assert verify(sidecar, CURRENT_KEY).json()["matched"] == "previous"
    assert verify(sidecar, PREVIOUS_KEY).json()["valid"] is False


def test_verify_longest_escaped_key(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """A key of the maximum length, every character JSON-escaped, fits the body limit."""
    from sidecar.secret import MAX_KEY_LENGTH  # noqa: PLC0415

    longest = '"\\' * (MAX_KEY_LENGTH // 2)
    sidecar = start_sidecar(make_secret(pair_string(longest, None)))

    reply = verify(sidecar, longest)

    assert len(longest) == MAX_KEY_LENGTH
    assert reply.status == 200
    assert reply.json() == {"valid": True, "matched": "current"}


@pytest.mark.parametrize(
    ("body", "expected_error"),
    [
        (b"[" * 3000, "nested too deeply"),
        (b'{"key": "a", "key": "b"}', "duplicate field name"),
    ],
)
def test_verify_hostile_body_400(sidecar: SidecarProcess, body: bytes, expected_error: str) -> None:
    """Deep nesting and duplicate fields get a JSON 400, not a 500."""
    reply = post(sidecar, "/v1/verify", body)

    assert reply.status == 400
    assert expected_error in reply.json()["error"]
    assert "request.failed" not in sidecar.log_text()
