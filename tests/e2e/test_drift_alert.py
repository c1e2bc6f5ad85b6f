"""Monitoring end to end: real model, real gateway, real webhook; drift alert within 30 s."""

import threading
import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.tools.demo import write_baseline
from gateway.tools.demo_model import FEATURES, build_model_app, synthetic_rows
from tests.servers import AppServer, GatewayServer, Recorder, churn_monitor_yaml


class Traffic:
    """~100 req/s of KServe V1 requests (4 rows each); `scale` multiplies monthly_charges."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.scale = 1.0
        self.sent = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rng = np.random.default_rng(7)
        with httpx.Client(base_url=self.url, timeout=5) as c:
            while not self._stop.is_set():
                started = time.monotonic()
                rows = synthetic_rows(4, rng)
                for r in rows:
                    r[1] = round(r[1] * self.scale, 2)
                try:
                    r = c.post("/v1/models/churn:predict", json={"instances": rows})
                    self.sent += 1
                    self.errors += r.status_code != 200
                except httpx.HTTPError:
                    self.errors += 1
                self._stop.wait(max(0.0, 0.01 - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def stack(tmp_path):
    model = AppServer(build_model_app("churn"))
    hook = Recorder()
    receiver = AppServer(hook)
    write_baseline(tmp_path / "train.csv", seed=123)
    cfg = churn_monitor_yaml(model.url, tmp_path / "state", f"""
  sinks:
    hook: {{type: webhook, url: "{receiver.url}/hook"}}""")
    gw = GatewayServer(cfg, config_dir=tmp_path)
    yield gw, hook
    gw.stop()
    receiver.stop()
    model.stop()


@pytest.mark.slow
def test_six_percent_shift_alerts_within_30s_then_resolves(stack):
    gw, hook = stack
    traffic = Traffic(gw.url)
    try:
        time.sleep(20)  # unshifted traffic: nothing may fire
        quiet = [b for _, b in hook.received]
        assert quiet == [], f"alerts on unshifted traffic: {quiet}"
        shift_at = time.time()
        traffic.scale = 1.06
        deadline = shift_at + 30
        alert = None
        while time.time() < deadline and alert is None:
            for at, body in hook.received:
                if body["status"] == "firing" and body["feature"] == "monthly_charges":
                    alert = (at, body)
            time.sleep(0.2)
        assert alert is not None, f"no drift alert within 30 s: {hook.received}"
        delay = alert[0] - shift_at
        body = alert[1]
        print(f"drift alert {delay:.1f} s after the shift")
        assert body["alert"] == "feature_drift" and body["route"] == "churn"
        assert body["variant"] == "churn-v1" and body["severity"] == "warning"
        # charges x 1.06 moves the mean and the spread alike: any key statistic may be named
        assert body["metric"] in ("mean_change", "std_change", "median_change", "p95_change",
                                  "wasserstein")
        for key in ("value", "threshold", "window", "started_at", "summary"):
            assert body[key] is not None
        text = httpx.get(f"{gw.admin_url}/metrics").text
        gauges = {(s.labels["feature"], s.labels["metric"], s.labels["window"]): s.value
                  for f in text_string_to_metric_families(text) for s in f.samples
                  if s.name == "driftgate_feature_drift"}
        assert gauges[("monthly_charges", "drifted", "short")] == 1.0
        assert gauges[("tenure_months", "drifted", "short")] == 0.0
        assert gauges[("monthly_charges", "mean_change", "short")] > 0.03
        assert "driftgate_monitor_rows_total" in text and "driftgate_feature_missing_ratio" in text
        other = {b["feature"] for _, b in hook.received if b["status"] == "firing"}
        assert other <= {"monthly_charges"}, f"unshifted features alerted: {other}"
        traffic.scale = 1.0
        end = time.time() + 120  # clear for keep_firing_for (60 s) after the short window
        resolved = None
        while time.time() < end and resolved is None:
            resolved = next((b for _, b in hook.received if b["status"] == "resolved"
                             and b["feature"] == "monthly_charges"), None)
            time.sleep(0.5)
        assert resolved is not None, "the alert did not resolve after the shift ended"
        assert abs(resolved["value"]) <= resolved["threshold"], resolved  # the value that cleared it
        firsts = [b["started_at"] for _, b in hook.received if b["status"] == "firing"
                  and b["feature"] == "monthly_charges" and not b["repeat"]]
        assert len(firsts) == 1, f"fired more than once for one shift: {hook.received}"
        assert traffic.errors == 0
        snapshot = httpx.get(f"{gw.admin_url}/monitoring").json()
        view = snapshot["routes"]["churn"]["variants"]["churn-v1"]["inputs"]
        assert view["window_rows"] > 1000
        names = [f["feature"] for f in view["features"]]
        assert names == list(FEATURES)
        assert len(view["histograms"]["plan"]["reference"]) == 4  # three plans + other
    finally:
        traffic.stop()
