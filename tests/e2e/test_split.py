"""Traffic splits through the real gateway: weights, sticky keys, overrides, variant header."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import AppServer, EchoApp, GatewayServer, free_port


@pytest.fixture(scope="module")
def split_gw():
    control, candidate = AppServer(EchoApp()), AppServer(EchoApp())
    cfg = f"""
server: {{port: {free_port()}}}
admin: {{port: {free_port()}}}
logging: {{format: json, access_log: {{enabled: false}}}}
upstreams:
  iris-v1: {{url: "{control.url}"}}
  iris-v2: {{url: "{candidate.url}"}}
routes:
  - name: iris
    match: {{path_prefix: /v2/models/iris}}
    variants:
      - {{name: control, upstream: iris-v1, weight: 90}}
      - {{name: candidate, upstream: iris-v2, weight: 10}}
    sticky: {{header: X-User-Id}}
  - name: iris-cookie
    match: {{path_prefix: /cookie}}
    variants:
      - {{name: a, upstream: iris-v1, weight: 50}}
      - {{name: b, upstream: iris-v2, weight: 50}}
    sticky: {{cookie: uid}}
"""
    gw = GatewayServer(cfg)
    gw.hosts = {"control": control.url.removeprefix("http://"),
                "candidate": candidate.url.removeprefix("http://")}
    yield gw
    gw.stop()
    control.stop()
    candidate.stop()


def test_weighted_split_answers_from_the_named_variant(split_gw):
    counts = {"control": 0, "candidate": 0}
    with httpx.Client() as c:
        for _ in range(2000):
            r = c.post(f"{split_gw.url}/v2/models/iris/infer", content=b"{}")
            variant = r.headers["x-driftgate-variant"]
            counts[variant] += 1
            host = dict(r.json()["headers"])["host"]
            assert host == split_gw.hosts[variant], "the variant header names who answered"
    assert abs(counts["candidate"] / 2000 - 0.10) < 0.03, counts
    text = httpx.get(f"{split_gw.admin_url}/metrics").text
    by_variant = {s.labels["variant"]: s.value for f in text_string_to_metric_families(text)
                  for s in f.samples if s.name == "driftgate_requests_total"
                  and s.labels["route"] == "iris"}
    assert by_variant == {"control": counts["control"], "candidate": counts["candidate"]}


def test_sticky_header_and_cookie_keep_a_user_on_one_variant(split_gw):
    with httpx.Client() as c:
        seen = {}
        for user in range(200):
            variants = {c.post(f"{split_gw.url}/v2/models/iris/infer", content=b"{}",
                               headers={"x-user-id": f"u{user}"}).headers["x-driftgate-variant"]
                        for _ in range(3)}
            assert len(variants) == 1
            seen[user] = variants.pop()
        assert 5 <= list(seen.values()).count("candidate") <= 40
        for user in range(50):
            got = {c.get(f"{split_gw.url}/cookie", headers={"cookie": f"theme=dark; uid=u{user}"})
                   .headers["x-driftgate-variant"] for _ in range(3)}
            assert len(got) == 1


def test_override_header_forces_a_variant_or_gets_400(split_gw):
    with httpx.Client() as c:
        for _ in range(20):
            r = c.post(f"{split_gw.url}/v2/models/iris/infer", content=b"{}",
                       headers={"x-driftgate-variant": "candidate", "x-user-id": "u1"})
            assert r.headers["x-driftgate-variant"] == "candidate"
        r = c.post(f"{split_gw.url}/v2/models/iris/infer", content=b"{}",
                   headers={"x-driftgate-variant": "nope"})
        assert r.status_code == 400
        assert r.json()["variants"] == ["control", "candidate"]
        assert r.json()["request_id"] == r.headers["x-request-id"]
