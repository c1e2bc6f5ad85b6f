"""structlog setup: JSON lines (orjson) for machines, a console format for a terminal."""

from __future__ import annotations

import logging
import sys
import time

import orjson
import structlog

_state: dict = {}
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure_logging(level: str = "info", fmt: str = "auto", stream=None) -> None:
    """Configure structlog once per process; `fmt` is auto (console on a TTY), json or console.

    `stream` defaults to stdout (the monitor process logs to stderr: its stdout carries frames).
    """
    stream = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if console:
        processors.append(structlog.dev.ConsoleRenderer(colors=stream.isatty()))
        factory = structlog.PrintLoggerFactory(stream)
    else:
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
        factory = structlog.BytesLoggerFactory(stream.buffer)
    wrapper = structlog.make_filtering_bound_logger(_LEVELS.get(level.lower(), logging.INFO))
    structlog.configure(processors=processors, wrapper_class=wrapper, logger_factory=factory,
                        cache_logger_on_first_use=True)
    access_sink = structlog.PrintLogger(stream) if console else BufferedLineLogger(stream.buffer)
    _state["access"] = structlog.wrap_logger(access_sink, processors=processors,
                                             wrapper_class=wrapper, cache_logger_on_first_use=True)
    _state["access_sink"] = access_sink
    # uvicorn's own loggers: keep warnings and errors, drop its per-request access lines.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.access").disabled = True


class BufferedLineLogger:
    """A structlog sink for high-volume lines (the access log): one write per batch, not per line.

    Lines wait at most `max_delay` seconds, or until the next line after it, or `flush()`:
    the gateway calls `flush()` on a timer and at shutdown, so a quiet gateway loses nothing.
    """

    def __init__(self, stream, max_bytes: int = 64 * 1024, max_delay: float = 0.2) -> None:
        self._stream = stream
        self._lines: list[bytes] = []
        self._size = 0
        self._max_bytes = max_bytes
        self._max_delay = max_delay
        self._oldest = 0.0

    def msg(self, message: bytes) -> None:
        if not self._lines:
            self._oldest = time.monotonic()
        self._lines.append(message)
        self._size += len(message)
        if self._size >= self._max_bytes or time.monotonic() - self._oldest >= self._max_delay:
            self.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg

    def flush(self) -> None:
        if self._lines:
            lines, self._lines, self._size = self._lines, [], 0
            self._stream.write(b"\n".join(lines) + b"\n")
            self._stream.flush()


def get_access_logger() -> structlog.typing.FilteringBoundLogger:
    """The access-log logger (batched writes); plain structlog before configure_logging()."""
    return _state.get("access") or structlog.get_logger("driftgate.access")


def flush_access_log() -> None:
    sink = _state.get("access_sink")
    if isinstance(sink, BufferedLineLogger):
        sink.flush()


def get_logger(name: str = "driftgate") -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)
