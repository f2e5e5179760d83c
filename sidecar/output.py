"""Write the key pair to a file for applications that read files (SIDECAR_OUTPUT_FILE).

The file receives the same JSON document as GET /v1/keys each time a new version
loads. It is replaced atomically: the document goes to a temporary file in the
same directory, which is synced and renamed over the target, so a reader sees
either the old pair or the new one, never a partial file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
from pathlib import Path

import structlog

from sidecar.cache import CacheState
from sidecar.files import fsync_directory

log = structlog.get_logger("sidecar.output")

OUTPUT_FILE_MODE = 0o640


class OutputFile:
    """Keeps one file in step with the served key pair."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The version last written successfully; None until the first write.
        self._written_version: str | None = None

    async def update(self, state: CacheState) -> bool:
        """Write the served pair unless this version is already in the file.

        Returns whether the file now contains the served version. A failed write is
        logged and tried again on the next call, which the poller makes after every
        successful poll. A failed write never stops the sidecar from serving.
        """
        snapshot = state.snapshot
        if snapshot is None:
            return False
        if snapshot.version_id == self._written_version:
            return True
        try:
            # The write ends with fsync, which can block on a slow volume; a worker
            # thread keeps the event loop serving requests meanwhile.
            await asyncio.to_thread(write_atomically, self.path, snapshot.fresh_body)
        except OSError as error:
            # The errno name and text describe the failure; the document is not logged.
            log.error(  # noqa: TRY400 - a traceback adds nothing to the errno text
                "output_file.write_failed",
                path=str(self.path),
                version_id=snapshot.version_id,
                errno=errno.errorcode.get(error.errno or 0, str(error.errno)),
                error=error.strerror,
            )
            return False
        self._written_version = snapshot.version_id
        log.info("output_file.written", path=str(self.path), version_id=snapshot.version_id)
        return True


def write_atomically(path: Path, content: bytes) -> None:
    """Replace ``path`` with ``content``: write a temporary file, fsync it, rename it over."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OUTPUT_FILE_MODE)
    try:
        try:
            view = memoryview(content)
            while view:
                written = os.write(descriptor, view)
                view = view[written:]
            # The umask may have removed the group read bit that the application needs.
            os.fchmod(descriptor, OUTPUT_FILE_MODE)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        temporary.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_directory(path.parent)
