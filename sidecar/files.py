"""File helpers shared by the token file and the output file."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make a rename or link in ``directory`` durable.

    Some file systems do not allow opening a directory for this, which only
    weakens durability, so errors are ignored.
    """
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
