"""Exceptions raised by the sidecar.

No message built here contains a key, a token or a credential: messages name the
setting, the JSON field or the AWS error code, never the secret value.
"""

from __future__ import annotations

from collections.abc import Sequence


class SidecarError(Exception):
    """Base class of every error that the sidecar raises on purpose."""


class SettingsError(SidecarError):
    """Raised when one or more settings are missing or invalid.

    ``problems`` contains one message per bad setting. The command line prints each
    one and exits with status 2 before any socket is bound.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class InvalidSecretError(SidecarError):
    """Raised when a SecretString is not a valid key pair.

    The message names the JSON field or the structural problem, never a value.
    """


class PollError(SidecarError):
    """Raised when one poll of Secrets Manager fails.

    ``reason`` is one value of the closed set used by metrics and logs
    (for example ``throttled`` or ``access_denied``), ``error_class`` is the AWS
    error code or exception class name, and ``retryable`` tells whether the poller
    backs off and retries or waits for the next normal interval.
    """

    def __init__(self, reason: str, error_class: str, detail: str, *, retryable: bool) -> None:
        self.reason = reason
        self.error_class = error_class
        self.detail = detail
        self.retryable = retryable
        super().__init__(f"{error_class}: {detail}")
