"""Read and validate the sidecar's settings from environment variables.

Every SIDECAR_* variable is read here, once, into a frozen Settings object. All
problems are collected and reported together, each naming the variable, the value
received and what is accepted. Token values are never echoed.

Region, credentials and the Secrets Manager endpoint are not settings of the
sidecar: they come from AWS_DEFAULT_REGION or AWS_REGION (see region.py), the
ECS container credentials provider and AWS_ENDPOINT_URL_SECRETS_MANAGER.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple, TypeVar

from sidecar.errors import SettingsError

PREFIX = "SIDECAR_"

DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_POLL_JITTER = 0.1
DEFAULT_BACKOFF_INITIAL = 1.0
DEFAULT_BACKOFF_MAX = 60.0
DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_READ_TIMEOUT = 5.0
DEFAULT_CURRENT_FIELD = "API_KEY_CURRENT"
DEFAULT_PREVIOUS_FIELD = "API_KEY_PREVIOUS"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8910
DEFAULT_METRICS_HOST = "0.0.0.0"
DEFAULT_METRICS_PORT = 9910
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_LOG_LEVEL = "info"
DEFAULT_LOG_FORMAT = "json"
DEFAULT_REFRESH_MIN_INTERVAL = 5.0
DEFAULT_LAYOUT = "fields"

MIN_POLL_INTERVAL = 1.0
MAX_POLL_INTERVAL = 86_400.0
MAX_POLL_JITTER = 0.5
MAX_BACKOFF = 3_600.0
MAX_TIMEOUT = 60.0
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 512
MIN_REFRESH_INTERVAL = 1.0
MAX_REFRESH_INTERVAL = 3_600.0
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")
# fields: one version contains the pair as two JSON fields. stages: the
# AWSCURRENT version contains the current key, the AWSPREVIOUS version the previous one.
LAYOUTS = ("fields", "stages")

# Secret names allow letters, digits and /_+=.@- (Secrets Manager CreateSecret);
# an ARN adds the partition, region, account and a random suffix.
_SECRET_ID = re.compile(r"[A-Za-z0-9/_+=.@:-]{1,2048}")
_FIELD_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated settings of one sidecar process."""

    secret_id: str
    poll_interval: float = DEFAULT_POLL_INTERVAL
    poll_jitter: float = DEFAULT_POLL_JITTER
    backoff_initial: float = DEFAULT_BACKOFF_INITIAL
    backoff_max: float = DEFAULT_BACKOFF_MAX
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    current_field: str = DEFAULT_CURRENT_FIELD
    previous_field: str = DEFAULT_PREVIOUS_FIELD
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    allow_non_loopback: bool = False
    metrics_host: str = DEFAULT_METRICS_HOST
    metrics_port: int = DEFAULT_METRICS_PORT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    token: str | None = None
    token_file: Path | None = None
    require_token: bool = True
    max_staleness: float = 0.0
    log_level: str = DEFAULT_LOG_LEVEL
    log_format: str = DEFAULT_LOG_FORMAT
    refresh_min_interval: float = DEFAULT_REFRESH_MIN_INTERVAL
    output_file: Path | None = None
    layout: str = DEFAULT_LAYOUT

    def __repr__(self) -> str:
        shown = {field.name: getattr(self, field.name) for field in fields(self)}
        shown["token"] = mask_token(self.token)
        return "Settings(" + ", ".join(f"{name}={value!r}" for name, value in shown.items()) + ")"

    def describe(self) -> list[tuple[str, str]]:
        """List each setting as (variable name, effective value), with the token masked."""
        rows = []
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "token":
                text = mask_token(value)
            elif value is None:
                text = "(not set)"
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            rows.append((PREFIX + field.name.upper(), text))
        return rows


def mask_token(token: str | None) -> str:
    """Show whether a token is set without showing any of it."""
    return "(not set)" if token is None else "(set, hidden)"


KNOWN_VARIABLES = frozenset(PREFIX + field.name.upper() for field in fields(Settings))


class _Reader:
    """Collects one problem per bad variable while the settings are read."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.environ.get(PREFIX + name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def fail(self, name: str, value: str | None, accepted: str) -> None:
        shown = "(not set)" if value is None else repr(value)
        self.problems.append(f"{PREFIX}{name}: invalid value {shown}; expected {accepted}")

    def parsed(self, name: str, default: T, parse: Callable[[str], T | None], accepted: str) -> T:
        value = self.raw(name)
        if value is None:
            return default
        result = parse(value)
        if result is None:
            self.fail(name, value, accepted)
            return default
        return result

    def number(self, name: str, default: float, low: float, high: float, accepted: str) -> float:
        def parse(text: str) -> float | None:
            try:
                number = float(text)
            except ValueError:
                return None
            # NaN fails both comparisons, so it is rejected here too.
            return number if low <= number <= high else None

        return self.parsed(name, default, parse, accepted)

    def integer(self, name: str, default: int, low: int, high: int, accepted: str) -> int:
        def parse(text: str) -> int | None:
            # str.isdigit() also accepts digits such as "²" or Arabic-Indic ones,
            # which int() rejects or reads differently, so only ASCII digits pass.
            if not (text.isascii() and text.isdigit()):
                return None
            number = int(text)
            return number if low <= number <= high else None

        return self.parsed(name, default, parse, accepted)

    def port(self, name: str, default: int, *, allow_zero: bool) -> int:
        low = 0 if allow_zero else 1
        accepted = f"an integer port from {low} to 65535" + (
            " (0 turns it off)" if allow_zero else ""
        )
        return self.integer(name, default, low, 65535, accepted)

    def boolean(self, name: str, *, default: bool) -> bool:
        def parse(text: str) -> bool | None:
            lowered = text.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            return None

        return self.parsed(name, default, parse, "true or false")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        def parse(text: str) -> str | None:
            lowered = text.lower()
            return lowered if lowered in choices else None

        return self.parsed(name, default, parse, "one of " + ", ".join(choices))

    def address(self, name: str, default: str) -> str:
        def parse(text: str) -> str | None:
            try:
                return str(ipaddress.ip_address(text))
            except ValueError:
                return None

        return self.parsed(name, default, parse, "an IPv4 or IPv6 address such as 127.0.0.1 or ::1")


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` (an IP address literal) is a loopback address."""
    return ipaddress.ip_address(host).is_loopback


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build Settings from ``environ`` or raise SettingsError listing every problem."""
    read = _Reader(environ)
    _check_unknown_variables(environ, read.problems)

    secret_id = read.raw("SECRET_ID")
    if secret_id is None:
        read.problems.append(
            f"{PREFIX}SECRET_ID: missing; expected the name or ARN of the Secrets Manager "
            "secret that holds the key pair"
        )
        secret_id = ""
    elif not _SECRET_ID.fullmatch(secret_id):
        read.fail(
            "SECRET_ID",
            secret_id,
            "a secret name or ARN of letters, digits and /_+=.@:- characters",
        )

    timing = _read_timing(read)
    layout, current_field, previous_field = _read_secret_format(read)

    host = read.address("HOST", DEFAULT_HOST)
    port = read.port("PORT", DEFAULT_PORT, allow_zero=False)
    allow_non_loopback = read.boolean("ALLOW_NON_LOOPBACK", default=False)
    metrics_host = read.address("METRICS_HOST", DEFAULT_METRICS_HOST)
    metrics_port = read.port("METRICS_PORT", DEFAULT_METRICS_PORT, allow_zero=True)
    max_connections = read.integer(
        "MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, 1, 100_000, "an integer from 1 to 100000"
    )

    token = _read_token(read)
    token_file_text = read.raw("TOKEN_FILE")
    token_file = Path(token_file_text) if token_file_text is not None else None
    require_token = read.boolean("REQUIRE_TOKEN", default=True)
    max_staleness = read.number(
        "MAX_STALENESS", 0.0, 0.0, 30 * 86_400.0, "seconds from 0 (off) to 2592000 (30 days)"
    )
    log_level = read.choice("LOG_LEVEL", DEFAULT_LOG_LEVEL, LOG_LEVELS)
    log_format = read.choice("LOG_FORMAT", DEFAULT_LOG_FORMAT, LOG_FORMATS)
    refresh_min_interval = read.number(
        "REFRESH_MIN_INTERVAL",
        DEFAULT_REFRESH_MIN_INTERVAL,
        MIN_REFRESH_INTERVAL,
        MAX_REFRESH_INTERVAL,
        f"seconds from {MIN_REFRESH_INTERVAL:g} to {MAX_REFRESH_INTERVAL:g}, fractions allowed",
    )
    output_file = read.parsed(
        "OUTPUT_FILE",
        None,
        _parse_output_file,
        "a file path that does not end with / (the directory must exist when keys load)",
    )

    settings = Settings(
        secret_id=secret_id,
        poll_interval=timing.poll_interval,
        poll_jitter=timing.poll_jitter,
        backoff_initial=timing.backoff_initial,
        backoff_max=timing.backoff_max,
        connect_timeout=timing.connect_timeout,
        read_timeout=timing.read_timeout,
        current_field=current_field,
        previous_field=previous_field,
        host=host,
        port=port,
        allow_non_loopback=allow_non_loopback,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        max_connections=max_connections,
        token=token,
        token_file=token_file,
        require_token=require_token,
        max_staleness=max_staleness,
        log_level=log_level,
        log_format=log_format,
        refresh_min_interval=refresh_min_interval,
        output_file=output_file,
        layout=layout,
    )
    problems = read.problems
    # Cross-field rules, checked on the values after defaults were applied.
    problems.extend(_cross_field_problems(settings, token_set=read.raw("TOKEN") is not None))
    if problems:
        raise SettingsError(problems)
    return settings


class _Timing(NamedTuple):
    poll_interval: float
    poll_jitter: float
    backoff_initial: float
    backoff_max: float
    connect_timeout: float
    read_timeout: float


def _read_timing(read: _Reader) -> _Timing:
    interval = read.number(
        "POLL_INTERVAL",
        DEFAULT_POLL_INTERVAL,
        MIN_POLL_INTERVAL,
        MAX_POLL_INTERVAL,
        f"seconds from {MIN_POLL_INTERVAL:g} to {MAX_POLL_INTERVAL:g}, fractions allowed",
    )
    jitter = read.number(
        "POLL_JITTER",
        DEFAULT_POLL_JITTER,
        0.0,
        MAX_POLL_JITTER,
        f"a fraction from 0 to {MAX_POLL_JITTER:g} (0.1 means plus or minus 10%)",
    )
    backoff_accepted = f"seconds greater than 0 and at most {MAX_BACKOFF:g}"
    backoff_initial = read.number(
        "BACKOFF_INITIAL", DEFAULT_BACKOFF_INITIAL, 0.001, MAX_BACKOFF, backoff_accepted
    )
    backoff_max = read.number(
        "BACKOFF_MAX", DEFAULT_BACKOFF_MAX, 0.001, MAX_BACKOFF, backoff_accepted
    )
    timeout_accepted = f"seconds greater than 0 and at most {MAX_TIMEOUT:g}"
    connect_timeout = read.number(
        "CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT, 0.001, MAX_TIMEOUT, timeout_accepted
    )
    read_timeout = read.number(
        "READ_TIMEOUT", DEFAULT_READ_TIMEOUT, 0.001, MAX_TIMEOUT, timeout_accepted
    )
    return _Timing(interval, jitter, backoff_initial, backoff_max, connect_timeout, read_timeout)


def _read_secret_format(read: _Reader) -> tuple[str, str, str]:
    """Read SIDECAR_LAYOUT and the two JSON field names."""
    layout = read.parsed(
        "LAYOUT",
        DEFAULT_LAYOUT,
        lambda text: text.lower() if text.lower() in LAYOUTS else None,
        "fields (the pair as two JSON fields of AWSCURRENT) or stages (the current key in "
        "AWSCURRENT, the previous key in AWSPREVIOUS)",
    )
    field_accepted = "a JSON field name of 1 to 256 characters without control characters"
    current_field = read.parsed(
        "CURRENT_FIELD",
        DEFAULT_CURRENT_FIELD,
        lambda text: text if _FIELD_NAME.fullmatch(text) else None,
        field_accepted,
    )
    previous_field = read.parsed(
        "PREVIOUS_FIELD",
        DEFAULT_PREVIOUS_FIELD,
        lambda text: text if _FIELD_NAME.fullmatch(text) else None,
        field_accepted,
    )
    return layout, current_field, previous_field


def _cross_field_problems(settings: Settings, *, token_set: bool) -> list[str]:
    """Check the rules between settings; ``token_set`` is true even for an invalid token."""
    problems: list[str] = []
    backoff_initial, backoff_max = settings.backoff_initial, settings.backoff_max
    if backoff_initial > backoff_max:
        problems.append(
            f"{PREFIX}BACKOFF_INITIAL: {backoff_initial:g} is greater than "
            f"{PREFIX}BACKOFF_MAX ({backoff_max:g}); expected BACKOFF_INITIAL <= BACKOFF_MAX"
        )
    current_field, previous_field = settings.current_field, settings.previous_field
    if current_field == previous_field:
        problems.append(
            f"{PREFIX}PREVIOUS_FIELD: {previous_field!r} is the same as {PREFIX}CURRENT_FIELD; "
            "expected two different JSON field names"
        )
    max_staleness = settings.max_staleness
    longest_wait = settings.poll_interval * (1 + settings.poll_jitter)
    if 0 < max_staleness <= longest_wait:
        problems.append(
            f"{PREFIX}MAX_STALENESS: {max_staleness:g} would fail readiness between two "
            f"successful polls; expected 0 (off) or more than the longest poll wait, "
            f"{PREFIX}POLL_INTERVAL x (1 + {PREFIX}POLL_JITTER) = {longest_wait:g} seconds"
        )
    token_file = settings.token_file
    if token_set and token_file is not None:
        problems.append(
            f"{PREFIX}TOKEN and {PREFIX}TOKEN_FILE are both set; expected only one of them"
        )
    if not token_set and token_file is None and settings.require_token:
        problems.append(
            f"{PREFIX}TOKEN_FILE: missing; set {PREFIX}TOKEN_FILE to a path on a volume shared "
            f"with the application (the sidecar creates the file with a random token), or set "
            f"{PREFIX}TOKEN, or set {PREFIX}REQUIRE_TOKEN=false for local development only"
        )
    output_file = settings.output_file
    # resolve() follows symbolic links, so two spellings of one file are caught too.
    if (
        output_file is not None
        and token_file is not None
        and output_file.resolve() == token_file.resolve()
    ):
        problems.append(
            f"{PREFIX}OUTPUT_FILE: {str(output_file)!r} is also {PREFIX}TOKEN_FILE; expected "
            "a different path, because the key file is rewritten on every rotation"
        )
    host, port = settings.host, settings.port
    metrics_host, metrics_port = settings.metrics_host, settings.metrics_port
    if not settings.allow_non_loopback and not is_loopback(host):
        problems.append(
            f"{PREFIX}HOST: {host!r} is not a loopback address; the keys API must stay "
            f"inside the task, so expected 127.0.0.1 or ::1, or set "
            f"{PREFIX}ALLOW_NON_LOOPBACK=true to bind it wider on purpose"
        )
    if metrics_port != 0 and metrics_port == port and _same_bind(host, metrics_host):
        problems.append(
            f"{PREFIX}METRICS_PORT: {metrics_port} is also {PREFIX}PORT; expected a different "
            "port, or 0 to turn the metrics listener off"
        )
    return problems


def _parse_output_file(text: str) -> Path | None:
    # The file is replaced by rename, so the path must name a file, not a directory.
    if text.endswith("/") or "\x00" in text:
        return None
    return Path(text)


def _same_bind(first: str, second: str) -> bool:
    wildcard = {"0.0.0.0", "::"}
    return first == second or first in wildcard or second in wildcard


def _read_token(read: _Reader) -> str | None:
    token = read.raw("TOKEN")
    if token is None:
        return None
    problem = token_problem(token)
    if problem is not None:
        # The value itself is never echoed, only its length.
        read.problems.append(
            f"{PREFIX}TOKEN: invalid value (hidden, {len(token)} characters); expected {problem}"
        )
        return None
    return token


def token_problem(token: str) -> str | None:
    """Describe what is accepted if ``token`` is not a usable token, else return None."""
    valid_length = MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH
    if valid_length and all("!" <= char <= "~" for char in token):
        return None
    return (
        f"{MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} visible ASCII characters "
        "(no spaces), for example the output of `sidecar keygen`"
    )


def _check_unknown_variables(environ: Mapping[str, str], problems: list[str]) -> None:
    for name in sorted(environ):
        if not name.startswith(PREFIX) or name in KNOWN_VARIABLES:
            continue
        close = difflib.get_close_matches(name, sorted(KNOWN_VARIABLES), n=1)
        hint = f"did you mean {close[0]}?" if close else "see the README for the list"
        problems.append(f"{name}: unknown setting; {hint}")


def load_listener_address(environ: Mapping[str, str]) -> tuple[str, int]:
    """Return the address to reach the keys listener from inside the task.

    Reads only SIDECAR_HOST and SIDECAR_PORT, so the health check works even when
    other settings are invalid. A wildcard bind address is reached via loopback.
    """
    read = _Reader(environ)
    host = read.address("HOST", DEFAULT_HOST)
    port = read.port("PORT", DEFAULT_PORT, allow_zero=False)
    if read.problems:
        raise SettingsError(read.problems)
    wildcard_to_loopback = {"0.0.0.0": "127.0.0.1", "::": "::1"}
    return wildcard_to_loopback.get(host, host), port


@dataclass(frozen=True, slots=True)
class RotationSettings:
    """The settings that ``sidecar rotate`` shares with the sidecars of the fleet."""

    current_field: str = DEFAULT_CURRENT_FIELD
    previous_field: str = DEFAULT_PREVIOUS_FIELD
    layout: str = DEFAULT_LAYOUT
    poll_interval: float = DEFAULT_POLL_INTERVAL
    poll_jitter: float = DEFAULT_POLL_JITTER
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT


def load_rotation_settings(environ: Mapping[str, str]) -> RotationSettings:
    """Read the field names, layout and poll timing, with the rules of ``load_settings``.

    The other SIDECAR_* variables are ignored, so the command runs from a shell
    that sets only these, and unset ones take the sidecar's defaults.
    """
    read = _Reader(environ)
    timing = _read_timing(read)
    layout, current_field, previous_field = _read_secret_format(read)
    if not read.problems and current_field == previous_field:
        read.problems.append(
            f"{PREFIX}PREVIOUS_FIELD: {previous_field!r} is the same as {PREFIX}CURRENT_FIELD; "
            "expected two different JSON field names"
        )
    if read.problems:
        raise SettingsError(read.problems)
    return RotationSettings(
        current_field=current_field,
        previous_field=previous_field,
        layout=layout,
        poll_interval=timing.poll_interval,
        poll_jitter=timing.poll_jitter,
        connect_timeout=timing.connect_timeout,
        read_timeout=timing.read_timeout,
    )
