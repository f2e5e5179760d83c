"""Fuzz the SecretString parser and the poll loop with hypothesis.

Any SecretString must give either a valid KeyPair or one InvalidSecretError, and a
poll of an invalid value must fail with PollError while the last good pair stays
served. Any other exception fails these tests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from sidecar.cache import KeyCache
from sidecar.errors import InvalidSecretError, PollError
from sidecar.metrics import Metrics
from sidecar.poller import Poller
from sidecar.secret import MAX_SECRET_BYTES, is_valid_key, parse_secret_string
from sidecar.settings import load_settings
from sidecar.source import SecretSource
from tests.conftest import CURRENT_KEY, PREVIOUS_KEY, pair_string, put_secret
from tests.helpers import TOKEN
from tools.emulator import Emulator, client_environment

CURRENT = "API_KEY_CURRENT"
PREVIOUS = "API_KEY_PREVIOUS"
# Every generated key contains this marker, so an error message that quotes a key
# is easy to find.
MARKER = "kEyMaRk"

# Keys: mostly valid (visible ASCII), sometimes with spaces, control characters,
# non-ASCII or lone surrogates, and sometimes over the 1024-character limit.
valid_keys = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
odd_keys = st.text(max_size=40)
long_keys = st.integers(min_value=1000, max_value=1100).map(lambda length: "k" * length)
keys = st.one_of(valid_keys, odd_keys, long_keys).map(lambda text: MARKER + text)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(keys, json_values, st.just(""))


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A JSON object with some of the key fields, other fields, and maybe duplicates."""
    members: list[tuple[str, Any]] = []
    if draw(st.booleans()):
        members.append((CURRENT, draw(field_values)))
    if draw(st.booleans()):
        members.append((PREVIOUS, draw(field_values)))
    members.extend(draw(st.lists(st.tuples(st.text(max_size=12), json_values), max_size=3)))
    if draw(st.booleans()) and members:
        members.append(draw(st.sampled_from(members)))  # a duplicate field
    members = draw(st.permutations(members))
    ensure_ascii = draw(st.booleans())
    body = ", ".join(
        f"{json.dumps(name, ensure_ascii=ensure_ascii)}: "
        f"{json.dumps(value, ensure_ascii=ensure_ascii)}"
        for name, value in members
    )
    return "{" + body + "}"


# Escapes of lone surrogates, and raw ones, in the key fields and around them.
surrogate_documents = st.sampled_from(
    [
        '{"API_KEY_CURRENT": "\\ud800"}',
        '{"API_KEY_CURRENT": "abc\\udfff", "API_KEY_PREVIOUS": "\\ud83d"}',
        '{"API_KEY_CURRENT": "ok-key", "API_KEY_PREVIOUS": "\\udc00x"}',
        '{"\\ud800": "x", "API_KEY_CURRENT": "ok-key"}',
        '{"API_KEY_CURRENT": "\ud800"}',
        '\ud800{"API_KEY_CURRENT": "ok-key"}',
        '{"API_KEY_CURRENT": "\\ud83d\\ude00"}',
    ]
)
# Deep nesting, inside and outside the object, up to and past the recursion limit.
nested_documents = st.builds(
    lambda opener, closer, depth, inside: (
        '{"API_KEY_CURRENT": ' + opener * depth + '"x"' + closer * depth + "}"
        if inside
        else opener * depth + closer * depth
    ),
    st.sampled_from(["[", '{"a":']),
    st.sampled_from(["]", "}"]),
    st.integers(min_value=0, max_value=30_000),
    st.booleans(),
)
# Numbers that json accepts but Python may not convert: huge integers, NaN, Infinity.
number_documents = st.builds(
    lambda literal: '{"API_KEY_CURRENT": ' + literal + "}",
    st.one_of(
        st.integers(min_value=1, max_value=6000).map(lambda digits: "9" * digits),
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "1.5e-400"]),
    ),
)
# Sizes around the 64 KiB Secrets Manager maximum: a valid pair padded with spaces,
# and plain repeated text.
padded_documents = st.builds(
    lambda padding: pair_string(CURRENT_KEY, PREVIOUS_KEY) + " " * padding,
    st.integers(min_value=MAX_SECRET_BYTES - 200, max_value=MAX_SECRET_BYTES + 200),
)
repeated_text = st.builds(
    lambda unit, count: unit * count,
    st.text(min_size=1, max_size=4),
    st.integers(min_value=0, max_value=MAX_SECRET_BYTES // 2 + 100),
)
# Well-formed pairs, so that the accepting path is fuzzed as often as the rejecting one.
pair_documents = st.builds(
    pair_string,
    valid_keys.filter(bool),
    st.one_of(st.none(), st.just(""), valid_keys),
)
secret_strings = st.one_of(
    documents(),
    pair_documents,
    surrogate_documents,
    nested_documents,
    number_documents,
    padded_documents,
    repeated_text,
    st.text(max_size=200),
    st.sampled_from(["", " ", "{}", "[]", "null", '""', "{", '{"API_KEY_CURRENT"}']),
)


def check_parse(text: str) -> None:
    """Parse ``text`` and check the outcome: a valid pair or one InvalidSecretError."""
    try:
        pair = parse_secret_string(text, CURRENT, PREVIOUS)
    except InvalidSecretError as error:
        event("rejected")
        message = str(error)
        assert message
        assert MARKER not in message
        return

    event("parsed")
    assert len(text.encode("utf-8", "surrogatepass")) <= MAX_SECRET_BYTES
    document = json.loads(text)
    assert isinstance(document, dict)
    assert pair.current == document[CURRENT]
    assert is_valid_key(pair.current)
    assert pair.previous == (document.get(PREVIOUS) or None)
    assert pair.previous is None or is_valid_key(pair.previous)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=secret_strings)
def test_parser_returns_pair_or_invalid_secret(text: str) -> None:
    """Any SecretString gives a valid KeyPair or an InvalidSecretError, nothing else."""
    check_parse(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"API_KEY_CURRENT": "a", "API_KEY_CURRENT": "b"}',
        "[" * 100_000,
        '{"API_KEY_CURRENT": ' + "1" * 5000 + "}",
        '{"API_KEY_CURRENT": "\\ud800"}',
        " " * (MAX_SECRET_BYTES + 1),
        '{"API_KEY_CURRENT": ""}',
        '{"API_KEY_CURRENT": []}',
    ],
)
def test_parser_rejects_known_hard_cases(text: str) -> None:
    """Hard inputs named one by one are rejected with InvalidSecretError."""
    with pytest.raises(InvalidSecretError):
        parse_secret_string(text, CURRENT, PREVIOUS)


@pytest.fixture
def poll_runner(
    emulator: Emulator,
    make_secret: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[asyncio.Runner, Poller, KeyCache, str]]:
    """A Poller with a real aiobotocore client against the emulator, on one event loop."""
    for name, value in client_environment(emulator.endpoint).items():
        monkeypatch.setenv(name, value)
    secret_id = make_secret()
    settings_ = load_settings({"SIDECAR_SECRET_ID": secret_id, "SIDECAR_TOKEN": TOKEN})
    source = SecretSource(secret_id, connect_timeout=2, read_timeout=5)
    cache = KeyCache()
    with asyncio.Runner() as runner:
        runner.run(source.__aenter__())
        try:
            yield runner, Poller(settings_, source, cache, Metrics()), cache, secret_id
        finally:
            runner.run(source.__aexit__(None, None, None))


def test_poll_loop_survives_fuzzed_secrets(
    poll_runner: tuple[asyncio.Runner, Poller, KeyCache, str], secrets_client: Any
) -> None:
    """A poll of any value either loads a valid pair or fails with PollError.

    After a failure the cache still serves the last good pair, marked stale.
    """
    runner, poller, cache, secret_id = poll_runner
    runner.run(poller.poll_once())
    assert cache.state.snapshot is not None
    assert cache.state.snapshot.pair.current == CURRENT_KEY

    @settings(
        max_examples=12,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(text=secret_strings)
    # The hard cases always run, whatever hypothesis draws besides them.
    @example(text='{"API_KEY_CURRENT": "\ud800"}')
    @example(text='{"API_KEY_CURRENT": "\\udfff"}')
    @example(text="[" * 30_000)
    @example(text='{"API_KEY_CURRENT": ' + "9" * 5000 + "}")
    @example(text='{"API_KEY_CURRENT": "a-key", "API_KEY_CURRENT": "b-key"}')
    @example(text=pair_string(MARKER + "-padded", None).ljust(MAX_SECRET_BYTES))
    @example(text=pair_string(MARKER + "-valid", MARKER + "-old"))
    def poll_fuzzed_value(text: str) -> None:
        good = cache.state.snapshot
        assert good is not None
        # Secrets Manager rejects an empty SecretString and one over 64 KiB.
        assume(text != "")
        assume(len(text.encode("utf-8", "surrogatepass")) <= MAX_SECRET_BYTES)
        version_id = put_secret(secrets_client, secret_id, text)

        failure: PollError | None = None
        try:
            runner.run(poller.poll_once())
        except PollError as error:
            failure = error

        state = cache.state
        if failure is not None:
            event("poll failed")
            assert failure.reason == "invalid_secret"
            assert MARKER not in failure.detail
            assert state.snapshot is good
            assert state.stale
            return
        event("poll loaded")
        assert state.snapshot is not None
        assert state.snapshot.version_id == version_id
        assert is_valid_key(state.snapshot.pair.current)
        assert not state.stale

    poll_fuzzed_value()
