"""The forwarding engine: a small pooled HTTP/1.1 client on asyncio protocols and httptools.

Why not httpx or aiohttp on the hot path: measured on this machine (benchmarks/proxy_overhead.py)
httpx costs milliseconds of CPU per request once its pool holds many connections, and aiohttp
several hundred microseconds; this client costs a few tens. It does exactly what a reverse proxy
needs and nothing else:

- one request at a time per connection (no pipelining); a connection goes back to the idle pool
  only when its response was read to the end, the request was fully written, and both sides
  agreed to keep it alive;
- request bodies as bytes (Content-Length) or as an async iterator (chunked, or the caller's
  Content-Length); response bodies as Content-Length, chunked or read-until-close, streamed to
  the caller with back-pressure (reading pauses while too much is buffered);
- connect timeout, read (idle) timeout, a cap on connections with a bounded wait for a slot;
- a reused idle connection that the server closed before answering is retried once on a fresh
  connection, for idempotent methods only.

Everything the proxy sees is behind `UpstreamPool.request()` and `UpstreamResponse`, so another
engine can replace this one without touching the proxy.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

# Pause reading from the upstream when this much response body waits for a slow client.
_HIGH_WATER = 1 << 20
_LOW_WATER = 1 << 18


class UpstreamError(Exception):
    """A failure talking to an upstream. `kind` labels metrics; `status` is what the client gets."""

    kind = "error"
    status = 502

    def __init__(self, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        # True once any request byte went out: the upstream may have acted on the request, so
        # only an idempotent method may be sent again (here or to another upstream).
        self.sent = sent
        # A reused keep-alive connection the server closed before a byte of answer (the classic
        # race with its idle timeout): sent, but most likely never processed.
        self.stale = False


class _BadResponse(Exception):
    """Raised in a parser callback: the response breaks HTTP or the pool's limits."""


class ConnectFailed(UpstreamError):
    kind = "connect"


class ConnectionReset(UpstreamError):
    kind = "reset"


class UpstreamTimeout(UpstreamError):
    kind = "timeout"
    status = 504


class PoolExhausted(UpstreamError):
    kind = "pool_exhausted"
    status = 503


class ProtocolError(UpstreamError):
    kind = "protocol"


@dataclass(frozen=True, slots=True)
class PoolSettings:
    connect_timeout: float = 1.0
    read_timeout: float = 10.0
    max_connections: int = 100
    # Below uvicorn's 5 s keep-alive so we rarely pick a connection the server is closing.
    idle_timeout: float = 4.0
    # A response's status line and headers, in bytes and in count; beyond: 502.
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an upstream, carrying one exchange at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None
        self._reset_exchange()

    def _reset_exchange(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.headers_done = False
        self.done = False
        self.error: UpstreamError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.framed = False  # response carries Content-Length or chunked framing
        self.informational = False
        self.head_request = False
        self.keep_alive = False
        self.request_written = False
        self.got_bytes = False
        self.header_bytes = 0
        self.last_activity = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small request writes must not wait for the peer's delayed ACK
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.last_activity = self.loop.time()
        if self.idle_since:  # bytes on an idle connection: the server broke protocol
            self._close()
            return
        if not self.headers_done:  # bounded before httptools buffers a header line whole
            self.header_bytes += len(data)
        try:
            self.parser.feed_data(data)
            if not self.headers_done and self.header_bytes > self.pool.settings.max_header_bytes:
                raise _BadResponse(f"response headers over "
                                   f"{self.pool.settings.max_header_bytes} bytes")
        except _BadResponse as exc:
            self._fail(ProtocolError(f"bad response from upstream: {exc}", sent=True))
            self._close()
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, _BadResponse) else exc
            self._fail(ProtocolError(f"bad response from upstream: {cause}", sent=True))
            self._close()

    def eof_received(self) -> bool:
        return False  # half-closed by the server: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.resume_writing()  # release a sender waiting for the buffer to drain
        self.pool._forget(self)
        if self.headers_done and not self.done and not self.framed:
            self.done = True  # body delimited by connection close (HTTP/1.0 style)
            self._wake()
        elif not self.done:
            if self.reused and not self.got_bytes:
                err: UpstreamError = ConnectionReset("upstream closed an idle connection",
                                                     sent=True)
                err.stale = True  # a retry candidate, for idempotent methods only
            else:
                err = ConnectionReset(f"upstream closed the connection: {exc or 'EOF'}", sent=True)
            self._fail(err)
        self._cancel_timer()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drained = self.drained
        if drained is not None:
            self.drained = None
            if not drained.done():
                drained.set_result(None)

    # -- httptools callbacks -----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self.pool.settings.max_headers:
            raise _BadResponse(f"more than {self.pool.settings.max_headers} response headers")
        self.headers.append((name, value))
        if len(name) in (14, 17):
            lname = name.lower()
            if lname == b"content-length" or lname == b"transfer-encoding":
                self.framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.informational = True  # 100 Continue / 103 Early Hints: wait for the real one
            self.headers = []
            self.framed = False
            self.header_bytes = 0
            return
        if not 200 <= status <= 599:  # 101: the gateway never asks for an upgrade
            raise _BadResponse(f"status {status}")
        self.status = status
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it after the message
        if self.head_request:
            self.done = True  # no body follows a HEAD response; the connection is not reused
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.head_request:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.done = True
        self._wake()

    # -- exchange ----------------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, err: UpstreamError) -> None:
        if self.error is None and not self.done:
            self.error = err
        self._wake()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _arm_timer(self) -> None:
        self.last_activity = self.loop.time()
        self.timer = self.loop.call_at(self.last_activity + self.pool.settings.read_timeout,
                                       self._on_timer)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        # One timer per exchange, re-armed lazily: cheaper than cancelling on every packet.
        deadline = self.last_activity + self.pool.settings.read_timeout
        now = self.loop.time()
        if self.done or self.closed:
            self.timer = None
        elif now < deadline or self.paused:  # paused: the client is slow, not the upstream
            if self.paused:
                deadline = now + self.pool.settings.read_timeout
            self.timer = self.loop.call_at(deadline, self._on_timer)
        else:
            self.timer = None
            self._fail(UpstreamTimeout(
                f"upstream sent nothing for {self.pool.settings.read_timeout:g} s", sent=True))
            self._close()

    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        fut = self.loop.create_future()
        self.waiter = fut
        await fut
        if self.error is not None:
            raise self.error

    async def send_request(self, head: bytes, body: bytes | AsyncIterator[bytes] | None,
                           chunked: bool) -> None:
        transport = self.transport
        assert transport is not None
        self._arm_timer()
        if body is None or isinstance(body, bytes):
            transport.write(head + body if body else head)
            self.request_written = True
            return
        transport.write(head)
        async for chunk in body:
            if self.closed:
                break  # the upstream answered early and hung up; stop feeding it
            if not chunk:
                continue
            if chunked:
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                transport.write(chunk)
            self.last_activity = self.loop.time()
            if self.write_paused and not self.closed:
                # The upstream reads slower than the client sends: wait instead of buffering.
                self.drained = self.loop.create_future()
                await self.drained
        else:
            if chunked and not self.closed:
                transport.write(b"0\r\n\r\n")
            self.request_written = True

    async def wait_headers(self) -> None:
        while not self.headers_done:
            await self._wait()

    def read_available(self) -> bytes:
        """Everything buffered so far, without waiting."""
        chunks = self.chunks
        if not chunks:
            return b""
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    async def read(self) -> bytes:
        """The next body bytes; b"" at the end of the body."""
        while not self.chunks:
            if self.done:
                return b""
            await self._wait()
        return self.read_available()

    def finish(self, complete: bool) -> None:
        """Hand the connection back to the pool when reusable, else close it."""
        self._cancel_timer()
        reusable = (complete and self.done and self.request_written and not self.closed
                    and not self.head_request and self.error is None and not self.chunks
                    and self.keep_alive)
        if reusable:
            self._reset_exchange()
            self.reused = True
            self.pool._release(self)
        else:
            self._close()
            self.pool._forget(self)


class UpstreamResponse:
    """Status, headers and a streamed body of one upstream answer."""

    __slots__ = ("_conn", "status", "headers", "_finished")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers
        self._finished = False

    @property
    def complete(self) -> bool:
        """True when the whole body is already buffered (the common small-response case)."""
        return self._conn.done

    def read_available(self) -> bytes:
        return self._conn.read_available()

    async def read(self) -> bytes:
        data = await self._conn.read()
        if not data and not self._finished:
            self.release()
        return data

    async def body(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Done with this response: reuse the connection if it was read to the end."""
        if not self._finished:
            self._finished = True
            self._conn.finish(complete=self._conn.done and not self._conn.chunks)

    def abort(self) -> None:
        if not self._finished:
            self._finished = True
            self._conn.finish(complete=False)


class UpstreamPool:
    """Keep-alive connections to one upstream origin (scheme://host:port)."""

    def __init__(self, url: str, settings: PoolSettings | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream url must be http(s)://host[:port], got {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = (parts.scheme == "http" and self.port == 80) or (
            parts.scheme == "https" and self.port == 443)
        host_for_header = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (host_for_header if default_port
                            else f"{host_for_header}:{self.port}").encode()
        self.base_path = parts.path.rstrip("/").encode()
        self.ssl: ssl.SSLContext | None = (ssl.create_default_context()
                                           if parts.scheme == "https" else None)
        self.settings = settings or PoolSettings()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._connecting = 0
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def open_connections(self) -> int:
        return len(self._all)

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def request(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes | AsyncIterator[bytes] | None = None,
                      content_length: int | None = None) -> UpstreamResponse:
        """Send one request and return once the response headers arrived.

        `headers` must not carry Host, Content-Length or Transfer-Encoding: the pool frames the
        message. `body` None sends no body; bytes send Content-Length; an iterator streams with
        `content_length` when known, chunked otherwise.
        """
        chunked = not (body is None or isinstance(body, bytes)) and content_length is None
        head = self._head(method, target, headers, body, content_length, chunked)
        retry_allowed = method in IDEMPOTENT_METHODS and (body is None or isinstance(body, bytes))
        while True:
            conn = await self._acquire()
            conn.head_request = method == b"HEAD"
            try:
                await conn.send_request(head, body, chunked)
                await conn.wait_headers()
            except UpstreamError as err:
                conn.finish(complete=False)
                if retry_allowed and conn.reused and err.stale:
                    retry_allowed = False
                    continue
                raise
            except BaseException:
                conn.finish(complete=False)
                raise
            return UpstreamResponse(conn)

    def _head(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
              body: bytes | AsyncIterator[bytes] | None, content_length: int | None,
              chunked: bool) -> bytes:
        lines = [method, b" ", self.base_path, target, b" HTTP/1.1\r\nhost: ", self.host_header]
        for name, value in headers:
            lines += (b"\r\n", name, b": ", value)
        if isinstance(body, bytes):
            lines += (b"\r\ncontent-length: ", str(len(body)).encode())
        elif chunked:
            lines.append(b"\r\ntransfer-encoding: chunked")
        elif content_length is not None:
            lines += (b"\r\ncontent-length: ", str(content_length).encode())
        lines.append(b"\r\n\r\n")
        return b"".join(lines)

    async def _acquire(self) -> _Connection:
        if self._closed:
            raise ConnectFailed("gateway is shutting down")
        now = self.loop.time()
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.closed or now - conn.idle_since > self.settings.idle_timeout:
                conn._close()
                self._all.discard(conn)
                continue
            conn.idle_since = 0.0
            return conn
        if len(self._all) + self._connecting >= self.settings.max_connections:
            await self._wait_for_slot()
            return await self._acquire()
        return await self._connect()

    async def _wait_for_slot(self) -> None:
        fut = self.loop.create_future()
        self._slot_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, self.settings.connect_timeout)
        except TimeoutError:
            raise PoolExhausted(
                f"all {self.settings.max_connections} connections busy for "
                f"{self.settings.connect_timeout:g} s") from None
        finally:
            if fut in self._slot_waiters:
                self._slot_waiters.remove(fut)

    async def _connect(self) -> _Connection:
        self._connecting += 1
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Connection(self), self.host, self.port,
                                            ssl=self.ssl),
                self.settings.connect_timeout)
        except TimeoutError:
            raise UpstreamTimeout(
                f"connect to {self.host}:{self.port} timed out after "
                f"{self.settings.connect_timeout:g} s") from None
        except OSError as exc:
            raise ConnectFailed(f"connect to {self.host}:{self.port} failed: "
                                f"{exc.strerror or exc}") from None
        finally:
            self._connecting -= 1
            self._notify_slot()
        self._all.add(conn)
        return conn

    def _notify_slot(self) -> None:
        while self._slot_waiters:
            fut = self._slot_waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _release(self, conn: _Connection) -> None:
        if self._closed:
            conn._close()
            return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)
        self._notify_slot()

    def _forget(self, conn: _Connection) -> None:
        if conn in self._all:
            self._all.discard(conn)
            try:
                self._idle.remove(conn)
            except ValueError:
                pass
            self._notify_slot()

    async def probe(self) -> bool:
        """Can we open a TCP connection right now? Used by readiness, off the request path."""
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.settings.connect_timeout)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._all):
            conn._close()
        self._idle.clear()
        self._all.clear()
