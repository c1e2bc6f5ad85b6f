"""The monitor behind a real gateway: bad payloads pass untouched and are counted; learned
references and windows survive a restart; the baseline CLI."""

import os
import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.tools.demo import write_baseline
from gateway.tools.demo_model import FEATURES, build_model_app, synthetic_rows
from tests.servers import AppServer, EchoApp, GatewayServer, free_port, run_cli


def samples(admin_url: str, name: str) -> list:
    text = httpx.get(f"{admin_url}/metrics").text
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def monitored(upstream_url: str, tmp_path, protocol: str = "v2", monitor: str = "{learn: {rows: 200}}",
              prefix: str = "/") -> str:
    return f"""
server: {{port: {free_port()}}}
admin: {{port: {free_port()}}}
logging: {{format: json, access_log: {{enabled: false}}}}
state_dir: {tmp_path / "state"}
monitoring: {{persist_every: 1s}}
alerts: {{evaluate_every: 0.5s}}
upstreams:
  up: {{url: "{upstream_url}"}}
routes:
  - name: r
    match: {{path_prefix: "{prefix}"}}
    upstream: up
    protocol: {protocol}
    monitor: {monitor}
"""


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def test_bad_payloads_pass_byte_identical_and_are_counted(tmp_path):
    echo = AppServer(EchoApp())
    gw = GatewayServer(monitored(echo.url, tmp_path), config_dir=tmp_path)
    try:
        bodies = {
            "not_json": (b'{"inputs": [{"name": "x", "shape": [1', {}),
            "empty_body": (b"", {}),
            "binary_extension": (b'{"inputs":[]}' + os.urandom(64),
                                 {"inference-header-content-length": "13"}),
            "shape_mismatch": (b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", '
                               b'"data": [1.0]}]}', {}),
            "too_large": (b'{"inputs": [{"name": "x", "shape": [1], "data": [' + b"1" * (2 << 20)
                          + b"]}]}", {}),
        }
        with httpx.Client(timeout=30) as c:
            for reason, (body, headers) in bodies.items():
                direct = c.post(f"{echo.url}/binary", content=body,
                                headers={"content-type": "application/json", **headers})
                via = c.post(f"{gw.url}/binary", content=body,
                             headers={"content-type": "application/json", **headers})
                assert via.status_code == direct.status_code == 200
                assert via.content == direct.content == body, reason
        def counted():
            found = {s.labels["reason"]: s.value for s in
                     samples(gw.admin_url, "driftgate_monitor_decode_errors_total")
                     if s.labels["side"] == "inputs"}
            return found if all(found.get(r) for r in bodies) else None
        found = wait_for(counted)
        assert found and all(found[r] >= 1 for r in bodies), found
    finally:
        gw.stop()
        echo.stop()


def test_rejected_requests_are_counted_apart(tmp_path):
    echo = AppServer(EchoApp())
    gw = GatewayServer(monitored(echo.url, tmp_path, "kserve-v1"), config_dir=tmp_path)
    try:
        body = b'{"instances": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]}'
        for _ in range(4):
            assert httpx.post(f"{gw.url}/status/422", content=body).status_code == 422
        rejected = wait_for(lambda: sum(s.value for s in samples(
            gw.admin_url, "driftgate_monitor_rejected_rows_total")) >= 12)
        assert rejected
        rows = samples(gw.admin_url, "driftgate_monitor_rows_total")
        assert sum(s.value for s in rows if s.labels["side"] == "inputs") == 0
    finally:
        gw.stop()
        echo.stop()


@pytest.mark.slow
def test_learned_reference_and_windows_survive_restart(tmp_path):
    model = AppServer(build_model_app("churn"))
    cfg = monitored(model.url, tmp_path, "kserve-v1", "{learn: {rows: 400}, features: "
                    f"{list(FEATURES)}}}".replace("'", ""), prefix="/v1/models/churn")
    rng = np.random.default_rng(0)
    gw = GatewayServer(cfg, config_dir=tmp_path)
    try:
        with httpx.Client() as c:
            for _ in range(150):  # 600 rows: 400 teach the reference, the rest fill the window
                c.post(f"{gw.url}/v1/models/churn:predict",
                       json={"instances": synthetic_rows(4, rng)}).raise_for_status()
        def ready():
            snap = httpx.get(f"{gw.admin_url}/monitoring").json()
            route = snap.get("routes", {}).get("r")
            if route and route["sides"]["inputs"]["reference_ready"] and route["variants"] and \
                    route["variants"]["up"]["inputs"]["window_rows"] >= 200:
                return route
            return None
        before = wait_for(ready)
        assert before["sides"]["inputs"]["reference_rows"] == 400
        rows_before = before["variants"]["up"]["inputs"]["window_rows"]
        assert rows_before == 200
    finally:
        gw.stop()
    saved = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert "r.inputs.npz" in saved and "r.outputs.npz" in saved
    again = GatewayServer(cfg, config_dir=tmp_path)
    try:
        after = wait_for(ready)
        assert after["sides"]["inputs"]["reference_rows"] == 400, "the reference was relearned"
        assert after["variants"]["up"]["inputs"]["window_rows"] == rows_before
    finally:
        again.stop()
        model.stop()


def test_baseline_build_cli_and_npz_baseline(tmp_path):
    src = tmp_path / "train.csv"
    write_baseline(src, 3000, seed=1)
    done = run_cli("baseline", "build", "--from", str(src), "--out", str(tmp_path / "b.npz"))
    assert done.returncode == 0, done.stderr
    assert "3000 rows, 5 features" in done.stdout and "plan (categorical)" in done.stdout
    bad = run_cli("baseline", "build", "--from", str(tmp_path / "missing.csv"), "--out", "x.npz")
    assert bad.returncode == 2 and "cannot build a baseline" in bad.stderr
    model = AppServer(build_model_app("churn"))
    cfg = monitored(model.url, tmp_path, "kserve-v1", "{baseline: b.npz, features: "
                    f"{list(FEATURES)}}}".replace("'", ""), prefix="/v1/models/churn")
    gw = GatewayServer(cfg, config_dir=tmp_path)
    try:
        snap = wait_for(lambda: httpx.get(f"{gw.admin_url}/monitoring").json().get("routes"))
        assert snap["r"]["sides"]["inputs"] == {"reference_ready": True, "reference_rows": 3000,
                                                "learn_rows": 1000}
    finally:
        gw.stop()
        model.stop()


def test_missing_baseline_file_is_a_config_error(tmp_path):
    cfg = monitored("http://127.0.0.1:9", tmp_path, "kserve-v1", "{baseline: nowhere.csv}")
    (tmp_path / "gw.yaml").write_text(cfg)
    done = run_cli("serve", "--config", str(tmp_path / "gw.yaml"), timeout=30)
    assert done.returncode == 2
    assert "routes[0].monitor.baseline" in done.stderr and "nowhere.csv" in done.stderr


def test_corrupt_state_files_are_set_aside_and_serving_starts(tmp_path):
    """What a power cut leaves (empty, truncated, garbage files) never stops the gateway: each
    bad file is moved aside with its name logged, and the route starts anew."""
    model = AppServer(EchoApp())
    state = tmp_path / "state"
    state.mkdir()
    (state / "r.inputs.npz").write_bytes(b"")
    (state / "r.experiment.npz").write_bytes(b"PK\x03\x04 truncated zip")
    (state / "predictions.npz").write_bytes(os.urandom(300))
    cfg = monitored(model.url, tmp_path, "json")
    cfg = cfg.replace("monitoring: {persist_every: 1s}", "monitoring: {persist_every: 1s}\n"
                      "feedback: {enabled: true}")
    started = time.monotonic()
    gw = GatewayServer(cfg)
    try:
        # ~2 s here (the monitor's numba import and state load); margin for a loaded machine
        assert time.monotonic() - started < 8.0
        snap = wait_for(lambda: httpx.get(f"{gw.admin_url}/monitoring").json().get("routes"))
        assert snap["r"]["sides"]["inputs"]["reference_ready"] is False
        aside = sorted(p.name.split(".corrupt-")[0] for p in state.glob("*.corrupt-*"))
        assert aside == ["predictions.npz", "r.experiment.npz", "r.inputs.npz"]
        assert httpx.post(f"{gw.url}/x", json=[{"a": 1}]).status_code == 200
    finally:
        gw.stop()
        model.stop()


def test_bodiless_requests_are_no_decode_errors_and_a_small_reference_is_flagged(tmp_path):
    model = AppServer(build_model_app("churn"))
    gw = GatewayServer(monitored(model.url, tmp_path, "auto", "{learn: {rows: 100}}"))
    try:
        for path in ("/v2/models/churn/ready", "/v2/models/churn"):  # health, metadata
            assert httpx.get(f"{gw.url}{path}").status_code == 200
        rows = synthetic_rows(150, np.random.default_rng(4))
        r = httpx.post(f"{gw.url}/v1/models/churn:predict", json={"instances": rows})
        assert r.status_code == 200
        sides = wait_for(lambda: (s := httpx.get(f"{gw.admin_url}/monitoring").json().get(
            "routes", {}).get("r", {}).get("sides", {})) and s["inputs"]["reference_ready"]
            and s)
        assert sides["inputs"]["warning"].startswith("the reference has 100 rows: about 2.0% of "
                                                     "clean values fall outside")
        assert samples(gw.admin_url, "driftgate_monitor_decode_errors_total") == []
    finally:
        gw.stop()
        model.stop()
