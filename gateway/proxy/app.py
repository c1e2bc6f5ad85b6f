"""The public ASGI app: match a route, forward the request unchanged, stream the answer back.

A raw ASGI callable rather than a starlette app: this is the hot path, and starlette's Request
and Response objects cost more per request than everything else here together.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import orjson

from gateway.link.messages import Capture, Question
from gateway.logs import get_access_logger
from gateway.proxy.engine import IDEMPOTENT_METHODS, UpstreamError, UpstreamResponse
from gateway.proxy.headers import ForwardedRequest, response_headers
from gateway.proxy.paths import UnsafePath, decoded, normalize
from gateway.proxy.runtime import GatewayRuntime, Route, Upstream, Variant
from routing import UnknownVariant, cookie_value

_JSON = [(b"content-type", b"application/json")]


class BodyTooLarge(Exception):
    pass


class ClientDisconnected(Exception):
    pass


class NoHealthyUpstream(Exception):
    pass


class InvalidContentLength(Exception):
    pass


# An upstream slower than this to answer gets the client watched for a disconnect.
CLIENT_WATCH_AFTER = 0.05


class _ClientWatch:
    """Cancels `task` when the client disconnects (see ProxyApp._send_watching_client)."""

    __slots__ = ("receive", "task", "since", "watcher", "client_gone")

    def __init__(self, receive, task: asyncio.Task, since: float) -> None:
        self.receive, self.task, self.since = receive, task, since
        self.watcher: asyncio.Task | None = None
        self.client_gone = False

    def start(self) -> None:
        self.watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.client_gone = True
        self.task.cancel()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()


async def send_json(send, status: int, payload: dict, headers: list | None = None) -> int:
    body = orjson.dumps(payload)
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON, (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
    return len(body)


async def answer_json(send, rid: bytes, status: int, payload: dict, close: bool = False) -> None:
    """The gateway's own JSON answer, its request id in the body and in X-Request-ID."""
    payload["request_id"] = rid.decode()
    headers = [(b"x-request-id", rid), (b"connection", b"close")] if close else \
        [(b"x-request-id", rid)]
    await send_json(send, status, payload, headers)


# Request bodies up to this size are read whole before forwarding (like nginx's request
# buffering): the upstream then never sees a body that turns out too large, and gets a
# Content-Length. Larger bodies stream through as they arrive.
BUFFER_REQUEST_BYTES = 1 << 20


async def _next_chunk(receive, total: list[int], limit: int) -> tuple[bytes, bool]:
    """(chunk, more to come) of the request body; keeps total[0] and enforces the limit."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    chunk = message.get("body", b"")
    total[0] += len(chunk)
    if total[0] > limit:
        raise BodyTooLarge
    return chunk, message.get("more_body", False)


async def read_request_body(receive, limit: int, total: list[int]) -> bytes | AsyncIterator[bytes]:
    """The whole body as bytes when it ends within the buffer size, else a streaming iterator.

    Raises BodyTooLarge over `limit` (now or while streaming) and ClientDisconnected.
    `total[0]` holds the body size read so far.
    """
    chunks: list[bytes] = []
    while True:
        chunk, more = await _next_chunk(receive, total, limit)
        chunks.append(chunk)
        if not more:
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if total[0] > BUFFER_REQUEST_BYTES:
            return _stream_rest(receive, b"".join(chunks), limit, total)


async def _stream_rest(receive, head: bytes, limit: int, total: list[int]) -> AsyncIterator[bytes]:
    yield head
    more = True
    while more:
        chunk, more = await _next_chunk(receive, total, limit)
        yield chunk


class Exchange:
    """One request on its way through the proxy: what each step decided and measured.

    Steps, in order (ProxyApp): pick (route, variant), read the body, send (with failover),
    relay the answer, finish (canary, capture, metrics, access log). The record replaces the
    dozen locals and parameters those steps used to pass around.
    """

    __slots__ = ("rt", "scope", "fwd", "route", "chosen", "variant", "upstream", "started",
                 "shadow", "path", "received", "body", "target", "status", "sent_at", "upstream_dur",
                 "response_headers", "data", "response_bytes", "error", "fell_back", "sampled")

    def __init__(self, rt: GatewayRuntime, scope: dict, fwd: ForwardedRequest, route: Route,
                 variant: Variant, started: float) -> None:
        self.rt = rt
        self.scope = scope
        self.fwd = fwd
        self.route = route
        self.chosen = variant            # the split's pick; `variant` becomes whoever answered
        self.variant = variant
        self.upstream = variant.upstream
        self.started = started
        self.shadow = False              # a mirrored copy (gateway-initiated, no client)
        self.path: str = scope["path"]   # normalised (gateway.proxy.paths), as matched
        self.received = [0]              # request body bytes read so far
        self.body: bytes | AsyncIterator[bytes] | None = None
        self.target = b""                # normalised raw path + query: what the upstream gets
        self.status = 0                  # 0 until an answer (upstream's or ours) is decided
        self.sent_at = started
        self.upstream_dur: float | None = None
        self.response_headers: list | None = None
        self.data: bytes | None = None   # the response body, when it was kept for the monitor
        self.response_bytes = 0
        self.error: UpstreamError | None = None
        self.fell_back = False
        self.sampled = False

    @property
    def body_in_hand(self) -> bool:
        """Whether the whole body is here (not still streaming): it can be sent again."""
        return self.body is None or isinstance(self.body, bytes)

    def fall_back(self, variant: Variant) -> None:
        self.variant, self.upstream, self.fell_back = variant, variant.upstream, True


class ProxyApp:
    def __init__(self, runtime: GatewayRuntime) -> None:
        self.runtime = runtime
        self.access_log = get_access_logger()
        # (upstream, kind) -> (last logged, suppressed since): bounded by config names x kinds
        self._error_log_state: dict[tuple[str, str], tuple[float, int]] = {}
        self._shadow_tasks: set[asyncio.Task] = set()  # bounded by each route's shadow cap
        self._feedback_pending = 0  # bytes of feedback bodies reserved (gateway.config)
        self._awaiting: set[_ClientWatch] = set()  # exchanges waiting for upstream headers
        self._sweeper: asyncio.Task | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1003})
            return
        started = time.perf_counter()
        rt = self.runtime
        fwd = ForwardedRequest(scope)
        rid = fwd.request_id
        raw = scope.get("raw_path") or scope["path"].encode()
        try:
            normal = normalize(raw)
        except UnsafePath as exc:
            await answer_json(send, rid, 400, {"error": str(exc)})
            return
        path = scope["path"] if normal is raw else decoded(normal)
        if path == rt.feedback_path and scope["method"] == "POST":
            await self._feedback(receive, send, fwd)
            return
        route = rt.table.match(scope["method"], path)
        if route is None:
            rt.metrics.unrouted.inc()
            await answer_json(send, rid, 404, {"error": "no route for this path", "path": path})
            return
        variant = route.variants[0] if route.splitter is None else self._choose(route, scope)
        if variant is None:
            await answer_json(send, rid, 400, {
                "error": f"unknown variant in {route.override_header.decode()}",
                "variants": route.splitter.names, "route": route.name})
            return
        ex = Exchange(rt, scope, fwd, route, variant, started)
        ex.path = path
        query = scope.get("query_string")
        ex.target = normal + b"?" + query if query else normal  # what the upstream is sent
        route.in_flight.inc()
        try:
            await self._forward(ex, receive, send)
        finally:
            route.in_flight.dec()

    async def _feedback(self, receive, send, fwd: ForwardedRequest) -> None:
        """POST /feedback: the body goes unread to the monitor process, which joins the labels
        to its predictions (gateway.experiments.feedback) and answers. Bodies in the proxy's
        hands are bounded together (`feedback.max_pending_bytes`): beyond, 503 unread."""
        rt = self.runtime
        headers = [(b"x-request-id", fwd.request_id)]
        cfg = rt.cfg.feedback
        limit = cfg.max_body_bytes
        declared = fwd.content_length
        if declared is not None and declared > limit:
            await send_json(send, 413, {"error": f"feedback body larger than {limit} bytes"},
                            [*headers, (b"connection", b"close")])
            return
        reserve = declared if declared is not None and declared >= 0 else limit
        if self._feedback_pending + reserve > cfg.max_pending_bytes:
            await send_json(send, 503, {"error": "too much feedback in flight: retry shortly"},
                            [*headers, (b"retry-after", b"1"), (b"connection", b"close")])
            return
        self._feedback_pending += reserve
        try:
            await self._ask_feedback(receive, send, headers, limit)
        finally:
            self._feedback_pending -= reserve

    async def _ask_feedback(self, receive, send, headers: list, limit: int) -> None:
        try:
            body = await read_request_body(receive, limit, [0])
            if not isinstance(body, bytes):  # past the streaming threshold: still wanted whole
                body = b"".join([chunk async for chunk in body])
        except BodyTooLarge:
            await send_json(send, 413, {"error": f"feedback body larger than {limit} bytes"},
                            [*headers, (b"connection", b"close")])
            return
        except ClientDisconnected:
            return
        status, payload = await self.runtime.monitor.ask(Question.FEEDBACK, body)
        await send_json(send, status, payload, headers)

    @staticmethod
    def _choose(route: Route, scope) -> Variant | None:
        """The variant for this request (override, sticky key, or weighted random); None when
        the override names no variant."""
        override = key = None
        override_name, sticky_name, cookie = (route.override_header, route.sticky_header,
                                              route.sticky_cookie)
        for name, value in scope["headers"]:
            if name == override_name:
                override = value.decode("latin-1")
            elif name == sticky_name:
                key = value
            elif cookie is not None and name == b"cookie":
                key = cookie_value(value, cookie) or key
        try:
            return route.variants[route.splitter.choose(key, override)]
        except UnknownVariant:
            return None

    async def _forward(self, ex: Exchange, receive, send) -> None:
        """Read, send, relay; every way out (answer, refusal, failure) ends in `_finish`."""
        try:
            await self._read_body(ex, receive)
            resp = await self._send_watching_client(ex, receive)
            await self._relay(ex, resp, receive, send)
            if ex.route.shadows and ex.body_in_hand:
                self._mirror(ex)  # after the live answer is out: a copy can never hold it up
            mon = ex.route.monitor
            # a request without a body (a health check, a metadata GET) carries no features:
            # it counts in the experiment, and its answer is not taken for predictions
            ex.sampled = mon is not None and ex.body is not None and mon.sample()
        except BodyTooLarge:
            limit = ex.rt.cfg.server.max_body_bytes
            await self._refuse(ex, send, 413, {"error": f"request body larger than {limit} bytes",
                                               "upstream": ex.upstream.name}, close=True)
        except InvalidContentLength:
            await self._refuse(ex, send, 400, {"error": "invalid Content-Length"})
        except NoHealthyUpstream:
            await self._refuse(ex, send, 503, {
                "error": "no healthy upstream for this route", "route": ex.route.name,
                "variants": [v.name for v in ex.route.variants]})
        except ClientDisconnected:
            ex.status = 499  # nginx's convention: the client went away before the answer
        except UpstreamError as exc:
            ex.error = exc
            ex.rt.metrics.upstream_error(ex.upstream.name, exc.kind)
            self._log_upstream_error(ex.upstream.name, exc, ex.fwd.request_id)
            if ex.status:  # headers already sent: all we can do is cut the response short
                return     # (uvicorn closes the connection; the line above logged it once)
            await self._refuse(ex, send, exc.status, {"error": str(exc),
                                                      "upstream": ex.upstream.name})
        finally:
            if ex.status:
                self._finish(ex)

    @staticmethod
    async def _refuse(ex: Exchange, send, status: int, payload: dict, close: bool = False) -> None:
        """The gateway's own answer in place of the upstream's."""
        ex.status = status
        await answer_json(send, ex.fwd.request_id, status, payload, close)

    @staticmethod
    async def _read_body(ex: Exchange, receive) -> None:
        fwd = ex.fwd
        limit = ex.rt.cfg.server.max_body_bytes
        if fwd.content_length is not None and fwd.content_length > limit:
            raise BodyTooLarge
        if fwd.content_length == -1:
            raise InvalidContentLength
        body = await read_request_body(receive, limit, ex.received)
        if not body and fwd.content_length is None and not fwd.chunked:
            body = None  # no body and no framing header: send none
        ex.body = body

    async def _send_watching_client(self, ex: Exchange, receive) -> UpstreamResponse:
        """`_send`, cancelled as soon as the client goes away: the upstream is freed then, not
        after its read timeout. Only answers slower than CLIENT_WATCH_AFTER get a watch, started
        by one sweeper for all (a task or a timer per request would cost several us each), and
        only with the body in hand (a streamed body's reader owns `receive`)."""
        if not ex.body_in_hand:
            return await self._send(ex)
        watch = _ClientWatch(receive, asyncio.current_task(), ex.started)
        self._awaiting.add(watch)
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())
        try:
            return await self._send(ex)
        except asyncio.CancelledError:
            if watch.client_gone:
                watch.task.uncancel()  # our own cancel, handled here: the task goes on
                raise ClientDisconnected from None
            raise
        finally:
            self._awaiting.discard(watch)
            watch.stop()

    async def _sweep(self) -> None:
        """Every CLIENT_WATCH_AFTER: watch the clients of the answers slower than that."""
        while True:
            await asyncio.sleep(CLIENT_WATCH_AFTER)
            cutoff = time.perf_counter() - CLIENT_WATCH_AFTER
            for watch in self._awaiting:
                if watch.watcher is None and watch.since <= cutoff:
                    watch.start()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    async def _send(self, ex: Exchange) -> UpstreamResponse:
        """The request to the pick's upstream, or to another variant when that one is down;
        a connection it refused is retried once on the fallback (`_retry_variant`)."""
        route = ex.route
        now = time.monotonic()
        if not ex.upstream.available(now):  # ejected or failing active checks
            # the route's fallback, else any other variant that is up, in config order
            fb = route.usable_fallback(ex.variant, now) or next(
                (v for v in route.variants if v is not ex.variant and v.upstream.available(now)),
                None)
            if fb is None:
                raise NoHealthyUpstream
            ex.fall_back(fb)
        route.budget.record_request(now)
        ex.sent_at = time.perf_counter()
        method = ex.scope["method"].encode()
        while True:
            try:
                return await ex.upstream.pool.request(
                    method, ex.target, ex.fwd.headers, ex.body,
                    ex.fwd.content_length if not isinstance(ex.body, bytes) else None)
            except UpstreamError as exc:
                ex.rt.record_outcome(ex.upstream, False)
                fb = self._retry_variant(ex, exc)
                if fb is None:
                    raise
                ex.rt.metrics.upstream_error(ex.upstream.name, exc.kind)
                ex.fall_back(fb)

    @staticmethod
    def _retry_variant(ex: Exchange, exc: UpstreamError) -> Variant | None:
        """Fail over once, with the body in hand, within the route's retry budget, and only
        what the upstream cannot have acted on: nothing of it was sent, or its method is
        idempotent (a POST the upstream read and then dropped is never sent twice)."""
        route = ex.route
        replay_unsafe = exc.sent and ex.scope["method"].encode() not in IDEMPOTENT_METHODS
        fb = None if replay_unsafe or ex.fell_back else route.usable_fallback(ex.variant,
                                                                             time.monotonic())
        if fb is None or not ex.body_in_hand:
            return None
        if not route.budget.try_retry(time.monotonic()):
            ex.rt.metrics.retries.labels(route.name, "budget_exhausted").inc()
            return None
        ex.rt.metrics.retries.labels(route.name, "retried").inc()
        return fb

    async def _relay(self, ex: Exchange, resp: UpstreamResponse, receive, send) -> None:
        """The upstream's answer to the client: one send when it is all here, else streamed."""
        ex.rt.record_outcome(ex.upstream, resp.status < 500)
        headers_at = time.perf_counter()
        ex.upstream.last_ok = time.monotonic()
        ex.status = resp.status
        ex.response_headers = resp.headers
        out = response_headers(resp.headers)
        out.append((b"x-request-id", ex.fwd.request_id))
        if ex.route.splitter is not None:
            out.append((b"x-driftgate-variant", ex.variant.header))
        if ex.fell_back:
            out.append((b"x-driftgate-fallback", b"true"))
        out.append((b"server-timing", b"gateway;dur=%.3f, upstream;dur=%.3f" % (
            (ex.sent_at - ex.started) * 1000, (headers_at - ex.sent_at) * 1000)))
        start = {"type": "http.response.start", "status": ex.status, "headers": out}
        if resp.complete:  # small answers: one read, one send
            ex.data = resp.read_available()
            resp.release()
            ex.response_bytes = len(ex.data)
            await send(start)
            await send({"type": "http.response.body", "body": ex.data})
        else:
            await send(start)
            mon = ex.route.monitor
            keep = [] if mon is not None and mon.bodies else None
            ex.response_bytes = await self._stream(resp, receive, send, keep,
                                                   mon.max_capture if mon is not None else 0)
            if keep is not None and ex.response_bytes <= mon.max_capture:
                ex.data = b"".join(keep)
        ex.upstream_dur = time.perf_counter() - ex.sent_at

    def _finish(self, ex: Exchange) -> None:
        """After the answer, whatever it was: canary, capture, metrics, access log. O(1)."""
        duration = time.perf_counter() - ex.started
        route = ex.route
        ex.rt.metrics.observe_request((route.name, ex.variant.name, ex.upstream.name,
                                       ex.scope["method"], ex.status, "false"),
                                      duration, ex.upstream_dur)
        canary = route.canary
        if canary is not None:
            ok = ex.status < 500 and ex.error is None and not ex.fell_back
            if ex.chosen.name == canary.variant:
                canary.record(ok, duration)  # a pick it could not serve (fallback) counts too
            elif ex.chosen.name == canary.control:
                canary.record_control(ok)
        if route.monitor is not None:  # every request counts in the experiment, sampled or not
            self._capture(ex, duration)
        route.request_size.observe(ex.received[0])
        route.response_size.observe(ex.response_bytes)
        self._access_log(ex, duration)

    def _mirror(self, ex: Exchange) -> None:
        """Send copies to the route's shadow upstreams, never waiting for them; beyond the
        in-flight cap a copy is dropped and counted."""
        route = ex.route
        for upstream, share in route.shadows:
            if share < 1.0 and random.random() >= share:
                continue
            if route.shadow_in_flight >= route.shadow_cap:
                ex.rt.metrics.shadow_dropped.labels(route.name).inc()
                continue
            route.shadow_in_flight += 1
            task = asyncio.ensure_future(self._shadow(ex, upstream))
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(self, live: Exchange, upstream: Upstream) -> None:
        """One shadow copy: its answer is counted and monitored under the upstream's name."""
        rt, route = live.rt, live.route
        ex = Exchange(rt, live.scope, live.fwd, route, Variant(upstream.name, upstream),
                      time.perf_counter())
        ex.shadow, ex.body, ex.target = True, live.body, live.target
        try:
            resp = await upstream.pool.request(ex.scope["method"].encode(), ex.target,
                                               ex.fwd.headers, ex.body)
            ex.status = resp.status
            ex.response_headers = resp.headers
            ex.data = await resp.body()
            rt.record_outcome(upstream, ex.status < 500)
        except UpstreamError as exc:
            rt.metrics.upstream_error(upstream.name, exc.kind)
            rt.record_outcome(upstream, False)
            ex.status, ex.data = exc.status, None
        finally:
            route.shadow_in_flight -= 1
            duration = time.perf_counter() - ex.started
            rt.metrics.observe_request((route.name, upstream.name, upstream.name,
                                        ex.scope["method"], ex.status, "true"), duration, duration)
        mon = route.monitor
        if mon is not None and mon.bodies and ex.data is not None:
            ex.sampled = True
            self._capture(ex, duration)

    @staticmethod
    def _capture(ex: Exchange, duration: float) -> None:
        """O(1) hand-off to the monitor process's queue (gateway.link). Bodies over the route's
        capture cap, or streamed (not bytes), go as None: counted, not decoded."""
        mon = ex.route.monitor
        if not ex.sampled:
            ex.rt.capture.offer(Capture(mon.route, ex.variant.name, time.time(), None, duration,
                                        False, None, None, None, None, ex.status))
            return
        cap = mon.max_capture
        request = b"" if ex.body is None else ex.body
        data = ex.data
        ex.rt.capture.offer(Capture(
            mon.route, ex.variant.name, time.time(), None if ex.shadow else ex.fwd.request_id,
            duration, True, request if isinstance(request, bytes) and len(request) <= cap else None,
            ex.scope["headers"], data if data is not None and len(data) <= cap else None,
            ex.response_headers, ex.status))

    async def _stream(self, resp: UpstreamResponse, receive, send, keep: list | None = None,
                      keep_limit: int = 0) -> int:
        """Relay a body that is still arriving, chunk by chunk, until the end or a disconnect.

        With `keep`, chunks are also kept (references, no copy) while the total stays within
        `keep_limit`: the monitor's copy of a response that came in several packets.
        """
        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            resp.abort()

        watcher = asyncio.ensure_future(watch_disconnect())
        size = 0
        try:
            while True:
                try:
                    chunk = await resp.read()
                except UpstreamError:
                    if watcher.done():
                        raise ClientDisconnected from None
                    raise
                if not chunk:
                    break
                size += len(chunk)
                if keep is not None and size <= keep_limit:
                    keep.append(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return size
        finally:
            watcher.cancel()
            resp.abort()  # no-op when the body was read to the end

    def _log_upstream_error(self, upstream: str, exc: UpstreamError, rid: bytes) -> None:
        """One warning per upstream and error kind every 5 s, with how many it stands for."""
        key = (upstream, exc.kind)
        now = time.monotonic()
        last, suppressed = self._error_log_state.get(key, (0.0, 0))
        if now - last < 5.0:
            self._error_log_state[key] = (last, suppressed + 1)
            return
        self._error_log_state[key] = (now, 0)
        self.runtime.log.warning("upstream error", upstream=upstream, kind=exc.kind, error=str(exc),
                                 request_id=rid.decode(), similar_errors_not_logged=suppressed)

    def _access_log(self, ex: Exchange, duration: float) -> None:
        access = ex.rt.cfg.logging.access_log
        if not access.enabled or (access.sample_rate < 1.0 and random.random() >= access.sample_rate):
            return
        dur = ex.upstream_dur
        self.access_log.info(
            "access", request_id=ex.fwd.request_id.decode(), route=ex.route.name,
            variant=ex.variant.name, upstream=ex.upstream.name, method=ex.scope["method"],
            path=ex.path, status=ex.status, duration_ms=round(duration * 1000, 3),
            upstream_ms=round(dur * 1000, 3) if dur is not None else None,
            request_bytes=ex.received[0], response_bytes=ex.response_bytes,
            error=ex.error.kind if ex.error else None, fallback=ex.fell_back)
