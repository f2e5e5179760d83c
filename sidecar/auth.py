"""Load the request token, creating the token file on first start."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from sidecar.errors import SettingsError
from sidecar.files import fsync_directory
from sidecar.settings import MAX_TOKEN_LENGTH, PREFIX, Settings, token_problem

TOKEN_FILE_MODE = 0o640
# 32 random bytes, 43 URL-safe characters.
TOKEN_BYTES = 32
# The largest token plus room for a trailing line break and spaces.
MAX_TOKEN_FILE_BYTES = MAX_TOKEN_LENGTH + 64


def resolve_token(settings: Settings) -> str | None:
    """Return the token that requests must carry, or None when none is required.

    With SIDECAR_TOKEN_FILE set and no file at that path, a new random token is
    written there first. Raises SettingsError if the file cannot be read or
    created, or contains an invalid token.
    """
    if settings.token is not None:
        return settings.token
    if settings.token_file is not None:
        return load_or_create_token_file(settings.token_file)
    return None


def check_token_source(settings: Settings) -> None:
    """Raise SettingsError if the token file cannot be read, or created where it is missing.

    Unlike ``resolve_token``, this writes nothing, so ``sidecar check-config`` can
    run it.
    """
    path = settings.token_file
    if path is None:
        return
    if path.exists():
        load_or_create_token_file(path)
        return
    directory = path.parent
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        msg = (
            f"{PREFIX}TOKEN_FILE: cannot create {str(path)!r}: {str(directory)!r} is not a "
            "writable directory; expected a path in a writable directory, such as a volume "
            "shared with the application"
        )
        raise SettingsError([msg])


def load_or_create_token_file(path: Path) -> str:
    """Read the token from ``path``, or create the file with a new token if it is missing."""
    try:
        text = _read_small_file(path)
    except FileNotFoundError:
        return _create_token_file(path)
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        msg = f"{PREFIX}TOKEN_FILE: cannot read {str(path)!r}: {reason}; expected a readable file"
        raise SettingsError([msg]) from None
    except ValueError as error:
        msg = f"{PREFIX}TOKEN_FILE: cannot read {str(path)!r}: {error}"
        raise SettingsError([msg]) from None
    token = text.strip()
    problem = token_problem(token)
    if problem is not None:
        msg = (
            f"{PREFIX}TOKEN_FILE: {str(path)!r} contains an invalid token (hidden, "
            f"{len(token)} characters); expected {problem}, or delete the file so that "
            "the sidecar creates a new one"
        )
        raise SettingsError([msg])
    return token


def _read_small_file(path: Path) -> str:
    """Read a regular file of at most MAX_TOKEN_FILE_BYTES; raise ValueError otherwise."""
    # O_NONBLOCK keeps open() from blocking on a FIFO, which is then rejected below.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            msg = "not a regular file; expected a file that contains the token"
            raise ValueError(msg)
        data = os.read(descriptor, MAX_TOKEN_FILE_BYTES + 1)
    finally:
        os.close(descriptor)
    if len(data) > MAX_TOKEN_FILE_BYTES:
        msg = f"larger than {MAX_TOKEN_FILE_BYTES} bytes; expected a file with only the token"
        raise ValueError(msg)
    return data.decode("utf-8")


def _create_token_file(path: Path) -> str:
    token = secrets.token_urlsafe(TOKEN_BYTES)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, TOKEN_FILE_MODE)
        try:
            os.write(descriptor, (token + "\n").encode())
            # The umask may have removed the group read bit that the application needs.
            os.fchmod(descriptor, TOKEN_FILE_MODE)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        try:
            # link() fails if the path exists, unlike rename(), so a token written
            # by a concurrent start is kept and read instead of overwritten.
            os.link(temporary, path)
        except FileExistsError:
            return load_or_create_token_file(path)
    except OSError as error:
        msg = (
            f"{PREFIX}TOKEN_FILE: cannot create {str(path)!r}: {error.strerror}; expected a "
            "path in a writable directory, such as a volume shared with the application"
        )
        raise SettingsError([msg]) from None
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    fsync_directory(path.parent)
    return token
