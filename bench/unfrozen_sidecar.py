"""Run the sidecar without freezing its start-up objects out of the garbage collector.

The harness starts this next to ``python -m sidecar`` to measure what
``gc.freeze()`` at start-up saves. Replacing ``gc.freeze`` with a no-op before
the sidecar starts is the only change.
"""

from __future__ import annotations

import gc

from sidecar.cli import main


def _skip_freeze() -> None:
    """Leave every object in the garbage collector's generations."""


if __name__ == "__main__":
    gc.freeze = _skip_freeze
    raise SystemExit(main())
