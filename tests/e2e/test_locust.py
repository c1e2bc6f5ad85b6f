"""The locustfile drives a real gateway headless: every scenario sends, nothing fails."""

import json
import subprocess
import sys

import httpx

from gateway.tools.demo_model import build_model_app
from tests.servers import ROOT, AppServer, GatewayServer, free_port


def test_locustfile_runs_every_scenario_against_the_gateway(tmp_path):
    v1, v2 = AppServer(build_model_app("churn")), AppServer(build_model_app("churn", version="v2"))
    gw = GatewayServer(f"""
server: {{port: {free_port()}}}
admin: {{port: {free_port()}}}
logging: {{format: json, access_log: {{enabled: false}}}}
state_dir: {tmp_path / "state"}
upstreams:
  v1: {{url: "{v1.url}"}}
  v2: {{url: "{v2.url}"}}
routes:
  - name: v2-protocol
    match: {{path_prefix: /v2/models/churn}}
    variants: [{{name: control, upstream: v1, weight: 90}}, {{name: candidate, upstream: v2, weight: 10}}]
    sticky: {{header: X-User-Id}}
  - {{name: v1-protocol, match: {{path_prefix: /v1/models/churn}}, upstream: v1,
     protocol: kserve-v1, monitor: {{learn: {{rows: 100}}}}}}
  - {{name: mlflow, match: {{path: /invocations}}, upstream: v2}}
""")
    try:
        out = tmp_path / "run"
        done = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "benchmarks" / "locustfile.py"),
             "--host", gw.url, "--headless", "-u", "5", "-r", "5", "-t", "6s", "--only-summary",
             "--json-file", str(out), "--drift-at", "3"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        stats = {s["name"]: s for s in json.loads(out.with_suffix(".json").read_text())}
        for name in ("v1", "v2", "mlflow", "v1 (drift)", "v2 (drift)", "mlflow (drift)", "feedback"):
            assert stats[name]["num_requests"] > 5, (name, stats.keys())
            assert stats[name]["num_failures"] == 0, name
        # labels of the monitored V1 route were joined to their predictions
        text = httpx.get(f"{gw.admin_url}/metrics").text
        assert "driftgate_feedback_labels_total" in text or "driftgate_feedback_total" in text
    finally:
        gw.stop()
        v1.stop()
        v2.stop()
