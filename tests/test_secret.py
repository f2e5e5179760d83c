"""The SecretString parser: valid pairs and one clear error for everything else."""

from __future__ import annotations

import json

import pytest

from sidecar.errors import InvalidSecretError
from sidecar.secret import MAX_SECRET_BYTES, KeyPair, format_secret_string, parse_secret_string

CURRENT = "API_KEY_CURRENT"
PREVIOUS = "API_KEY_PREVIOUS"
KEY_A = "a" * 32
KEY_B = "b" * 32


def parse(text: str) -> KeyPair:
    return parse_secret_string(text, CURRENT, PREVIOUS)


def test_pair_with_both_keys() -> None:
    """Both fields are read into the pair."""
    pair = parse(json.dumps({CURRENT: KEY_A, PREVIOUS: KEY_B}))

    assert pair.current == KEY_A
    assert pair.previous == KEY_B


@pytest.mark.parametrize("previous", ["absent", None, ""])
def test_previous_optional(previous: str | None) -> None:
    """An absent, null or empty previous field means there is no previous key."""
    document: dict[str, object] = {CURRENT: KEY_A}
    if previous != "absent":
        document[PREVIOUS] = previous

    assert parse(json.dumps(document)).previous is None


def test_other_fields_ignored() -> None:
    """Fields other than the two key fields are allowed and ignored."""
    pair = parse(json.dumps({CURRENT: KEY_A, "note": {"nested": [1, 2]}}))

    assert pair == KeyPair(current=KEY_A, previous=None)


def test_custom_field_names() -> None:
    """The field names come from the caller (SIDECAR_CURRENT_FIELD and SIDECAR_PREVIOUS_FIELD)."""
    pair = parse_secret_string(json.dumps({"now": KEY_A, "before": KEY_B}), "now", "before")

    assert pair == KeyPair(current=KEY_A, previous=KEY_B)


@pytest.mark.parametrize(
    ("text", "expected_message"),
    [
        ("not json", "not valid JSON at character 0"),
        ("", "not valid JSON"),
        ("[1, 2]", "JSON an array, expected a JSON object"),
        ('"just a string"', "JSON a string, expected a JSON object"),
        ("42", "JSON a number, expected a JSON object"),
        ("null", "JSON null, expected a JSON object"),
        (json.dumps({PREVIOUS: KEY_B}), f"no field {CURRENT!r}"),
        (json.dumps({CURRENT: ""}), f"{CURRENT!r} is an empty string"),
        (json.dumps({CURRENT: None}), f"{CURRENT!r} is null"),
        (json.dumps({CURRENT: 12345}), f"{CURRENT!r} is a number"),
        (json.dumps({CURRENT: [KEY_A]}), f"{CURRENT!r} is an array"),
        (json.dumps({CURRENT: KEY_A, PREVIOUS: 7}), f"{PREVIOUS!r} is a number"),
        (json.dumps({CURRENT: KEY_A, PREVIOUS: {"k": KEY_B}}), f"{PREVIOUS!r} is an object"),
        (json.dumps({CURRENT: KEY_A, PREVIOUS: True}), f"{PREVIOUS!r} is a boolean"),
        (json.dumps({CURRENT: "has space"}), f"{CURRENT!r} is invalid"),
        (json.dumps({CURRENT: "line\nbreak"}), f"{CURRENT!r} is invalid"),
        (json.dumps({CURRENT: "x" * 1025}), f"{CURRENT!r} is invalid"),
        (json.dumps({CURRENT: "caf\u00e9"}), f"{CURRENT!r} is invalid"),
        ('{"API_KEY_CURRENT": "\\ud800"}', f"{CURRENT!r} is invalid"),
        (json.dumps({CURRENT: KEY_A, PREVIOUS: " "}), f"{PREVIOUS!r} is invalid"),
        (f'{{"{CURRENT}": "{KEY_A}", "{CURRENT}": "{KEY_B}"}}', "more than once"),
        ("[" * 30_000 + "]" * 30_000, "nested too deeply"),
    ],
)
def test_invalid_secret_names_problem(text: str, expected_message: str) -> None:
    """Each invalid SecretString raises InvalidSecretError naming the problem."""
    with pytest.raises(InvalidSecretError) as raised:
        parse(text)

    assert expected_message in str(raised.value)


def test_error_never_contains_value() -> None:
    """An invalid key value is named by its field, never quoted in the message."""
    bad_key = "secret value with spaces"
    with pytest.raises(InvalidSecretError) as raised:
        parse(json.dumps({CURRENT: KEY_A, PREVIOUS: bad_key}))

    assert bad_key not in str(raised.value)
    assert KEY_A not in str(raised.value)


def test_oversized_secret_rejected() -> None:
    """A SecretString over the Secrets Manager size limit is rejected before parsing."""
    text = json.dumps({CURRENT: KEY_A, "padding": "p" * MAX_SECRET_BYTES})

    with pytest.raises(InvalidSecretError, match="larger than"):
        parse(text)


def test_repr_hides_keys() -> None:
    """repr() of a pair shows neither key."""
    text = repr(KeyPair(current=KEY_A, previous=KEY_B))

    assert KEY_A not in text
    assert KEY_B not in text


def test_format_round_trips() -> None:
    """format_secret_string writes what parse_secret_string reads."""
    pair = KeyPair(current=KEY_A, previous=None)

    assert parse(format_secret_string(pair, CURRENT, PREVIOUS)) == pair


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_rejected(constant: str) -> None:
    """NaN and Infinity, which json.loads accepts, are not JSON and make the secret invalid."""
    text = f'{{"{CURRENT}": "{KEY_A}", "padding": {constant}}}'

    with pytest.raises(InvalidSecretError, match="is not a JSON number"):
        parse(text)


def test_duplicate_field_name_not_quoted() -> None:
    """The duplicate-field error does not quote the name, which might be a misplaced key."""
    text = f'{{"{KEY_B}": 1, "{KEY_B}": 2, "{CURRENT}": "{KEY_A}"}}'

    with pytest.raises(InvalidSecretError) as raised:
        parse(text)

    assert "more than once" in str(raised.value)
    assert KEY_B not in str(raised.value)
