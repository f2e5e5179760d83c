"""Generate API keys: ``sidecar keygen [--count N]``.

Pure Python (the secrets module only), so the Lambda rotation function can import
it without the sidecar's runtime dependencies.
"""

from __future__ import annotations

import argparse
import secrets
import sys

# 32 random bytes are 256 bits. token_urlsafe encodes them as 43 characters of
# A-Z, a-z, 0-9, - and _, which pass sidecar.secret.is_valid_key and need no
# escaping in headers, URLs or JSON.
KEY_BYTES = 32
MAX_COUNT = 1000


def generate_key() -> str:
    """Return a new API key with 256 bits from the operating system's CSPRNG."""
    return secrets.token_urlsafe(KEY_BYTES)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``keygen`` subcommand."""
    parser = commands.add_parser(
        "keygen",
        help="print new API keys (256 random bits, URL-safe), one per line",
        description=(
            "Print new API keys on stdout, one per line and nothing else: 256 bits from the "
            "secrets module, encoded URL-safe (43 characters)."
        ),
    )
    parser.add_argument(
        "--count",
        type=_count,
        default=1,
        metavar="N",
        help=f"number of keys to print, 1 to {MAX_COUNT} (default 1)",
    )


def _count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_COUNT:
        msg = f"invalid count {text!r}: expected an integer from 1 to {MAX_COUNT}"
        raise argparse.ArgumentTypeError(msg)
    return count


def main(arguments: argparse.Namespace) -> int:
    """Print ``arguments.count`` keys and return exit status 0."""
    count: int = arguments.count
    sys.stdout.write("".join(generate_key() + "\n" for _ in range(count)))
    sys.stdout.flush()
    return 0
