"""Configure structlog: JSON lines by default, or a console format for people."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# botocore logs signed request headers (session tokens included) and reply bodies
# (SecretString included) at DEBUG, so library loggers stay at WARNING whatever
# SIDECAR_LOG_LEVEL is.
LIBRARY_LOG_LEVEL = logging.WARNING


class ClientErrorFilter(logging.Filter):
    """Drop aiohttp's records about requests that failed to parse.

    aiohttp logs each one at ERROR with a traceback that quotes up to 100 bytes of
    the request, so any client of the metrics listener, which the network can
    reach, could fill the log with text of its choice. Such a request is the
    client's fault, and the client still gets a 400 reply.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for a record whose exception is an HTTP parser error."""
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, HttpProcessingError)


_CLIENT_ERROR_FILTER = ClientErrorFilter()


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
    # addFilter ignores a filter that is already installed.
    logging.getLogger("aiohttp.server").addFilter(_CLIENT_ERROR_FILTER)
