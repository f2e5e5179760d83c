"""Poll Secrets Manager on an interval, with backoff after failures.

One asyncio task runs ``Poller.run``. A poll that fails with a retryable error
(throttling, 5xx, connection errors, timeouts, expiring credentials) is retried
with exponential backoff through tenacity. A permanent error (access denied, not
found, marked for deletion, decryption failure, invalid secret) waits for the
next normal interval, so the loop never spins. The cache keeps serving the last
good pair through every failure.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential
from tenacity.wait import wait_base

from sidecar.cache import KeyCache, KeySnapshot
from sidecar.errors import InvalidSecretError, PollError
from sidecar.secret import KeyPair, parse_secret_string
from sidecar.source import SecretSource, SecretValue, classify_error

if TYPE_CHECKING:
    from sidecar.metrics import Metrics
    from sidecar.output import OutputFile
    from sidecar.settings import Settings

log = structlog.get_logger("sidecar.poller")


class EqualJitterBackoff(wait_base):
    """Exponential backoff with equal jitter.

    Attempt n waits a random time between half and all of
    min(maximum, initial x 2^(n-1)), so a fleet that failed together spreads out
    while every wait stays within the cap.
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random) -> None:
        self._exponential = wait_exponential(multiplier=initial, max=maximum)
        self._rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        """Return the wait in seconds before the next attempt."""
        ceiling = float(self._exponential(retry_state))
        return ceiling * self._rng.uniform(0.5, 1.0)


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, PollError) and error.retryable


@dataclass(frozen=True, slots=True)
class PollResult:
    """The outcome of one poll, given to the callers of Poller.request_poll."""

    changed: bool
    error: PollError | None = None


class _FailureStreak:
    """Consecutive failed polls with one reason and failing version, logged once."""

    def __init__(self, reason: str, failing_version: str | None) -> None:
        self.reason = reason
        self.failing_version = failing_version
        self.count = 0
        self.started = time.monotonic()


class Poller:
    """Keeps the cache filled from Secrets Manager."""

    def __init__(  # noqa: PLR0913 - collaborators are passed in so tests can build each one
        self,
        settings: Settings,
        source: SecretSource,
        cache: KeyCache,
        metrics: Metrics,
        rng: random.Random | None = None,
        *,
        output: OutputFile | None = None,
    ) -> None:
        self._settings = settings
        self._source = source
        self._cache = cache
        self._metrics = metrics
        self._output = output
        # Resolved by the first poll that starts after request_poll() created it.
        self._requested: asyncio.Future[PollResult] | None = None
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._wake = asyncio.Event()
        self._streak: _FailureStreak | None = None
        self._log = log.bind(secret_id=settings.secret_id)

    def next_interval(self) -> float:
        """Return the wait before the next normal poll: the interval +/- the jitter fraction."""
        jitter = self._settings.poll_jitter
        return self._settings.poll_interval * self._rng.uniform(1 - jitter, 1 + jitter)

    async def run(self) -> None:
        """Poll now, then forever at the configured interval; stops when cancelled."""
        backoff = EqualJitterBackoff(
            self._settings.backoff_initial, self._settings.backoff_max, self._rng
        )
        while True:
            retrying = AsyncRetrying(
                retry=retry_if_exception(_is_retryable),
                wait=backoff,
                sleep=self._sleep,
                before_sleep=self._log_retry,
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        await self._poll_for_requests()
            except PollError:
                # Permanent: already counted and logged; wait a normal interval.
                wait = self.next_interval()
                self._log.debug("poll.retry_scheduled", wait_s=round(wait, 3), retryable=False)
                await self._sleep(wait)
                continue
            if self._output is not None:
                await self._output.update(self._cache.state)
            await self._sleep(self.next_interval())

    def request_poll(self) -> asyncio.Future[PollResult]:
        """Wake the poller and return a future of the next poll's result.

        Callers that ask while no poll has started yet share one future, so they
        cause one GetSecretValue call. A poll already under way does not count,
        because it may have read the secret before the request.
        """
        if self._requested is None:
            self._requested = asyncio.get_running_loop().create_future()
        self.wake()
        return self._requested

    async def _poll_for_requests(self) -> None:
        requested, self._requested = self._requested, None
        try:
            changed = await self.poll_once()
        except PollError as error:
            _resolve(requested, PollResult(changed=False, error=error))
            raise
        except BaseException:
            if requested is not None:
                requested.cancel()
            raise
        _resolve(requested, PollResult(changed=changed))

    async def poll_once(self) -> bool:
        """Fetch and parse the secret once and update the cache.

        Returns whether a new version was loaded. Raises PollError after recording
        the failure.
        """
        started = time.perf_counter()
        value = None
        try:
            value = await self._source.fetch()
            current = self._cache.state.snapshot
            # A version's content never changes, so an unchanged id needs no parse.
            unchanged = current is not None and current.version_id == value.version_id
            pair = None if unchanged else await self._load_pair(value)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            failure = classify_error(error)
            self._metrics.poll_duration.observe(time.perf_counter() - started)
            # The version that failed to load, when the reply arrived but its value
            # was invalid; a new invalid version then starts a new streak.
            failing_version = value.version_id if value is not None else None
            self._record_failure(failure, failing_version)
            raise failure from error
        self._metrics.poll_duration.observe(time.perf_counter() - started)

        snapshot = None
        if pair is not None:
            snapshot = KeySnapshot(
                pair=pair,
                version_id=value.version_id,
                created_date=value.created_date,
                loaded_at=datetime.now(UTC),
            )
        previous_version = current.version_id if current is not None else None
        changed = self._cache.record_success(snapshot)
        self._record_success(
            changed=changed, previous_version=previous_version, version=value.version_id
        )
        return changed

    def _parse(self, value: SecretValue) -> KeyPair:
        if value.secret_string is None:
            msg = "the secret has no SecretString (SecretBinary is not supported)"
            raise PollError("invalid_secret", "InvalidSecret", msg, retryable=False)
        return parse_secret_string(
            value.secret_string, self._settings.current_field, self._settings.previous_field
        )

    async def _load_pair(self, value: SecretValue) -> KeyPair:
        """Build the pair of a new AWSCURRENT version, as SIDECAR_LAYOUT selects.

        In the stages layout each version contains its key in the current field, and
        the previous key is the current field of the AWSPREVIOUS version, read with
        a second call. That call is made only when the AWSCURRENT version changed,
        because moving AWSCURRENT is what moves AWSPREVIOUS.
        """
        pair = self._parse(value)
        if self._settings.layout != "stages":
            return pair
        try:
            previous_value = await self._source.fetch("AWSPREVIOUS")
        except PollError as error:
            if error.reason == "not_found":
                # No version has the AWSPREVIOUS label before the first rotation.
                return KeyPair(current=pair.current, previous=None)
            raise
        # NOTE: the two reads are not atomic. A rotation between them gives a pair
        # of the old current key and itself; that pair is no wider than the old
        # or the new one, and the next poll sees the new AWSCURRENT and fixes it.
        try:
            previous = self._parse(previous_value)
        except InvalidSecretError as error:
            msg = f"the AWSPREVIOUS version {previous_value.version_id}: {error}"
            raise InvalidSecretError(msg) from None
        return KeyPair(current=pair.current, previous=previous.current)

    def wake(self) -> None:
        """End the current wait early, so the next poll starts now."""
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            return
        finally:
            self._wake.clear()

    def _record_success(self, *, changed: bool, previous_version: str | None, version: str) -> None:
        metrics = self._metrics
        metrics.polls.labels(outcome="changed" if changed else "unchanged").inc()
        now = time.time()
        metrics.last_success.set(now)
        metrics.keys_loaded.set(1)
        metrics.keys_stale.set(0)
        streak = self._streak
        if streak is not None:
            self._log.info(
                "poll.recovered",
                failures=streak.count,
                last_reason=streak.reason,
                outage_s=round(time.monotonic() - streak.started, 3),
            )
            self._streak = None
        if not changed:
            self._log.debug("poll.unchanged", version_id=version)
            return
        metrics.reloads.inc()
        metrics.last_reload.set(now)
        metrics.serve_version(version)
        if previous_version is None:
            self._log.info("secret.loaded", version_id=version)
        else:
            self._log.info(
                "secret.reloaded", version_id=version, previous_version_id=previous_version
            )

    def _record_failure(self, failure: PollError, failing_version: str | None) -> None:
        self._metrics.polls.labels(outcome="error").inc()
        self._metrics.poll_errors.labels(reason=failure.reason).inc()
        self._cache.record_failure(failure.error_class)
        if self._cache.state.snapshot is not None:
            self._metrics.keys_stale.set(1)

        streak = self._streak
        if (
            streak is None
            or streak.reason != failure.reason
            or streak.failing_version != failing_version
        ):
            streak = self._streak = _FailureStreak(failure.reason, failing_version)
            first = True
        else:
            first = False
        streak.count += 1
        fields = {
            "error": failure.error_class,
            "reason": failure.reason,
            "retryable": failure.retryable,
            "attempt": streak.count,
            "serving_version_id": _served_version(self._cache),
        }
        if failing_version is not None:
            fields["failing_version_id"] = failing_version
        if failure.reason != "credentials":
            # Credential provider messages can quote the provider's reply, so
            # they are not logged. AWS error messages name ARNs, never values.
            fields["detail"] = failure.detail[:300]
        if first:
            self._log.warning("poll.failed", **fields)
        else:
            self._log.debug("poll.failed", **fields)

    async def _log_retry(self, retry_state: RetryCallState) -> None:
        wait = retry_state.upcoming_sleep
        streak = self._streak
        attempt = streak.count if streak is not None else retry_state.attempt_number
        # The first retry of a streak is logged at info; the rest only at debug.
        emit = self._log.info if attempt == 1 else self._log.debug
        emit("poll.retry_scheduled", wait_s=round(wait, 3), attempt=attempt, retryable=True)


def _resolve(requested: asyncio.Future[PollResult] | None, result: PollResult) -> None:
    if requested is not None and not requested.done():
        requested.set_result(result)


def _served_version(cache: KeyCache) -> str | None:
    snapshot = cache.state.snapshot
    return None if snapshot is None else snapshot.version_id
