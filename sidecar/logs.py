"""Configure structlog: JSON lines by default, or a console format for people."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# botocore logs signed request headers (session tokens included) and reply bodies
# (SecretString included) at DEBUG, so library loggers stay at WARNING whatever
# SIDECAR_LOG_LEVEL says.
LIBRARY_LOG_LEVEL = logging.WARNING


def configure_logging(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Send the sidecar's events and the libraries' warnings to ``stream`` (stderr)."""
    output = stream if stream is not None else sys.stderr
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor
    if log_format == "json":
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=output),
        cache_logger_on_first_use=False,
    )

    # Libraries (aiohttp, botocore) log through the standard library; render their
    # records the same way, so that every line of a JSON log is JSON.
    handler = logging.StreamHandler(output)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LIBRARY_LOG_LEVEL)
