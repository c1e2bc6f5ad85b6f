"""Shadow traffic: copies reach the shadow, a slow shadow adds no latency, the cap drops."""

import asyncio
import statistics
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import AppServer, EchoApp, GatewayServer, free_port, read_body


class SlowRecorder:
    """Takes `delay` seconds per request and keeps the bodies it got."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        await asyncio.sleep(self.delay)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})


def gateway(primary: str, shadow: str, cap: int = 100) -> GatewayServer:
    return GatewayServer(f"""
server: {{port: {free_port()}}}
admin: {{port: {free_port()}}}
logging: {{format: json, access_log: {{enabled: false}}}}
upstreams:
  live: {{url: "{primary}"}}
  mirror: {{url: "{shadow}"}}
routes:
  - name: r
    match: {{path_prefix: /}}
    upstream: live
    shadow: [{{upstream: mirror, percent: 100}}]
    shadow_max_in_flight: {cap}
""")


def test_slow_shadow_gets_copies_and_adds_no_latency():
    primary, slow = AppServer(EchoApp()), SlowRecorder(0.5)
    shadow = AppServer(slow)
    gw = gateway(primary.url, shadow.url)
    try:
        with httpx.Client() as c:
            latencies = []
            for i in range(30):
                t = time.perf_counter()
                r = c.post(f"{gw.url}/v1/models/m:predict", content=f'{{"i": {i}}}'.encode())
                latencies.append(time.perf_counter() - t)
                assert r.status_code == 200 and r.json()["body"] == f'{{"i": {i}}}'
        p50 = statistics.median(latencies)
        print(f"p50 with a 500 ms shadow: {p50 * 1000:.1f} ms")
        assert p50 < 0.1, "the shadow's 500 ms leaked into the live response"
        deadline = time.monotonic() + 5
        while len(slow.bodies) < 30 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(slow.bodies) == sorted(f'{{"i": {i}}}'.encode() for i in range(30))
        time.sleep(0.2)
        text = httpx.get(f"{gw.admin_url}/metrics").text
        counts = {(s.labels["upstream"], s.labels["shadow"]): s.value
                  for f in text_string_to_metric_families(text) for s in f.samples
                  if s.name == "driftgate_requests_total"}
        assert counts == {("live", "false"): 30, ("mirror", "true"): 30}
    finally:
        gw.stop()
        shadow.stop()
        primary.stop()


def test_shadow_cap_drops_and_counts():
    primary, slow = AppServer(EchoApp()), SlowRecorder(1.0)
    shadow = AppServer(slow)
    gw = gateway(primary.url, shadow.url, cap=2)
    try:
        with httpx.Client() as c:
            for _ in range(10):
                assert c.get(f"{gw.url}/x").status_code == 200
        text = httpx.get(f"{gw.admin_url}/metrics").text
        assert 'driftgate_shadow_dropped_total{route="r"} 8.0' in text
    finally:
        gw.stop()
        shadow.stop()
        primary.stop()
