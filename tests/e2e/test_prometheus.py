"""A real Prometheus server scrapes the gateway; its HTTP API sees the right request count."""

import subprocess
import time

import httpx
import pytest

from tests.peers import require_binary
from tests.servers import GatewayServer, free_port, gateway_yaml, wait_port

pytestmark = pytest.mark.peers


@pytest.mark.slow
def test_prometheus_scrapes_request_count(echo, tmp_path):
    prometheus = require_binary("prometheus")
    server = GatewayServer(gateway_yaml({"echo": echo.url}, [("model", "/v1/models/m", "echo")]))
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: driftgate
    static_configs: [{{targets: ["127.0.0.1:{server.gateway.admin_port}"]}}]
""")
    proc = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}",
                             f"--web.external-url=http://127.0.0.1:{port}/"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with httpx.Client() as c:
            for _ in range(11):
                assert c.post(f"{server.url}/v1/models/m:predict", content=b"{}").status_code == 200
        wait_port(port, 30)
        query = 'sum(driftgate_requests_total{job="driftgate",route="model",code="200"})'
        deadline = time.monotonic() + 30
        result = None
        while time.monotonic() < deadline:
            r = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query})
            data = r.json()["data"]["result"]
            if data:
                result = float(data[0]["value"][1])
                break
            time.sleep(0.5)
        assert result == 11.0
        targets = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets").json()["data"]["activeTargets"]
        assert targets[0]["health"] == "up"
    finally:
        proc.terminate()
        proc.wait(10)
        server.stop()
