"""uvicorn's httptools protocol with the limits a server facing the internet needs.

uvicorn leaves these open, and each was shown to exhaust or fool the gateway:
- a connection that sends partial headers forever (slowloris) was never closed: now a request's
  headers must all arrive within `server.header_timeout` of its first byte (or of the connection,
  for the first request), else the connection is closed, as nginx's client_header_timeout (one
  timer per connection, re-armed lazily: a timer per request cost ~2 us);
- connections at once are capped (`server.max_connections`): one more is reset at once, so a
  flood ends at the cap, not at the file-descriptor limit, and the rest keep being served;
- the request line and headers are bounded in bytes and count (`server.max_header_bytes`,
  `server.max_headers`): beyond, 414 or 431 and the connection closed, before more is buffered;
- chunked trailers were appended to the request's headers (a trailer `Authorization` reached
  the model as a header): trailers are dropped.
"""

from __future__ import annotations

import asyncio
import logging

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config import ServerConfig


class _CutResponseFilter(logging.Filter):
    """uvicorn logs an error when an app ends a response early; the proxy does that on purpose
    when an upstream fails mid-body, after logging it once itself (rate-limited JSON)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing response."


logging.getLogger("uvicorn.error").addFilter(_CutResponseFilter())

_REASONS = {408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class GuardedProtocol(HttpToolsProtocol):
    limits: ServerConfig  # set on the subclass `guarded_protocol` makes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_headers = True  # waiting for (the rest of) a request's headers
        self._headers_since = self.loop.time()
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.limits.max_connections:
            transport.abort()  # refused fast: the clients already here keep being served
            return
        self._header_timer = self.loop.call_later(self.limits.header_timeout,
                                                  self._check_headers)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._in_headers:
            self._header_bytes += len(data)
        try:
            self.parser.feed_data(data)
            if self._in_headers and self._header_bytes > self.limits.max_header_bytes:
                raise Refused(431, f"request headers over {self.limits.max_header_bytes} bytes")
        except Refused as exc:
            self._refuse(exc.status, str(exc))
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, Refused):
                self._refuse(exc.__context__.status, str(exc.__context__))
            else:
                self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserError:
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._headers_since = self.loop.time()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_header_bytes:
            raise Refused(414, f"request line over {self.limits.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        # counted here, not per header: their bytes are bounded already (data_received)
        if len(self.headers) > self.limits.max_headers:
            raise Refused(431, f"more than {self.limits.max_headers} request headers")
        self._in_headers = False
        self._header_bytes = 0
        super().on_headers_complete()
        # uvicorn appends chunked trailers to this list, which is the request's scope["headers"]:
        # a fresh one takes them instead, so a trailer never becomes a header
        self.headers = []

    # -- helpers -----------------------------------------------------------------------------
    def _check_headers(self) -> None:
        """The connection's one timer: 408 for headers late by header_timeout, else re-armed
        for when the headers being read (or the next request's) could be."""
        self._header_timer = None
        if self.transport.is_closing():
            return
        timeout = self.limits.header_timeout
        waited = self.loop.time() - self._headers_since
        if self._in_headers and waited >= timeout:
            self._refuse(408, f"request headers not complete within {timeout:g} s")
            return
        self._header_timer = self.loop.call_later(
            timeout - waited if self._in_headers else timeout, self._check_headers)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` and close, unless an answer is already under way (then just close)."""
        self._cancel_header_timer()
        if self.cycle is None or self.cycle.response_complete:
            body = orjson.dumps({"error": message})
            self.transport.write(b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (
                                     status, _REASONS.get(status, b"Bad Request"), len(body),
                                     body))
        self.transport.close()


def guarded_protocol(limits: ServerConfig) -> type[GuardedProtocol]:
    """The protocol class for uvicorn's `http=` with these limits."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})
