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
    error code or exception class name, and ``retryable`` is true when the poller
    backs off and retries, and false when it waits for the next normal interval.
    """

    def __init__(self, reason: str, error_class: str, detail: str, *, retryable: bool) -> None:
        self.reason = reason
        self.error_class = error_class
        self.detail = detail
        self.retryable = retryable
        super().__init__(f"{error_class}: {detail}")


class RotationError(SidecarError):
    """Raised when a rotation cannot start or finish; the secret is left as it was.

    ``exit_status`` is the status of ``sidecar rotate``: 1 for an AWS or other
    failure, 2 for invalid input (arguments, settings, the new key or the secret
    that was read).
    """

    def __init__(self, message: str, exit_status: int = 1) -> None:
        self.exit_status = exit_status
        super().__init__(message)


class RotationConflictError(RotationError):
    """Raised when another rotation changed or is changing the secret at the same time.

    AWSCURRENT is not moved, so no key is lost; ``sidecar rotate`` exits with 3.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_status=3)
