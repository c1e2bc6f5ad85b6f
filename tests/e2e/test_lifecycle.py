"""The gateway as a process: start, access log, readiness, SIGTERM drain."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from tests.servers import ROOT, GatewayServer, free_port, gateway_yaml, wait_port


def start_gateway(tmp_path, cfg_text: str) -> tuple[subprocess.Popen, dict]:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(cfg_text)
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(cfg)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    loaded = json.loads(proc.stdout.readline())
    assert loaded["event"] == "config loaded" and loaded["routes"] >= 1
    line = proc.stdout.readline()
    started = json.loads(line)
    assert started["event"] == "gateway started", line
    return proc, started


def test_sigterm_lets_in_flight_request_finish_then_exits_zero(echo, tmp_path):
    proc, started = start_gateway(tmp_path, gateway_yaml({"echo": echo.url}, [("r", "/", "echo")]))
    url = started["url"]
    result = {}

    def slow_call():
        result["response"] = httpx.get(f"{url}/slow?delay=1.5", timeout=10)

    t = threading.Thread(target=slow_call)
    t.start()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # no new connections once draining
    try:
        httpx.get(f"{url}/x", timeout=1)
        refused = False
    except httpx.TransportError:
        refused = True
    t.join(10)
    out, err = proc.communicate(timeout=15)
    assert result["response"].status_code == 200, "the in-flight request was cut off"
    assert refused, "gateway still accepted connections while draining"
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "shutdown requested" in names and names[-1] == "gateway stopped"
    access = [e for e in events if e["event"] == "access"]
    assert len(access) == 1
    line = access[0]
    assert line["path"] == "/slow" and line["status"] == 200 and line["route"] == "r"
    assert line["duration_ms"] >= 1400 and line["request_id"]
    for key in ("variant", "upstream", "method", "upstream_ms", "request_bytes", "response_bytes"):
        assert key in line


def test_access_log_sampling_off_writes_no_lines(echo, tmp_path):
    cfg = gateway_yaml({"echo": echo.url}, [("r", "/", "echo")]).replace(
        "logging: {format: json}", "logging: {format: json, access_log: {sample_rate: 0.0}}")
    proc, started = start_gateway(tmp_path, cfg)
    for _ in range(5):
        httpx.get(f"{started['url']}/x")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)
    assert '"access"' not in out
    assert proc.returncode == 0


def test_healthz_and_readyz_follow_upstream_reachability(echo):
    from tests.servers import AppServer, EchoApp

    port = free_port()
    cfg = gateway_yaml({"echo": echo.url, "later": f"http://127.0.0.1:{port}"},
                       [("up", "/up", "echo"), ("down", "/down", "later")])
    cfg = cfg.replace("admin: {port:", "admin: {readiness_interval: 0.2, port:")
    server = GatewayServer(cfg)
    try:
        assert httpx.get(f"{server.admin_url}/healthz").json()["status"] == "alive"
        r = httpx.get(f"{server.admin_url}/readyz")
        assert r.status_code == 503
        assert r.json()["routes_without_upstream"] == {"down": "later"}
        late = AppServer(EchoApp(), port=port)
        try:
            wait_port(port)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                r = httpx.get(f"{server.admin_url}/readyz")
                if r.status_code == 200:
                    break
                time.sleep(0.1)
            assert r.status_code == 200, r.text
            assert sorted(r.json()["routes"]) == ["down", "up"]
        finally:
            late.stop()
    finally:
        server.stop()


def _monitored_config(tmp_path, upstream_url: str, admin: int) -> str:
    return f"""
server: {{port: {free_port()}}}
admin: {{port: {admin}}}
logging: {{format: json, access_log: {{enabled: false}}}}
state_dir: {tmp_path / "state"}
alerts: {{evaluate_every: 0.5s}}
upstreams:
  echo: {{url: "{upstream_url}"}}
routes:
  - {{name: r, match: {{path_prefix: /}}, upstream: echo, protocol: json, monitor: {{learn: {{rows: 100}}}}}}
"""


def _monitor_up(admin: int, timeout: float = 60) -> dict:
    wait_port(admin, timeout=timeout)
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = httpx.get(f"http://127.0.0.1:{admin}/monitoring").json()
        if body["monitor_process"]["alive"] and "routes" in body:
            break
        time.sleep(0.2)
    return body


def test_a_stats_py_in_the_working_directory_shadows_nothing(echo, tmp_path):
    """Started from a folder holding a `stats.py`, both processes still run the project's own
    packages: the proxy never imports stats/, the monitor child starts with -P."""
    (tmp_path / "stats.py").write_text("raise SystemExit('the working directory was imported')\n")
    admin = free_port()
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(_monitored_config(tmp_path, echo.url, admin))
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(cfg)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        body = _monitor_up(admin)
        assert body["monitor_process"]["alive"] and "r" in body["routes"], body
    finally:
        proc.terminate()
        proc.wait(20)


def test_sigterm_to_the_whole_process_group_still_saves_monitor_state(echo, tmp_path):
    """A terminal's Ctrl-C or systemd's default stop signals every process of the group: the
    monitor child leaves its life to the proxy process, which stops it after saving."""
    admin = free_port()
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(_monitored_config(tmp_path, echo.url, admin))
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(cfg)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        assert _monitor_up(admin)["monitor_process"]["alive"]
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, out
    assert "monitor process exited" not in out, out
    assert (tmp_path / "state" / "r.experiment.npz").is_file()
