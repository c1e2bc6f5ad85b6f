"""Transparent forwarding through a real gateway to a real upstream, over real HTTP."""

import hashlib
import os
import socket
import threading
import time

import httpx
import orjson
import pytest

from tests.servers import GatewayServer, free_port, gateway_yaml

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_reaches_upstream_with_body(gw, client, method):
    body = b'{"x": 1}' if method not in ("GET", "OPTIONS") else b""
    r = client.request(method, f"{gw.url}/v1/models/m:predict", content=body,
                       headers={"content-type": "application/json"} if body else {})
    assert r.status_code == 200
    seen = r.json()
    assert seen["method"] == method
    assert seen["path"] == "/v1/models/m:predict"
    assert seen["body_size"] == len(body)


def test_head_gets_headers_and_no_body(gw, client):
    r = client.head(f"{gw.url}/anything")
    assert r.status_code == 200
    assert r.content == b""
    assert int(r.headers["content-length"]) > 0
    # and the connection to the upstream stays usable for the next request
    assert client.get(f"{gw.url}/after-head").json()["path"] == "/after-head"


def test_query_string_and_encoded_path_kept_byte_for_byte(gw, client):
    r = client.get(f"{gw.url}/v2/models/a%2Fb/infer?x=1&y=a%20b&y=2&empty=")
    seen = r.json()
    assert seen["raw_path"] == "/v2/models/a%2Fb/infer"
    assert seen["query"] == "x=1&y=a%20b&y=2&empty="


def test_headers_forwarded_and_hop_by_hop_dropped(gw, client):
    r = client.post(f"{gw.url}/h", content=b"{}", headers={
        "content-type": "application/json", "authorization": "Bearer s3cret",
        "x-custom": "a", "connection": "keep-alive, x-drop-me", "x-drop-me": "gone",
        "keep-alive": "timeout=5", "proxy-authorization": "Basic x", "te": "trailers",
        "x-forwarded-for": "10.1.1.1", "host": "client.example",
    })
    headers = {k: v for k, v in r.json()["headers"]}
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["x-custom"] == "a"
    assert headers["content-type"] == "application/json"
    for dropped in ("x-drop-me", "keep-alive", "proxy-authorization", "te"):
        assert dropped not in headers, dropped
    assert headers["host"] == gw.gateway.cfg.upstreams["echo"].url.removeprefix("http://")
    assert headers["x-forwarded-for"] == "10.1.1.1, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "client.example"
    # response side: upstream headers kept, hop-by-hop ones removed
    assert r.headers["x-upstream-header"] == "kept"
    assert "keep-alive" not in r.headers


def test_no_content_type_stays_absent(gw):
    # tritonclient sends none; MLflow answers 500 if we invented one
    reply = _raw_request(gw.gateway.port, b"POST /invocations HTTP/1.1\r\nHost: x\r\n"
                                          b"Content-Length: 5\r\nConnection: close\r\n\r\n1,2,3",
                         until_close=True)
    assert reply.startswith(b"HTTP/1.1 200")
    body = orjson.loads(reply.split(b"\r\n\r\n", 1)[1])
    names = [k for k, _ in body["headers"]]
    assert "content-type" not in names
    assert body["body"] == "1,2,3"


def test_ten_megabyte_binary_round_trip(echo):
    cfg = gateway_yaml({"echo": echo.url}, [("echo", "/", "echo")])
    cfg = cfg.replace("server: {port:", "server: {max_body_bytes: 20000000, port:")
    server = GatewayServer(cfg)
    try:
        payload = os.urandom(10 * 1024 * 1024)
        with httpx.Client(timeout=30) as c:
            r = c.post(f"{server.url}/binary", content=payload,
                       headers={"content-type": "application/octet-stream"})
        assert r.status_code == 200
        assert len(r.content) == len(payload)
        assert hashlib.sha256(r.content).digest() == hashlib.sha256(payload).digest()
        # the same body sent chunked (no Content-Length) arrives whole too
        with httpx.Client(timeout=30) as c:
            r = c.post(f"{server.url}/binary", content=iter([payload[:4_000_000], payload[4_000_000:]]))
        assert hashlib.sha256(r.content).digest() == hashlib.sha256(payload).digest()
    finally:
        server.stop()


def test_streamed_response_arrives_chunk_by_chunk(gw):
    arrivals = []
    with httpx.Client(timeout=10) as c, c.stream("GET", f"{gw.url}/stream?n=5&delay=0.3") as r:
        assert r.headers["content-type"] == "text/event-stream"
        for line in r.iter_lines():
            if line.startswith("data:"):
                arrivals.append((time.time(), float(line.split()[2])))
    assert len(arrivals) == 5
    first_received = arrivals[0][0]
    last_produced = arrivals[-1][1]
    assert first_received < last_produced - 0.5, "first event was held back until the stream ended"


def test_gzip_response_passes_through_untouched(echo):
    import gzip

    from tests.servers import AppServer

    raw = b'{"outputs": [' + b"1.0, " * 5000 + b"1.0]}"
    packed = gzip.compress(raw)

    async def gzip_app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-encoding", b"gzip"),
            (b"ce-source", b"mlserver"), (b"content-length", str(len(packed)).encode())]})
        await send({"type": "http.response.body", "body": packed})

    upstream = AppServer(gzip_app)
    server = GatewayServer(gateway_yaml({"z": upstream.url}, [("z", "/", "z")]))
    try:
        with httpx.Client() as c:
            r = c.get(f"{server.url}/v2/models/iris/infer", headers={"accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["ce-source"] == "mlserver"
        assert int(r.headers["content-length"]) == len(packed)
        assert r.content == raw  # httpx decodes: the gzip bytes arrived intact
    finally:
        server.stop()
        upstream.stop()


def test_upstream_connections_are_reused(gw, client, echo):
    before = set(echo.app.connections)
    for _ in range(30):
        client.post(f"{gw.url}/reuse", content=b"{}")
    new = echo.app.connections - before
    assert len(new) <= 1, f"30 sequential requests opened {len(new)} upstream connections"


def test_connection_close_from_upstream_is_handled(gw, client):
    for _ in range(5):
        assert client.get(f"{gw.url}/close").status_code == 200
    assert client.get(f"{gw.url}/after-close").json()["path"] == "/after-close"


def test_upstream_error_status_and_body_pass_through(gw, client):
    r = client.post(f"{gw.url}/status/422", content=b"{}")
    assert r.status_code == 422
    assert r.json() == {"error": "status 422"}


def test_path_outside_routes_is_404_json(echo, client):
    server = GatewayServer(gateway_yaml({"echo": echo.url}, [("m", "/v1/models/m", "echo")]))
    try:
        r = client.get(f"{server.url}/admin/secret")
        assert r.status_code == 404
        assert r.json()["error"] == "no route for this path"
        assert r.json()["request_id"] == r.headers["x-request-id"]
        # a prefix matches on segment boundaries only
        assert client.get(f"{server.url}/v1/models/mx").status_code == 404
        assert client.post(f"{server.url}/v1/models/m:predict", content=b"{}").status_code == 200
    finally:
        server.stop()


def _raw_request(port: int, data: bytes, until_close: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(data)
        s.settimeout(5)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not until_close and b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


def test_absolute_form_and_foreign_host_never_leave_configured_upstreams(gw, echo):
    # An open proxy would fetch http://example.invalid/; we send it to the configured upstream.
    before = echo.app.requests
    reply = _raw_request(gw.gateway.port, b"GET http://example.invalid/steal HTTP/1.1\r\n"
                                          b"Host: example.invalid\r\nConnection: close\r\n\r\n",
                         until_close=True)
    assert reply.startswith(b"HTTP/1.1 200")
    assert echo.app.requests == before + 1
    assert b'"path":"/steal"' in reply


def test_refused_upstream_gives_502_json_fast(client):
    dead_port = free_port()
    server = GatewayServer(gateway_yaml({"gone": f"http://127.0.0.1:{dead_port}"}, [("r", "/", "gone")]))
    try:
        start = time.monotonic()
        r = client.post(f"{server.url}/v1/models/m:predict", content=b"{}")
        assert time.monotonic() - start < 1.0
        assert r.status_code == 502
        body = r.json()
        assert body["upstream"] == "gone"
        assert "connect" in body["error"]
        assert body["request_id"] == r.headers["x-request-id"]
    finally:
        server.stop()


def test_upstream_that_hangs_up_gives_502(client):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def hang_up():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.recv(65536)
            conn.close()  # reads the request, answers nothing

    t = threading.Thread(target=hang_up, daemon=True)
    t.start()
    port = listener.getsockname()[1]
    server = GatewayServer(gateway_yaml({"rude": f"http://127.0.0.1:{port}"}, [("r", "/", "rude")]))
    try:
        r = client.post(f"{server.url}/x", content=b"{}")
        assert r.status_code == 502
        assert r.json()["upstream"] == "rude"
        assert "closed" in r.json()["error"]
    finally:
        server.stop()
        stop.set()
        t.join()
        listener.close()


def test_slow_upstream_gives_504_after_read_timeout(echo, client):
    cfg = gateway_yaml({"echo": echo.url}, [("r", "/", "echo")], timeout="{connect: 1.0, read: 0.5}")
    server = GatewayServer(cfg)
    try:
        start = time.monotonic()
        r = client.get(f"{server.url}/slow?delay=3")
        elapsed = time.monotonic() - start
        assert r.status_code == 504
        assert r.json()["upstream"] == "echo"
        assert 0.4 < elapsed < 2.0
    finally:
        server.stop()


def test_body_over_limit_gives_413(echo, client):
    cfg = gateway_yaml({"echo": echo.url}, [("r", "/", "echo")])
    cfg = cfg.replace("server: {port:", "server: {max_body_bytes: 1000, port:")
    server = GatewayServer(cfg)
    try:
        before = echo.app.requests
        r = client.post(f"{server.url}/x", content=b"x" * 1001)
        assert r.status_code == 413
        assert r.json()["upstream"] == "echo"
        assert "1000" in r.json()["error"]
        # chunked upload without Content-Length: caught while streaming
        r = client.post(f"{server.url}/x", content=iter([b"x" * 600, b"x" * 600]))
        assert r.status_code == 413
        assert echo.app.requests == before, "an oversized body must not reach the model"
        assert client.post(f"{server.url}/x", content=b"x" * 1000).status_code == 200
    finally:
        server.stop()


def test_request_id_kept_when_sane_else_generated(gw, client):
    r = client.get(f"{gw.url}/rid", headers={"x-request-id": "client-abc-123"})
    assert r.headers["x-request-id"] == "client-abc-123"
    assert dict(r.json()["headers"])["x-request-id"] == "client-abc-123"
    for bad in ("x" * 129, "bad\tid", "é-utf8".encode()):
        r = client.get(f"{gw.url}/rid", headers={"x-request-id": bad})
        generated = r.headers["x-request-id"]
        assert generated != bad and len(generated) == 32
        assert dict(r.json()["headers"])["x-request-id"] == generated
    r1 = client.get(f"{gw.url}/rid")
    r2 = client.get(f"{gw.url}/rid")
    assert r1.headers["x-request-id"] != r2.headers["x-request-id"]


def test_traceparent_child_span_or_new_trace(gw, client):
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = client.get(f"{gw.url}/t", headers={"traceparent": incoming, "tracestate": "vendor=1"})
    sent = dict(r.json()["headers"])
    version, trace, span, flags = sent["traceparent"].split("-")
    assert (version, trace, flags) == ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    assert span != "00f067aa0ba902b7" and len(span) == 16
    assert sent["tracestate"] == "vendor=1"
    for absent_or_bad in ({}, {"traceparent": "garbage"}):
        r = client.get(f"{gw.url}/t", headers=absent_or_bad)
        version, trace, span, flags = dict(r.json()["headers"])["traceparent"].split("-")
        assert version == "00" and len(trace) == 32 and len(span) == 16 and trace != "0" * 32


def test_server_timing_on_every_response(gw, client):
    r = client.get(f"{gw.url}/timing")
    parts = dict(p.strip().split(";dur=") for p in r.headers["server-timing"].split(","))
    assert set(parts) == {"gateway", "upstream"}
    assert all(float(v) >= 0 for v in parts.values())


def _raw_get(port: int, target: str) -> tuple[int, bytes]:
    """A GET sent byte for byte (httpx would remove the dot segments itself)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_dot_segments_cannot_escape_the_route_prefix(echo):
    server = GatewayServer(gateway_yaml({"echo": echo.url}, [("public", "/public/nginx", "echo")]))
    try:
        before = echo.app.requests
        escapes = ["/public/nginx/../../internal/secret", "/public/nginx/%2e%2e/%2e%2e/internal/secret",
                   "/public/nginx/..%2f..%2finternal/secret", "/public/nginx/%2f..%2f..%2finternal",
                   "/public/nginx/..\\..\\internal/secret", "/public/nginx/%2E%2e/../internal"]
        statuses = {target: _raw_get(server.gateway.port, target)[0] for target in escapes}
        assert all(s in (400, 404) for s in statuses.values()), statuses
        assert echo.app.requests == before  # none of them reached the upstream
        status, body = _raw_get(server.gateway.port, "/public/nginx/a/./b/%2E%2E/c?q=1")
        assert status == 200
        seen = orjson.loads(body)
        assert (seen["raw_path"], seen["query"]) == ("/public/nginx/a/c", "q=1")
    finally:
        server.stop()
