"""A real Alertmanager receives the gateway's alert through API v2 and routes it to a webhook."""

import subprocess
import threading
import time

import httpx
import numpy as np
import pytest

from gateway.tools.demo import write_baseline
from gateway.tools.demo_model import build_model_app, synthetic_rows
from tests.peers import require_binary
from tests.servers import AppServer, GatewayServer, Recorder, churn_monitor_yaml, free_port, wait_port

pytestmark = pytest.mark.peers


def start_alertmanager(binary: str, tmp_path, port: int, receiver_url: str,
                       global_block: str) -> subprocess.Popen:
    """A real Alertmanager routing every alert, at once, to the receiver (webhook, resolved
    ones too; repeats an hour apart), on 127.0.0.1:port."""
    (tmp_path / "am.yml").write_text(f"""{global_block}
route:
  receiver: hook
  group_by: [alertname, route, variant, feature]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs: [{{url: "{receiver_url}/am", send_resolved: true}}]
""")
    return subprocess.Popen([binary, f"--config.file={tmp_path / 'am.yml'}",
                             f"--storage.path={tmp_path / 'am-data'}",
                             f"--web.listen-address=127.0.0.1:{port}",
                             f"--web.external-url=http://127.0.0.1:{port}/",
                             "--cluster.listen-address="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_drift_alert_reaches_a_webhook_through_alertmanager(tmp_path):
    binary = require_binary("prometheus-alertmanager")
    hook = Recorder()
    receiver = AppServer(hook)
    am_port = free_port()
    am = start_alertmanager(binary, tmp_path, am_port, receiver.url, "")
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
        assert alert["generatorURL"].endswith("/monitoring?route=churn&variant=churn-v1&feature=usage_gb")
        assert "metric" not in alert["labels"] and alert["annotations"]["metric"]
        view = httpx.get(alert["generatorURL"]).json()  # the gateway's view of that feature
        [feature] = view["routes"]["churn"]["variants"]["churn-v1"]["inputs"]["features"]
        assert feature["feature"] == "usage_gb"
        api = httpx.get(f"http://127.0.0.1:{am_port}/api/v2/alerts").json()
        assert any(a["labels"]["feature"] == "usage_gb" for a in api)
    finally:
        gw.stop()
        model.stop()
        am.terminate()
        am.wait(10)
        receiver.stop()


class Traffic:
    """Requests to the churn route from a thread, ~40 req/s of 4 rows; `scale` multiplies
    usage_gb (1.0: clean)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.scale = 1.0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rng = np.random.default_rng(11)
        with httpx.Client(timeout=10) as c:
            while not self._stop.is_set():
                rows = synthetic_rows(4, rng)
                for r in rows:
                    r[3] *= self.scale
                try:
                    c.post(f"{self.url}/v1/models/churn:predict", json={"instances": rows})
                except httpx.HTTPError:
                    self.failures += 1
                time.sleep(0.025)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _am_notifications(hook: Recorder, feature: str) -> list[tuple[float, str]]:
    """(arrival, status) of every Alertmanager notification naming the feature's drift."""
    out = []
    for at, body in hook.received:
        for a in body.get("alerts", []):
            if (a["labels"].get("feature"), a["labels"].get("alertname")) == (feature, "feature_drift"):
                out.append((at, a["status"]))
    return out


@pytest.mark.slow
def test_persistent_drift_pages_once_and_resolves_once(tmp_path):
    """Drift held for more than twice Alertmanager's resolve_timeout (1m here): its receiver
    gets exactly one firing notification and no resolve; when the drift stops, one resolve.
    The direct webhook sees the same: one firing per alert, no resolve while it lasts."""
    binary = require_binary("prometheus-alertmanager")
    hook, direct = Recorder(), Recorder()
    receiver, direct_server = AppServer(hook), AppServer(direct)
    am_port = free_port()
    am = start_alertmanager(binary, tmp_path, am_port, receiver.url,
                            "global: {resolve_timeout: 1m}")
    model = AppServer(build_model_app("churn"))
    write_baseline(tmp_path / "train.csv", 5000, seed=3)
    # default rules and cadence; a 30 s window so the drift leaves it soon after it stops
    cfg = churn_monitor_yaml(model.url, tmp_path / "state", f"""
  sinks:
    am: {{type: alertmanager, url: "http://127.0.0.1:{am_port}"}}
    hook: {{type: webhook, url: "{direct_server.url}/hook"}}""", monitor="window: 30s")
    cfg = cfg.replace("admin: {port: ", "admin: {token: s3cret, port: ")
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(cfg)
    gw = GatewayServer(cfg, config_dir=tmp_path, config_path=config_file)
    traffic = None
    try:
        wait_port(am_port, 30)
        traffic = Traffic(gw.url)
        time.sleep(15)
        assert _am_notifications(hook, "usage_gb") == [], "alerted on clean traffic"
        traffic.scale = 1.2  # a 20% shift of one feature, held
        shift = time.time()
        deadline = shift + 60
        while time.time() < deadline and not _am_notifications(hook, "usage_gb"):
            time.sleep(0.5)
        assert _am_notifications(hook, "usage_gb"), "no drift alert within 60 s"
        # a reload that changes the alerts block starts a new monitor process: it takes over
        # the firing alerts from state_dir and pages nobody again
        config_file.write_text(cfg.replace('/hook"}', '/hook", timeout: 4}'))
        reloaded = httpx.post(f"{gw.admin_url}/admin/reload",
                              headers={"authorization": "Bearer s3cret"}).json()
        assert reloaded["reloaded"], reloaded
        time.sleep(max(0.0, shift + 150 - time.time()))  # held for 2.5 x resolve_timeout
        during = _am_notifications(hook, "usage_gb")
        assert [s for _, s in during] == ["firing"], during
        webhook = [b for _, b in direct.received]
        assert not [b for b in webhook if b["status"] == "resolved"], webhook
        firsts = [(b["alert"], b["feature"]) for b in webhook if not b["repeat"]]
        assert len(firsts) == len(set(firsts)), f"an alert fired twice: {firsts}"
        assert ("feature_drift", "usage_gb") in firsts

        traffic.scale = 1.0
        ended = time.time()
        deadline = ended + 150
        while time.time() < deadline and len(_am_notifications(hook, "usage_gb")) < 2:
            time.sleep(0.5)
        after = _am_notifications(hook, "usage_gb")
        assert [s for _, s in after] == ["firing", "resolved"], after
        time.sleep(5)  # nothing more follows
        assert len(_am_notifications(hook, "usage_gb")) == 2
        resolved = [b for _, b in direct.received if b["status"] == "resolved"
                    and b["feature"] == "usage_gb" and b["alert"] == "feature_drift"]
        assert len(resolved) == 1 and resolved[0]["value"] <= resolved[0]["threshold"]
        assert traffic.failures == 0
    finally:
        if traffic is not None:
            traffic.stop()
        gw.stop()
        model.stop()
        am.terminate()
        am.wait(10)
        receiver.stop()
        direct_server.stop()
