"""A real Alertmanager receives the gateway's alert through API v2 and routes it to a webhook."""

import subprocess
import time

import httpx
import numpy as np
import pytest

from gateway.tools.demo import write_baseline
from gateway.tools.demo_model import build_model_app, synthetic_rows
from tests.peers import require_binary
from tests.servers import AppServer, GatewayServer, Recorder, churn_monitor_yaml, free_port, wait_port

pytestmark = pytest.mark.peers


@pytest.mark.slow
def test_drift_alert_reaches_a_webhook_through_alertmanager(tmp_path):
    binary = require_binary("prometheus-alertmanager")
    hook = Recorder()
    receiver = AppServer(hook)
    am_port = free_port()
    (tmp_path / "am.yml").write_text(f"""
route:
  receiver: hook
  group_by: [alertname, route, feature]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs: [{{url: "{receiver.url}/am", send_resolved: true}}]
""")
    am = subprocess.Popen([binary, f"--config.file={tmp_path / 'am.yml'}",
                           f"--storage.path={tmp_path / 'am-data'}",
                           f"--web.listen-address=127.0.0.1:{am_port}",
                           f"--web.external-url=http://127.0.0.1:{am_port}/",
                           "--cluster.listen-address="],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    model = AppServer(build_model_app("churn"))
    write_baseline(tmp_path / "train.csv", 5000, seed=3)
    cfg = churn_monitor_yaml(model.url, tmp_path / "state", f"""
  evaluate_every: 1s
  sinks:
    am: {{type: alertmanager, url: "http://127.0.0.1:{am_port}"}}""")
    gw = GatewayServer(cfg, config_dir=tmp_path)
    try:
        wait_port(am_port, 30)
        rng = np.random.default_rng(4)
        with httpx.Client() as c:
            for _ in range(200):  # usage_gb doubled: drift on one feature
                rows = synthetic_rows(4, rng)
                for r in rows:
                    r[3] *= 2
                c.post(f"{gw.url}/v1/models/churn:predict", json={"instances": rows}).raise_for_status()
        deadline = time.monotonic() + 30
        alert = None
        while time.monotonic() < deadline and alert is None:
            for _, body in hook.received:
                for a in body.get("alerts", []):
                    labels = a["labels"]
                    if (labels.get("feature"), labels.get("alertname"), a["status"]) == (
                            "usage_gb", "feature_drift", "firing"):
                        alert = a
            time.sleep(0.2)
        assert alert is not None, f"nothing routed by Alertmanager: {hook.received}"
        assert alert["labels"]["route"] == "churn" and alert["labels"]["variant"] == "churn-v1"
        assert "usage_gb" in alert["annotations"]["summary"]
        assert alert["generatorURL"].endswith("/monitoring")
        api = httpx.get(f"http://127.0.0.1:{am_port}/api/v2/alerts").json()
        assert any(a["labels"]["feature"] == "usage_gb" for a in api)
    finally:
        gw.stop()
        model.stop()
        am.terminate()
        am.wait(10)
        receiver.stop()
