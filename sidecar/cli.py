"""Command line: ``sidecar [run]``, ``check-config``, ``healthcheck``, ``keygen`` and ``rotate``."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from sidecar import __version__, keygen, rotate
from sidecar.errors import SettingsError
from sidecar.region import MISSING_REGION
from sidecar.settings import Settings, load_settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
HEALTHCHECK_TIMEOUT = 1.5


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with one subcommand per job."""
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description=(
            "Serve an API key pair from AWS Secrets Manager on loopback. "
            "Settings come from SIDECAR_* environment variables (see the README)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="poll the secret and serve the keys API (the default)")
    commands.add_parser(
        "check-config", help="validate the settings, print the effective values and exit"
    )
    commands.add_parser(
        "healthcheck",
        help="exit 0 if /readyz on the keys listener returns 200, else 1 (ECS health check)",
    )
    keygen.add_parser(commands)
    rotate.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command named in ``argv`` and return the exit status."""
    arguments = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    command = arguments.command or "run"
    if command == "healthcheck":
        return healthcheck(env)
    if command == "keygen":
        return keygen.main(arguments)
    if command == "rotate":
        return rotate.main(arguments, env)
    try:
        settings = load_settings(env)
    except SettingsError as error:
        return report_settings_error(error)
    if command == "check-config":
        return check_config(settings)
    return run(settings)


def report_settings_error(error: SettingsError) -> int:
    """Print one line per bad setting to stderr and return exit status 2."""
    for problem in error.problems:
        print(f"sidecar: {problem}", file=sys.stderr)
    count = len(error.problems)
    print(
        f"sidecar: {count} invalid setting{'s' if count != 1 else ''}; not started", file=sys.stderr
    )
    return EXIT_USAGE


def check_config(settings: Settings) -> int:
    """Print the effective settings, the token masked, and the AWS region in use."""
    from sidecar.auth import check_token_source  # noqa: PLC0415
    from sidecar.source import SecretSource  # noqa: PLC0415 - botocore loads slowly

    rows = settings.describe()
    region = SecretSource(settings.secret_id, connect_timeout=1, read_timeout=1).region()
    rows.append(("AWS region", region or "(not set)"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    problems = [] if region is not None else [MISSING_REGION]
    try:
        check_token_source(settings)
    except SettingsError as error:
        problems.extend(error.problems)
    if problems:
        return report_settings_error(SettingsError(problems))
    print("settings are valid")
    return EXIT_OK


def run(settings: Settings) -> int:
    """Start the sidecar with validated settings."""
    from sidecar.app import run as run_app  # noqa: PLC0415 - keeps check-config fast
    from sidecar.auth import resolve_token  # noqa: PLC0415
    from sidecar.logs import configure_logging  # noqa: PLC0415
    from sidecar.source import SecretSource  # noqa: PLC0415

    problems = []
    if SecretSource(settings.secret_id, connect_timeout=1, read_timeout=1).region() is None:
        problems.append(MISSING_REGION)
    try:
        token = resolve_token(settings)
    except SettingsError as error:
        problems.extend(error.problems)
        token = None
    if problems:
        return report_settings_error(SettingsError(problems))

    configure_logging(settings.log_level, settings.log_format)
    return asyncio.run(run_app(settings, token))


def healthcheck(environ: Mapping[str, str]) -> int:
    """Return 0 when GET /readyz on the keys listener returns 200, else 1."""
    from sidecar.settings import load_listener_address  # noqa: PLC0415

    try:
        host, port = load_listener_address(environ)
    except SettingsError as error:
        report_settings_error(error)
        return EXIT_FAILURE
    connection = http.client.HTTPConnection(host, port, timeout=HEALTHCHECK_TIMEOUT)
    # The socket timeout bounds each read, not the whole exchange, so a server that
    # trickles bytes could hold the check for long. An interval timer bounds it all.
    previous_handler = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.setitimer(signal.ITIMER_REAL, HEALTHCHECK_TIMEOUT)
    try:
        connection.request("GET", "/readyz")
        response = connection.getresponse()
        body = response.read(1024).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as error:
        print(
            f"sidecar healthcheck: cannot reach http://{host}:{port}/readyz: {error}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        connection.close()
    if response.status != 200:
        print(f"sidecar healthcheck: /readyz returned {response.status}: {body}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _raise_timeout(_signum: int, _frame: object) -> None:
    msg = f"no complete reply within {HEALTHCHECK_TIMEOUT:g} s"
    raise TimeoutError(msg)
