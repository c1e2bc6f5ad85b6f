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

from gateway.capture import RouteCapture
from gateway.engine import UpstreamError, UpstreamResponse
from gateway.headers import ForwardedRequest, response_headers
from gateway.logs import get_access_logger
from gateway.runtime import GatewayRuntime, Route, Variant
from routing import UnknownVariant, cookie_value

_JSON = [(b"content-type", b"application/json")]


class BodyTooLarge(Exception):
    pass


class ClientDisconnected(Exception):
    pass


class NoHealthyUpstream(Exception):
    pass


async def send_json(send, status: int, payload: dict, headers: list | None = None) -> int:
    body = orjson.dumps(payload)
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON, (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
    return len(body)


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


class ProxyApp:
    def __init__(self, runtime: GatewayRuntime) -> None:
        self.runtime = runtime
        self.access_log = get_access_logger()
        # (upstream, kind) -> (last logged, suppressed since): bounded by config names x kinds
        self._error_log_state: dict[tuple[str, str], tuple[float, int]] = {}
        self._shadow_tasks: set[asyncio.Task] = set()  # bounded by each route's shadow cap

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1003})
            return
        started = time.perf_counter()
        rt = self.runtime
        method: str = scope["method"]
        path: str = scope["path"]
        fwd = ForwardedRequest(scope)
        rid = fwd.request_id
        if path == rt.feedback_path and method == "POST":
            await self._feedback(receive, send, rid)
            return
        route = rt.table.match(method, path)
        if route is None:
            rt.metrics.unrouted.inc()
            await send_json(send, 404, {"error": "no route for this path", "path": path,
                                        "request_id": rid.decode()}, [(b"x-request-id", rid)])
            return
        if route.splitter is None:
            variant = route.variants[0]
        else:
            variant = self._choose(route, scope)
            if variant is None:
                await send_json(send, 400, {
                    "error": f"unknown variant in {route.override_header.decode()}",
                    "variants": route.splitter.names, "route": route.name,
                    "request_id": rid.decode()}, [(b"x-request-id", rid)])
                return
        route.in_flight.inc()
        try:
            await self._forward(scope, receive, send, route, variant, fwd, started)
        finally:
            route.in_flight.dec()

    async def _feedback(self, receive, send, rid: bytes) -> None:
        """POST /feedback: the body goes unread to the monitor process, which joins the labels
        to its predictions (gateway.feedback) and answers."""
        rt = self.runtime
        headers = [(b"x-request-id", rid)]
        limit = rt.cfg.feedback.max_body_bytes
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
        status, payload = await rt.monitor.ask("feedback", body)
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

    async def _forward(self, scope, receive, send, route: Route, variant: Variant,
                       fwd: ForwardedRequest, started: float) -> None:
        rt = self.runtime
        upstream = variant.upstream
        rid = fwd.request_id
        limit = rt.cfg.server.max_body_bytes
        status = 0
        upstream_dur = None
        request_bytes = [0]
        response_bytes = 0
        error: UpstreamError | None = None
        fell_back = False
        chosen = variant  # the split's pick; `variant` becomes whoever answered
        mon = route.monitor
        body = data = resp_headers = None
        sampled = False
        try:
            if fwd.content_length is not None and fwd.content_length > limit:
                raise BodyTooLarge
            if fwd.content_length == -1:
                status = 400
                await send_json(send, 400, {"error": "invalid Content-Length",
                                            "request_id": rid.decode()}, [(b"x-request-id", rid)])
                return
            body: bytes | AsyncIterator[bytes] | None = await read_request_body(
                receive, limit, request_bytes)
            if not body and fwd.content_length is None and not fwd.chunked:
                body = None  # no body and no framing header: send none
            target = scope.get("raw_path") or scope["path"].encode()
            if scope.get("query_string"):
                target = target + b"?" + scope["query_string"]
            now = time.monotonic()
            if not upstream.available(now):  # ejected or failing active checks
                # the route's fallback, else any other variant that is up, in config order
                fb = route.usable_fallback(variant, now) or next(
                    (v for v in route.variants if v is not variant and v.upstream.available(now)),
                    None)
                if fb is None:
                    raise NoHealthyUpstream
                variant, upstream, fell_back = fb, fb.upstream, True
            route.budget.record_request(now)
            sent_at = time.perf_counter()
            while True:
                try:
                    resp = await upstream.pool.request(
                        scope["method"].encode(), target, fwd.headers, body,
                        fwd.content_length if not isinstance(body, bytes) else None)
                    break
                except UpstreamError as exc:
                    rt.record_outcome(upstream, False)
                    # Fail over only what never reached the upstream, with the body in hand,
                    # once, and within the route's retry budget.
                    fb = None if exc.sent or fell_back else route.usable_fallback(
                        variant, time.monotonic())
                    if fb is None or not (body is None or isinstance(body, bytes)):
                        raise
                    if not route.budget.try_retry(time.monotonic()):
                        rt.metrics.retries.labels(route.name, "budget_exhausted").inc()
                        raise
                    rt.metrics.retries.labels(route.name, "retried").inc()
                    rt.metrics.upstream_error(upstream.name, exc.kind)
                    variant, upstream, fell_back = fb, fb.upstream, True
            rt.record_outcome(upstream, resp.status < 500)
            headers_at = time.perf_counter()
            upstream.last_ok = time.monotonic()
            status = resp.status
            out = response_headers(resp.headers)
            out.append((b"x-request-id", rid))
            if route.splitter is not None:
                out.append((b"x-driftgate-variant", variant.header))
            if fell_back:
                out.append((b"x-driftgate-fallback", b"true"))
            out.append((b"server-timing", b"gateway;dur=%.3f, upstream;dur=%.3f" % (
                (sent_at - started) * 1000, (headers_at - sent_at) * 1000)))
            resp_headers = resp.headers
            if resp.complete:  # small answers: one read, one send
                data = resp.read_available()
                resp.release()
                response_bytes = len(data)
                await send({"type": "http.response.start", "status": status, "headers": out})
                await send({"type": "http.response.body", "body": data})
            else:
                await send({"type": "http.response.start", "status": status, "headers": out})
                keep = [] if mon is not None and mon.bodies else None
                response_bytes = await self._stream(resp, receive, send, keep,
                                                    mon.max_capture if mon is not None else 0)
                if keep is not None and response_bytes <= mon.max_capture:
                    data = b"".join(keep)
            upstream_dur = time.perf_counter() - sent_at
            if route.shadows and (body is None or isinstance(body, bytes)):
                # after the live answer is out: the copy can never hold it up
                self._mirror(scope, route, target, fwd, body)
            sampled = mon is not None and mon.bodies and (
                mon.sample_rate >= 1.0 or random.random() < mon.sample_rate)
        except BodyTooLarge:
            status = 413
            await send_json(send, 413, {"error": f"request body larger than {limit} bytes",
                                        "upstream": upstream.name, "request_id": rid.decode()},
                            [(b"x-request-id", rid), (b"connection", b"close")])
        except NoHealthyUpstream:
            status = 503
            await send_json(send, 503, {
                "error": "no healthy upstream for this route", "route": route.name,
                "variants": [v.name for v in route.variants], "request_id": rid.decode()},
                [(b"x-request-id", rid)])
        except ClientDisconnected:
            status = 499  # nginx's convention: the client went away before the answer
        except UpstreamError as exc:
            error = exc
            rt.metrics.upstream_error(upstream.name, exc.kind)
            self._log_upstream_error(upstream.name, exc, rid)
            if status:  # headers already sent: all we can do is cut the response short
                raise
            status = exc.status
            await send_json(send, status, {"error": str(exc), "upstream": upstream.name,
                                           "request_id": rid.decode()},
                            [(b"x-request-id", rid)])
        finally:
            duration = time.perf_counter() - started
            if status:
                rt.metrics.observe_request(route.name, variant.name, upstream.name,
                                           scope["method"], status, duration, upstream_dur)
                canary = route.canary
                if canary is not None:
                    ok = status < 500 and error is None and not fell_back
                    if chosen.name == canary.variant:
                        # a pick the candidate could not serve (fallback) counts against it
                        canary.record(ok, duration)
                    elif chosen.name == canary.control:
                        canary.record_control(ok)
                if mon is not None:  # every request counts in the experiment, sampled or not
                    self._capture(mon, variant.name, scope, rid, duration, sampled, body, data,
                                  resp_headers, status)
                route.request_size.observe(request_bytes[0])
                route.response_size.observe(response_bytes)
                self._access_log(scope, fwd, route, variant, status, duration, upstream_dur,
                                 request_bytes[0], response_bytes, error, fell_back)

    def _mirror(self, scope, route: Route, target: bytes, fwd: ForwardedRequest,
                body: bytes | None) -> None:
        """Send copies to the route's shadow upstreams, never waiting for them; beyond the
        in-flight cap a copy is dropped and counted."""
        for upstream, share in route.shadows:
            if share < 1.0 and random.random() >= share:
                continue
            if route.shadow_in_flight >= route.shadow_cap:
                self.runtime.metrics.shadow_dropped.labels(route.name).inc()
                continue
            route.shadow_in_flight += 1
            task = asyncio.ensure_future(self._shadow(scope, route, upstream, target, fwd, body))
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(self, scope, route: Route, upstream, target: bytes, fwd: ForwardedRequest,
                      body: bytes | None) -> None:
        rt = self.runtime
        started = time.perf_counter()
        status = 0
        data = None
        resp = None
        try:
            resp = await upstream.pool.request(scope["method"].encode(), target, fwd.headers, body)
            status = resp.status
            data = await resp.body()
            rt.record_outcome(upstream, status < 500)
        except UpstreamError as exc:
            rt.metrics.upstream_error(upstream.name, exc.kind)
            rt.record_outcome(upstream, False)
            status = exc.status
        finally:
            route.shadow_in_flight -= 1
            duration = time.perf_counter() - started
            rt.metrics.observe_request(route.name, upstream.name, upstream.name, scope["method"],
                                       status, duration, duration, shadow="true")
        mon = route.monitor
        if mon is not None and mon.bodies and resp is not None and data is not None:
            # no request id: a label for this request belongs to the live answer
            self._capture(mon, upstream.name, scope, None, duration, True, body, data,
                          resp.headers, status)

    def _capture(self, mon: RouteCapture, variant: str, scope, rid: bytes | None,
                 duration: float, sampled: bool, body, data: bytes | None,
                 response_headers: list | None, status: int) -> None:
        """O(1) hand-off to the monitor process's queue (gateway.monitor_link). Bodies over the
        route's capture cap, or streamed (not bytes), go as None: counted, not decoded."""
        cap = mon.max_capture
        if not sampled:
            self.runtime.capture.offer((mon.route, variant, time.time(), None, duration, False,
                                        None, None, None, None, status))
            return
        request = b"" if body is None else body
        self.runtime.capture.offer((
            mon.route, variant, time.time(), rid, duration, True,
            request if isinstance(request, bytes) and len(request) <= cap else None,
            scope["headers"], data if data is not None and len(data) <= cap else None,
            response_headers, status))

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

    def _access_log(self, scope, fwd: ForwardedRequest, route: Route, variant: Variant, status: int,
                    duration: float, upstream_dur: float | None, request_bytes: int,
                    response_bytes: int, error: UpstreamError | None, fell_back: bool) -> None:
        access = self.runtime.cfg.logging.access_log
        if not access.enabled or (access.sample_rate < 1.0 and random.random() >= access.sample_rate):
            return
        self.access_log.info(
            "access", request_id=fwd.request_id.decode(), route=route.name,
            variant=variant.name, upstream=variant.upstream.name, method=scope["method"],
            path=scope["path"], status=status, duration_ms=round(duration * 1000, 3),
            upstream_ms=round(upstream_dur * 1000, 3) if upstream_dur is not None else None,
            request_bytes=request_bytes, response_bytes=response_bytes,
            error=error.kind if error else None, fallback=fell_back)
