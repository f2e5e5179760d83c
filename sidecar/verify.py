"""POST /v1/verify: parse the request body and check a key against the served pair.

The keys API reads the body before this module sees it, and rejects one over
4096 bytes with 413. A valid key has at most 1024 characters, so it fits even
with every character escaped.

The key is compared in constant time against both keys of the pair. Both
comparisons always run, on SHA-256 digests of equal length, so the response time
reveals neither which key matched nor how long the keys are. No error message
quotes the body, because it may hold a key.
"""

from __future__ import annotations

import hmac
import json
from typing import Literal

from sidecar.cache import KeySnapshot, key_digest

ACCEPTED_BODY = 'expected a JSON object with one string field, {"key": "<api key>"}'

Match = Literal["current", "previous"] | None


class InvalidBodyError(Exception):
    """Raised when a request body is not a valid verify request; the message explains why."""


def parse_verify_body(body: bytes) -> str:
    """Return the key from a ``{"key": "..."}`` body or raise InvalidBodyError."""
    if not body:
        msg = f"the request body is empty; {ACCEPTED_BODY}"
        raise InvalidBodyError(msg)
    try:
        document = json.loads(body, object_pairs_hook=_reject_duplicate_fields)
    except RecursionError:
        msg = f"the request body is nested too deeply; {ACCEPTED_BODY}"
        raise InvalidBodyError(msg) from None
    except UnicodeDecodeError:
        msg = f"the request body is not UTF-8 text; {ACCEPTED_BODY}"
        raise InvalidBodyError(msg) from None
    except json.JSONDecodeError as error:
        # The position helps find the mistake; the message never quotes the body.
        reason = f"{error.msg} at byte {error.pos}"
        msg = f"the request body is not valid JSON ({reason}); {ACCEPTED_BODY}"
        raise InvalidBodyError(msg) from None
    if not isinstance(document, dict):
        msg = f"the request body is a JSON {json_type(document)}, not an object; {ACCEPTED_BODY}"
        raise InvalidBodyError(msg)
    if "key" not in document:
        msg = f'the field "key" is missing; {ACCEPTED_BODY}'
        raise InvalidBodyError(msg)
    if len(document) > 1:
        # Field names are not quoted either: a caller may have put a key in one.
        msg = f'the object has {len(document) - 1} field(s) besides "key"; {ACCEPTED_BODY}'
        raise InvalidBodyError(msg)
    key = document["key"]
    if not isinstance(key, str):
        msg = f'the field "key" is a JSON {json_type(key)}, not a string; {ACCEPTED_BODY}'
        raise InvalidBodyError(msg)
    if not key:
        msg = f'the field "key" is an empty string; {ACCEPTED_BODY}'
        raise InvalidBodyError(msg)
    return key


def _reject_duplicate_fields(pairs: list[tuple[str, object]]) -> dict[str, object]:
    document = dict(pairs)
    if len(document) != len(pairs):
        # json.loads would keep the last value silently; the secret parser rejects
        # duplicates too. Names are not quoted, because a caller may put a key in one.
        msg = f"the request body has a duplicate field name; {ACCEPTED_BODY}"
        raise InvalidBodyError(msg)
    return document


def json_type(value: object) -> str:
    """Name the JSON type of a decoded value: object, array, string, number, boolean or null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def match_key(snapshot: KeySnapshot, key: str) -> Match:
    """Return which key of the pair ``key`` is, in time independent of the result."""
    digest = key_digest(key)
    # Both comparisons run every time: no short-circuit between them.
    is_current = hmac.compare_digest(digest, snapshot.current_digest)
    is_previous = hmac.compare_digest(digest, snapshot.previous_digest)
    if is_current:
        return "current"
    if is_previous:
        return "previous"
    return None
