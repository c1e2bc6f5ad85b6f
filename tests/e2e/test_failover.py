"""Failover through the real gateway: a killed upstream, ejection and recovery, all down,
and a retry budget that caps the extra load."""

import asyncio
import time

import httpx

from tests.servers import AppServer, EchoApp, GatewayServer, LoopThread, free_port


def config(control_port: int, candidate_port: int, outlier: str = "", budget: float = 0.2) -> str:
    return f"""
server: {{port: {free_port()}}}
admin: {{port: {free_port()}, readiness_interval: 0.2}}
logging: {{format: json, access_log: {{enabled: false}}}}
upstreams:
  a: {{url: "http://127.0.0.1:{control_port}", timeout: {{connect: 0.5}}{outlier}}}
  b: {{url: "http://127.0.0.1:{candidate_port}"{outlier}}}
routes:
  - name: r
    match: {{path_prefix: /}}
    variants:
      - {{name: control, upstream: a, weight: 100}}
      - {{name: candidate, upstream: b, weight: 0}}
    fallback: candidate
    retry_budget: {budget}
"""


def test_killed_upstream_fails_over_without_client_errors_then_recovers():
    control_port = free_port()
    control, candidate = AppServer(EchoApp(), port=control_port), AppServer(EchoApp())
    gw = GatewayServer(config(control_port, candidate.port,
                              ", outlier: {consecutive_failures: 3, base_ejection: 1s}"))
    answered = []
    try:
        with httpx.Client(timeout=5) as c:
            for i in range(300):
                if i == 100:
                    control.stop()  # killed mid-test
                if i == 200:
                    control = AppServer(EchoApp(), port=control_port)  # back
                    # wait out the current ejection (1, 2, 3 s... as it was probed while dead)
                    deadline = time.monotonic() + 15
                    while time.monotonic() < deadline and not httpx.get(
                            f"{gw.admin_url}/admin/routes").json()["routes"][0]["variants"][0][
                            "available"]:
                        time.sleep(0.1)
                method = "GET" if i % 2 else "POST"
                r = c.request(method, f"{gw.url}/x", content=b"{}" if method == "POST" else None)
                assert r.status_code == 200, (i, r.status_code, r.text)
                answered.append((r.headers["x-driftgate-variant"],
                                 r.headers.get("x-driftgate-fallback") == "true"))
        assert all(v == "control" for v, _ in answered[:100])
        assert all(v == "candidate" and fb for v, fb in answered[100:200])
        assert all(v == "control" for v, _ in answered[-50:]), "no recovery after the ejection"
        text = httpx.get(f"{gw.admin_url}/metrics").text
        ejections = float(text.split('driftgate_upstream_ejections_total{upstream="a"} ')[1].split()[0])
        assert ejections >= 1  # ejected, probed while still dead, ejected longer
    finally:
        gw.stop()
        control.stop()
        candidate.stop()


def test_all_down_is_503_json_and_unready():
    dead_a, dead_b = free_port(), free_port()
    gw = GatewayServer(config(dead_a, dead_b, ", outlier: {consecutive_failures: 1}"))
    try:
        with httpx.Client() as c:
            first = c.get(f"{gw.url}/x")
            assert first.status_code == 502  # tried, failed, fallback failed too
            start = time.monotonic()
            r = c.get(f"{gw.url}/x")
            assert r.status_code == 503 and time.monotonic() - start < 0.5
            assert r.json()["variants"] == ["control", "candidate"]
            assert r.json()["request_id"] == r.headers["x-request-id"]
        ready = httpx.get(f"{gw.admin_url}/readyz")
        assert ready.status_code == 503 and "r" in ready.json()["routes_without_upstream"]
    finally:
        gw.stop()


def test_retry_budget_caps_extra_load():
    dead = free_port()
    candidate = AppServer(EchoApp())
    # never ejected: every request tries the dead control first and wants a retry
    gw = GatewayServer(config(dead, candidate.port, ", outlier: {consecutive_failures: 1000000}",
                              budget=0.2))
    try:
        with httpx.Client() as c:
            codes = [c.get(f"{gw.url}/x").status_code for _ in range(200)]
        retried = codes.count(200)
        assert codes.count(502) == 200 - retried
        assert 20 <= retried <= 0.2 * 200 + 3 * 3, retried  # ratio x requests + the floor
    finally:
        gw.stop()
        candidate.stop()


def test_active_health_check_takes_a_failing_upstream_out_and_back():
    from tests.servers import _send

    class Toggle(EchoApp):
        healthy = True

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http" and scope["path"] == "/health":
                await _send(send, 200 if self.healthy else 503, b"{}")
                return
            await super().__call__(scope, receive, send)

    flaky, other = Toggle(), AppServer(EchoApp())
    server = AppServer(flaky)
    cfg = config(server.port, other.port).replace(
        'timeout: {connect: 0.5}}', 'timeout: {connect: 0.5}, health_check: {path: /health, '
        'interval: 0.1s, healthy_threshold: 2, unhealthy_threshold: 2}}')
    gw = GatewayServer(cfg)
    try:
        assert httpx.get(f"{gw.url}/x").headers["x-driftgate-variant"] == "control"
        flaky.healthy = False
        time.sleep(0.6)
        r = httpx.get(f"{gw.url}/x")
        assert r.headers["x-driftgate-variant"] == "candidate"
        assert r.headers["x-driftgate-fallback"] == "true"
        flaky.healthy = True
        time.sleep(0.6)
        assert httpx.get(f"{gw.url}/x").headers["x-driftgate-variant"] == "control"
        assert 'driftgate_upstream_healthy{upstream="a"} 1.0' in httpx.get(
            f"{gw.admin_url}/metrics").text
    finally:
        gw.stop()
        server.stop()
        other.stop()


class AnswerOnceThenHangUp:
    """A model server that answers the first request of each connection (keep-alive), and on
    the next one of the same connection reads it whole, then closes without answering: the
    request reached it (it may have acted on it), but nothing came back."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.port = free_port()
        self.loop = LoopThread()
        self.server = self.loop.run(asyncio.start_server(self._serve, "127.0.0.1", self.port))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for answer in (True, False):
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                self.received.append(head.split(b" ", 1)[0])
                if answer:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        except asyncio.IncompleteReadError:  # a readiness probe: connect, then close
            pass
        writer.close()

    def stop(self) -> None:
        self.server.close()
        self.loop.close()


def test_a_request_the_upstream_may_have_acted_on_is_never_sent_twice():
    """A keep-alive connection that the model closed after reading a POST: the POST may have
    run, so it is answered 502, never re-sent to the fallback (3 of 6 POSTs once ran twice).
    A GET in the same spot is retried, being idempotent."""
    echo = EchoApp()
    primary, backup = AnswerOnceThenHangUp(), AppServer(echo)
    # never ejected (consecutive_failures 100): every request meets the model as it is
    gw = GatewayServer(config(primary.port, backup.port, budget=1.0,
                              outlier=", outlier: {consecutive_failures: 100}"))
    try:
        with httpx.Client(timeout=5) as c:
            posts = [c.post(f"{gw.url}/order", content=b'{"n": 1}').status_code for _ in range(6)]
            gets = [c.get(f"{gw.url}/status").status_code for _ in range(4)]
        assert posts == [200, 502] * 3, posts
        assert primary.received.count(b"POST") == 6
        assert echo.requests == 0  # no POST reached the fallback: none ran twice
        assert gets == [200] * 4
    finally:
        gw.stop()
        primary.stop()
        backup.stop()
