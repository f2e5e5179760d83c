"""Parse a SecretString into an API key pair.

The rotation commands use this parser too, so they cannot write a secret that the
sidecar would reject.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sidecar.errors import InvalidSecretError

# Secrets Manager stores at most 65,536 bytes in one SecretString.
MAX_SECRET_BYTES = 65_536
# 1024 characters leave room for a key, fully JSON-escaped, in the 4096-byte
# body that POST /v1/verify accepts, so every valid key can be verified.
MAX_KEY_LENGTH = 1024
KEY_RULE = f"1 to {MAX_KEY_LENGTH} visible ASCII characters (no spaces or control characters)"


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An API key pair. ``previous`` is None when the secret has no previous key."""

    current: str
    previous: str | None

    def __repr__(self) -> str:
        # Keeps the keys out of tracebacks, debug output and assertion messages.
        previous = "None" if self.previous is None else "'<hidden>'"
        return f"KeyPair(current='<hidden>', previous={previous})"


def is_valid_key(value: str) -> bool:
    """Tell whether ``value`` has the shape of an API key (see ``KEY_RULE``)."""
    if not 1 <= len(value) <= MAX_KEY_LENGTH:
        return False
    return all("!" <= char <= "~" for char in value)


def _reject_constant(name: str) -> None:
    # json.loads accepts NaN, Infinity and -Infinity, which are not JSON (RFC 8259).
    msg = f"the secret is not valid JSON: {name} is not a JSON number"
    raise InvalidSecretError(msg)


def _reject_duplicate_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            # json.loads would keep the last value silently, so two writers could
            # disagree about which key is current. The name is not quoted: a
            # mistaken edit may have put a key where a field name belongs.
            msg = "the secret has a field name more than once"
            raise InvalidSecretError(msg)
        result[name] = value
    return result


def parse_secret_string(text: str, current_field: str, previous_field: str) -> KeyPair:
    """Parse a SecretString into a KeyPair or raise InvalidSecretError.

    The current field must hold a key. The previous field may be absent, null or an
    empty string, all meaning that there is no previous key, because a first
    deployment has none.
    """
    document = _load_object(text)
    if current_field not in document:
        msg = f"the secret has no field {current_field!r}, which must hold the current key"
        raise InvalidSecretError(msg)
    current = document[current_field]
    if not isinstance(current, str) or current == "":
        msg = f"the field {current_field!r} is {_describe(current)}, expected a non-empty string"
        raise InvalidSecretError(msg)
    _check_key(current_field, current)

    previous = document.get(previous_field)
    if previous is None or previous == "":
        return KeyPair(current=current, previous=None)
    if not isinstance(previous, str):
        msg = f"the field {previous_field!r} is {_describe(previous)}, expected a string or null"
        raise InvalidSecretError(msg)
    _check_key(previous_field, previous)
    return KeyPair(current=current, previous=previous)


def _load_object(text: str) -> dict[str, Any]:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SECRET_BYTES:
        msg = f"the secret is larger than {MAX_SECRET_BYTES} bytes"
        raise InvalidSecretError(msg)
    try:
        document = json.loads(
            text, object_pairs_hook=_reject_duplicate_fields, parse_constant=_reject_constant
        )
    except RecursionError:
        msg = "the secret is not valid JSON: nested too deeply"
        raise InvalidSecretError(msg) from None
    except ValueError as error:
        # A JSONDecodeError message never quotes the document, and the position
        # helps find the typo.
        position = getattr(error, "pos", None)
        where = f" at character {position}" if position is not None else ""
        msg = f"the secret is not valid JSON{where}: expected a JSON object with the key fields"
        raise InvalidSecretError(msg) from None
    if not isinstance(document, dict):
        msg = f"the secret is JSON {_describe(document)}, expected a JSON object"
        raise InvalidSecretError(msg)
    return document


def _check_key(field_name: str, value: str) -> None:
    if not is_valid_key(value):
        msg = f"the field {field_name!r} is invalid: expected {KEY_RULE}"
        raise InvalidSecretError(msg)


def format_secret_string(pair: KeyPair, current_field: str, previous_field: str) -> str:
    """Serialise a KeyPair as the SecretString that ``parse_secret_string`` reads."""
    return json.dumps({current_field: pair.current, previous_field: pair.previous})


def _describe(value: object) -> str:
    """Name the JSON type of ``value`` without showing it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if value == "" else "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
