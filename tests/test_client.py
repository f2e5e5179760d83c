"""sidecar.client.SidecarClient against a live sidecar process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.client import Keys, SidecarClient, SidecarClientError, VerifyResult
from tests.conftest import CURRENT_KEY, PREVIOUS_KEY, pair_string, put_secret
from tests.helpers import TOKEN, SidecarProcess

NEW_KEY = "key-client-HHHHHHHHHHHHHHHHHHHHHHHHHH"
NO_TIMED_POLLS = 3600


def base_url(sidecar: SidecarProcess) -> str:
    """Return the keys listener's base URL."""
    return sidecar.url("")


async def test_client_fetches_with_token_file(
    tmp_path: Path,
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
) -> None:
    """The client reads the token file that the sidecar created and caches the pair."""
    token_file = tmp_path / "token"
    sidecar = start_sidecar(make_secret(), token=None, token_file=token_file)

    async with SidecarClient(base_url(sidecar), token_file=token_file) as client:
        keys = await client.fetch()

    assert keys.current == CURRENT_KEY
    assert keys.previous == PREVIOUS_KEY
    assert keys.etag == f'"{keys.version_id}"'
    assert keys.stale is False
    assert client.keys is keys
    assert CURRENT_KEY not in repr(keys)
    assert PREVIOUS_KEY not in repr(keys)


async def test_client_verify_and_local_check(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """verify() on the sidecar and check() on the cached pair agree on every key."""
    sidecar = start_sidecar(make_secret())
    cases = {
        CURRENT_KEY: VerifyResult(valid=True, matched="current"),
        PREVIOUS_KEY: VerifyResult(valid=True, matched="previous"),
        "not-a-key": VerifyResult(valid=False, matched=None),
    }

    async with SidecarClient(base_url(sidecar), token=TOKEN) as client:
        with pytest.raises(SidecarClientError, match="no key pair cached yet"):
            client.check(CURRENT_KEY)
        await client.fetch()
        remote = {key: await client.verify(key) for key in cases}
        local = {key: client.check(key) for key in cases}

    assert remote == cases
    assert local == cases


async def test_client_watch_follows_rotation(
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
    secrets_client: Any,
) -> None:
    """watch() yields the pair at once and the new pair right after a rotation loads."""
    secret_id = make_secret()
    sidecar = start_sidecar(secret_id, poll_interval=NO_TIMED_POLLS)
    seen: list[Keys] = []

    async with SidecarClient(base_url(sidecar), token=TOKEN) as client:
        async with asyncio.timeout(30):
            async for keys in client.watch(wait=20):
                seen.append(keys)
                if len(seen) == 1:
                    new_version = await asyncio.to_thread(
                        put_secret, secrets_client, secret_id, pair_string(NEW_KEY, CURRENT_KEY)
                    )
                    refreshed = await client.refresh()
                if len(seen) == 2:
                    break

    assert refreshed.changed is True
    assert refreshed.version_id == new_version
    assert seen[0].current == CURRENT_KEY
    assert seen[1].current == NEW_KEY
    assert seen[1].previous == CURRENT_KEY
    assert seen[1].version_id == new_version


async def test_client_watch_retries_until_keys_load(
    start_sidecar: Callable[..., SidecarProcess], secrets_client: Any
) -> None:
    """watch() backs off through 503 replies and yields once the secret appears."""
    secret_id = f"test/{uuid.uuid4().hex}"
    sidecar = start_sidecar(secret_id, wait_ready=False)

    async with SidecarClient(
        base_url(sidecar), token=TOKEN, backoff_initial=0.1, backoff_max=0.5
    ) as client:
        with pytest.raises(SidecarClientError) as before:
            await client.fetch()
        await asyncio.to_thread(
            secrets_client.create_secret, Name=secret_id, SecretString=pair_string(NEW_KEY)
        )
        async with asyncio.timeout(30):
            first = await anext(aiter(client.watch(wait=5)))

    assert before.value.status == 503
    assert first.current == NEW_KEY
    assert first.previous is None


async def test_client_rereads_token_file_on_403(
    tmp_path: Path,
    make_secret: Callable[..., str],
    start_sidecar: Callable[..., SidecarProcess],
) -> None:
    """A rejected token is read again from the file once, so a replaced file is picked up."""
    sidecar = start_sidecar(make_secret())
    token_file = tmp_path / "token"
    token_file.write_text("wrong-token-0123456789abcdef\n")

    async with SidecarClient(base_url(sidecar), token_file=token_file) as client:
        with pytest.raises(SidecarClientError) as rejected:
            await client.fetch()
        token_file.write_text(TOKEN + "\n")
        keys = await client.fetch()

    assert rejected.value.status == 403
    assert "invalid X-Sidecar-Token" in str(rejected.value)
    assert keys.current == CURRENT_KEY


async def test_client_refresh_rate_limited(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """A throttled refresh raises SidecarClientError with status 429 and retry_after."""
    sidecar = start_sidecar(make_secret(), poll_interval=NO_TIMED_POLLS, refresh_min_interval=30)

    async with SidecarClient(base_url(sidecar), token=TOKEN) as client:
        first = await client.refresh()
        with pytest.raises(SidecarClientError) as throttled:
            await client.refresh()

    assert first.changed is False
    assert throttled.value.status == 429
    assert throttled.value.retry_after is not None
    assert 1 <= throttled.value.retry_after <= 30


async def test_client_unreachable_sidecar() -> None:
    """A refused connection becomes SidecarClientError without a status."""
    from tools.emulator import free_port  # noqa: PLC0415

    async with SidecarClient(f"http://127.0.0.1:{free_port()}", token=TOKEN) as client:
        with pytest.raises(SidecarClientError, match="cannot reach the sidecar") as caught:
            await client.fetch()

    assert caught.value.status is None
