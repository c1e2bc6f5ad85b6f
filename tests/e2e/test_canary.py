"""Canaries end to end with the demo model: a healthy one walks to 100%, an erroring one
(`--error-rate`) is rolled back to 0 within one evaluation interval of having enough traffic."""

import time

import httpx
import numpy as np
import pytest

from gateway.tools.demo_model import build_model_app, synthetic_rows
from tests.servers import AppServer, GatewayServer, free_port


def gateway(control: str, candidate: str, steps: str, interval: str) -> GatewayServer:
    return GatewayServer(f"""
server: {{port: {free_port()}}}
admin: {{port: {free_port()}}}
logging: {{format: json, access_log: {{enabled: false}}}}
upstreams:
  v1: {{url: "{control}"}}
  v2: {{url: "{candidate}"}}
routes:
  - name: churn
    match: {{path_prefix: /v1/models/churn}}
    variants:
      - {{name: control, upstream: v1, weight: 100}}
      - {{name: candidate, upstream: v2, weight: 0}}
    canary:
      variant: candidate
      steps: {steps}
      step_interval: {interval}
      slo: {{max_error_rate: 0.05, max_p99_latency_ms: 500, min_requests: 30}}
      evaluate_every: 0.2s
""")


def drive(gw, seconds: float) -> list[tuple[float, str, int]]:
    rng = np.random.default_rng(0)
    out = []
    end = time.monotonic() + seconds
    with httpx.Client() as c:
        while time.monotonic() < end:
            r = c.post(f"{gw.url}/v1/models/churn:predict", json={"instances": synthetic_rows(2, rng)})
            out.append((time.monotonic(), r.headers["x-driftgate-variant"], r.status_code))
    return out


def canary(gw) -> dict:
    return httpx.get(f"{gw.admin_url}/admin/routes").json()["routes"][0]["canary"]


@pytest.mark.slow
def test_healthy_candidate_walks_to_100_percent():
    v1, v2 = AppServer(build_model_app("churn")), AppServer(build_model_app("churn", version="v2"))
    gw = gateway(v1.url, v2.url, "[20, 50, 100]", "1s")
    try:
        assert canary(gw)["percent"] == 20
        deadline = time.monotonic() + 20  # three steps of >= 1 s and >= 30 candidate requests
        while time.monotonic() < deadline and canary(gw)["state"] != "done":
            drive(gw, 1)
        state = canary(gw)
        assert state["state"] == "done" and state["percent"] == 100, state
        tail = drive(gw, 1)
        assert all(v == "candidate" for _, v, _ in tail)
    finally:
        gw.stop()
        v1.stop()
        v2.stop()


@pytest.mark.slow
def test_erroring_candidate_rolls_back_to_zero_and_stays():
    v1 = AppServer(build_model_app("churn"))
    v2 = AppServer(build_model_app("churn", error_rate=0.5, seed=1))
    gw = gateway(v1.url, v2.url, "[50, 100]", "60s")
    try:
        seen = drive(gw, 4)
        state = canary(gw)
        assert state["state"] == "rolled_back" and state["percent"] == 0, state
        assert "error rate" in state["reason"]
        candidate_times = [t for t, v, _ in seen if v == "candidate"]
        assert candidate_times, "the candidate never served"
        # once rolled back, nothing reaches the candidate again
        last = candidate_times[-1]
        assert seen[-1][0] - last > 2.0, "the candidate still got traffic near the end"
        assert all(v == "control" and code == 200 for t, v, code in seen if t > last)
        text = httpx.get(f"{gw.admin_url}/metrics").text
        assert 'driftgate_canary_rollbacks_total{route="churn"} 1.0' in text
        assert 'driftgate_canary_percent{route="churn",variant="candidate"} 0.0' in text
    finally:
        gw.stop()
        v1.stop()
        v2.stop()
