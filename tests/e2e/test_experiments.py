"""Experiments end to end: two real demo models behind a 50/50 split, labels posted to the
gateway's /feedback, the verdict read from the admin port's /experiments."""

import asyncio
import os
import signal
import threading
import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_config
from gateway.tools.demo_model import build_model_app, draw_labels, synthetic_rows
from tests.servers import AppServer, GatewayServer, free_port, run_cli

REQUESTS = 5000


def split_config(tmp_path, control_url: str, candidate_url: str, extra: str = "",
                 admin: str = "") -> str:
    return f"""
server: {{port: {free_port()}}}
admin: {{port: {free_port()}{admin}}}
logging: {{format: json, access_log: {{enabled: false}}}}
state_dir: {tmp_path / "state"}
upstreams:
  a: {{url: "{control_url}"}}
  b: {{url: "{candidate_url}"}}
routes:
  - name: churn
    match: {{path_prefix: /v1/models/churn}}
    protocol: kserve-v1
    variants: [{{name: control, upstream: a, weight: 50}}, {{name: candidate, upstream: b, weight: 50}}]
    sticky: {{header: X-User-Id}}
    monitor: {{learn: {{rows: 500}}}}
alerts: {{evaluate_every: 1s}}
{extra}
"""


async def drive(url: str, n: int, seed: int = 3, concurrency: int = 16) -> tuple[int, list[dict]]:
    """n single-row predictions, then their true labels posted in batches. Returns
    (failed requests, batch answers)."""
    rng = np.random.default_rng(seed)
    rows = synthetic_rows(n, rng)
    labels = draw_labels(rows, rng)
    ids: list[str | None] = [None] * n
    failed = 0
    queue = iter(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failed
        for i in queue:
            # one user per request, sticky: the same rows meet the same variant on every run,
            # so the verdicts below are deterministic rather than right 95% of the time
            r = await client.post("/v1/models/churn:predict", json={"instances": [rows[i]]},
                                  headers={"x-user-id": f"user-{i}"})
            if r.status_code != 200:
                failed += 1
            ids[i] = r.headers["x-request-id"]

    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        answers = []
        for start in range(0, n, 1000):
            batch = [{"request_id": ids[i], "label": labels[i]} for i in range(start, min(n, start + 1000))]
            r = await client.post("/feedback", json=batch)
            assert r.status_code == 200, r.text
            answers.append(r.json())
    return failed, answers


def run_experiment(tmp_path, candidate_bias: float) -> dict:
    control = AppServer(build_model_app("churn", seed=1))
    candidate = AppServer(build_model_app("churn", seed=1, bias_shift=candidate_bias))
    gw = GatewayServer(split_config(tmp_path, control.url, candidate.url))
    try:
        failed, answers = asyncio.run(drive(gw.url, REQUESTS))
        assert failed == 0
        assert sum(a["accepted"] for a in answers) == REQUESTS
        report = httpx.get(f"{gw.admin_url}/experiments/churn", timeout=10).json()
        everything = httpx.get(f"{gw.admin_url}/experiments", timeout=10).json()
        assert [e["route"] for e in everything["experiments"]] == ["churn"]
        printed = run_cli("report", "--admin", gw.admin_url)
        assert printed.returncode == 0, printed.stderr
        # the same labels, windowed: /monitoring and the Prometheus gauges after a round
        deadline = time.monotonic() + 15
        while True:
            quality = httpx.get(f"{gw.admin_url}/monitoring").json()["routes"]["churn"].get("quality")
            if quality and quality["candidate"]["counts"]["labels"] + \
                    quality["control"]["counts"]["labels"] == REQUESTS or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for variant in ("control", "candidate"):
            assert quality[variant]["metrics"]["accuracy"] == pytest.approx(
                report["variants"][variant]["quality"]["accuracy"])
        text = httpx.get(f"{gw.admin_url}/metrics").text
        gauges = {(s.labels["variant"], s.labels["metric"]): s.value
                  for f in text_string_to_metric_families(text) if f.name == "driftgate_model_quality"
                  for s in f.samples}
        assert gauges[("candidate", "accuracy")] == pytest.approx(quality["candidate"]["metrics"]["accuracy"])
        assert gauges[("control", "labels")] == quality["control"]["counts"]["labels"]
        return report, printed.stdout
    finally:
        gw.stop()
        control.stop()
        candidate.stop()


@pytest.mark.slow
def test_better_model_is_declared_significant(tmp_path):
    report, printed = run_experiment(tmp_path, candidate_bias=1.0)
    assert report["control"] == "control"
    variants = report["variants"]
    assert variants["control"]["requests"] + variants["candidate"]["requests"] == REQUESTS
    assert 0.45 < variants["control"]["requests"] / REQUESTS < 0.55
    acc_c = variants["control"]["quality"]["accuracy"]
    acc_b = variants["candidate"]["quality"]["accuracy"]
    assert acc_c > acc_b + 0.03  # the bias shift costs ~7 points here
    accuracy = next(t for t in report["tests"] if t["metric"] == "accuracy")
    assert accuracy["significant"] and accuracy["better"] == "control"
    assert accuracy["ci95"][1] < 0 and accuracy["p_value"] < 0.05
    assert accuracy["verdict"].startswith("control better on accuracy by")
    assert accuracy["n"]["control"] + accuracy["n"]["candidate"] == REQUESTS
    assert {"p_value", "significant"} <= set(accuracy["sequential"])
    assert {t["metric"] for t in report["tests"]} >= {"accuracy", "auc", "error_rate", "latency"}
    assert "route churn  (control: control)" in printed
    assert f"candidate vs control, accuracy (two-proportion z): {accuracy['verdict']}" in printed


@pytest.mark.slow
def test_equal_models_are_not_declared_different(tmp_path):
    report, printed = run_experiment(tmp_path, candidate_bias=0.0)
    accuracy = next(t for t in report["tests"] if t["metric"] == "accuracy")
    assert not accuracy["significant"] and accuracy["better"] is None
    assert accuracy["ci95"][0] < 0 < accuracy["ci95"][1]
    assert accuracy["verdict"].startswith("no significant difference on accuracy")
    assert "no significant difference on accuracy" in printed


# Long enough for the checks before the expiry one on a loaded machine (1 s failed 2 runs of 3
# at load 10), short enough to wait out.
FEEDBACK_TTL = 5.0


@pytest.fixture
def gateway(tmp_path):
    model = AppServer(build_model_app("churn", seed=1))
    gw = GatewayServer(split_config(tmp_path, model.url, model.url, extra=f"""
feedback: {{ttl: {FEEDBACK_TTL}s}}
"""))
    yield gw
    gw.stop()
    model.stop()


@pytest.mark.slow
def test_feedback_errors_are_clear_and_counted(gateway):
    with httpx.Client(base_url=gateway.url, timeout=10) as c:
        r = c.post("/v1/models/churn:predict", json={"instances": [[12, 70.5, 2, 21.3, "basic"],
                                                                   [3, 99.0, 5, 40.0, "basic"]]})
        rid = r.headers["x-request-id"]
        answered = time.monotonic()
        assert c.post("/feedback", content=b"{not json").status_code == 400
        r = c.post("/feedback", json={"request_id": rid})
        assert r.status_code == 400 and "exactly one of" in r.json()["error"]
        r = c.post("/feedback", json={"request_id": rid, "label": "churned"})
        assert r.status_code == 400 and "class index" in r.json()["error"]
        r = c.post("/feedback", json={"request_id": "never-seen", "label": 1})
        assert r.status_code == 404 and r.json()["status"] == "unknown"
        r = c.post("/feedback", json={"request_id": rid, "label": [1, 0]})
        assert time.monotonic() - answered < FEEDBACK_TTL  # else the machine, not the gateway
        assert r.status_code == 200 and r.json()["rows"] == 2
        r = c.post("/feedback", json={"request_id": rid, "label": 1, "index": 1})
        assert r.status_code == 409 and r.json()["status"] == "duplicate"
        r = c.post("/v1/models/churn:predict", json={"instances": [[12, 70.5, 2, 21.3, "basic"]]})
        old = r.headers["x-request-id"]
        time.sleep(FEEDBACK_TTL + 0.3)
        r = c.post("/feedback", json={"request_id": old, "label": 1})
        assert r.status_code == 410 and r.json()["status"] == "expired"
        r = c.post("/feedback", json={"feedback": [{"request_id": "nope", "label": 0}, {"label": 1}]})
        assert r.status_code == 200
        assert r.json()["unknown"] == 1 and r.json()["invalid"] == 1 and r.json()["accepted"] == 0
    deadline = time.monotonic() + 15
    while True:  # the monitor process publishes its counters each evaluation round
        text = httpx.get(f"{gateway.admin_url}/metrics").text
        counts = {s.labels.get("result"): s.value for f in text_string_to_metric_families(text)
                  if f.name == "driftgate_feedback" for s in f.samples if s.name.endswith("_total")}
        expected = {"accepted": 1, "invalid": 4, "unknown": 2, "duplicate": 1, "expired": 1}
        if counts == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert counts == expected


def test_an_experiment_can_be_started_over_with_the_admin_token(tmp_path):
    model = AppServer(build_model_app("churn", seed=1))
    gw = GatewayServer(split_config(tmp_path, model.url, model.url, admin=", token: s3cret"))
    try:
        for _ in range(40):
            httpx.post(f"{gw.url}/v1/models/churn:predict",
                       json={"instances": [[12, 70.5, 2, 21.3, "basic"]]}, timeout=10)
        report = httpx.get(f"{gw.admin_url}/experiments/churn", timeout=10).json()
        assert sum(v["requests"] for v in report["variants"].values()) == 40
        url = f"{gw.admin_url}/admin/experiments/churn/reset"
        assert httpx.post(url, timeout=10).status_code == 401
        r = httpx.post(url, headers={"authorization": "Bearer s3cret"}, timeout=10)
        assert r.status_code == 200 and r.json()["reset"] is True
        after = httpx.get(f"{gw.admin_url}/experiments/churn", timeout=10).json()
        assert sum(v["requests"] for v in after["variants"].values()) == 0
        assert after["since"] > report["since"] and after["tests"] == []
        r = httpx.post(f"{gw.admin_url}/admin/experiments/nope/reset",
                       headers={"authorization": "Bearer s3cret"}, timeout=10)
        assert r.status_code == 404
    finally:
        gw.stop()
        model.stop()


@pytest.mark.slow
def test_labels_find_their_predictions_after_a_restart(tmp_path):
    model = AppServer(build_model_app("churn", seed=1))
    cfg = split_config(tmp_path, model.url, model.url)
    gw = GatewayServer(cfg)
    try:
        r = httpx.post(f"{gw.url}/v1/models/churn:predict",
                       json={"instances": [[12, 70.5, 2, 21.3, "basic"]]}, timeout=10)
        rid = r.headers["x-request-id"]
    finally:
        gw.stop()  # a clean stop saves the predictions still waiting for labels
    assert (tmp_path / "state" / "predictions.npz").exists()
    gw = GatewayServer(cfg)
    try:
        r = httpx.post(f"{gw.url}/feedback", json={"request_id": rid, "label": 1}, timeout=10)
        assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
        report = httpx.get(f"{gw.admin_url}/experiments/churn", timeout=10).json()
        assert sum(v["labels"]["labels"] for v in report["variants"].values()) == 1
        assert sum(v["requests"] for v in report["variants"].values()) == 1  # tallies kept too
    finally:
        gw.stop()
        model.stop()


@pytest.mark.slow
def test_labels_find_their_predictions_after_the_monitor_process_is_killed(tmp_path):
    """kill -9 of the monitor process: the gateway starts a new one, which finds the
    predictions saved at the last `persist_every` (here 1 s) and takes their labels."""
    model = AppServer(build_model_app("churn", seed=1))
    gw = GatewayServer(split_config(tmp_path, model.url, model.url,
                                    extra="monitoring: {persist_every: 1s}"))
    try:
        r = httpx.post(f"{gw.url}/v1/models/churn:predict",
                       json={"instances": [[12, 70.5, 2, 21.3, "basic"]]}, timeout=10)
        rid = r.headers["x-request-id"]
        saved = tmp_path / "state" / "predictions.npz"
        deadline = time.monotonic() + 15
        while not saved.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert saved.exists(), "no periodic save of the predictions"
        link = gw.gateway.runtime.monitor
        old_pid = link._proc.pid
        os.kill(old_pid, signal.SIGKILL)
        killed = time.monotonic()
        while not (link.alive and link._proc.pid != old_pid and link._ready.is_set()):
            assert time.monotonic() < killed + 30, "the monitor process was not started again"
            time.sleep(0.05)
        # ~1.5 s here (restart at once, numba's cache warm); margin for a loaded machine
        assert time.monotonic() - killed < 5.0
        r = httpx.post(f"{gw.url}/feedback", json={"request_id": rid, "label": 1}, timeout=10)
        assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    finally:
        gw.stop()
        model.stop()


@pytest.mark.slow
def test_a_reload_that_changes_monitoring_loses_no_capture_label_or_learned_row(tmp_path):
    """The monitor process is replaced (its config changed): captures wait in the queue,
    feedback waits for the new process, rows gathered for the reference are kept."""
    model = AppServer(build_model_app("churn", seed=1))
    path = tmp_path / "gateway.yaml"
    text = split_config(tmp_path, model.url, model.url, admin=", token: t0k3n").replace(
        "monitor: {learn: {rows: 500}}", "monitor: {learn: {rows: 100000}}")
    path.write_text(text)
    gw = GatewayServer(load_config(path), tmp_path, path)
    statuses: list[tuple[int, int]] = []
    stop = threading.Event()

    def traffic() -> None:
        rng = np.random.default_rng(5)
        with httpx.Client(timeout=15) as c:
            while not stop.is_set():
                row = synthetic_rows(1, rng)[0]
                r = c.post(f"{gw.url}/v1/models/churn:predict", json={"instances": [row]})
                f = c.post(f"{gw.url}/feedback", json={"request_id": r.headers["x-request-id"],
                                                        "label": 1})
                statuses.append((r.status_code, f.status_code))

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(2.0)
        before = httpx.get(f"{gw.admin_url}/monitoring").json()["routes"]["churn"]["sides"]
        old_pid = gw.gateway.runtime.monitor._proc.pid
        path.write_text(text.replace("evaluate_every: 1s", "evaluate_every: 0.8s"))
        r = httpx.post(f"{gw.admin_url}/admin/reload", headers={"authorization": "Bearer t0k3n"})
        assert r.json()["reloaded"] is True, r.text
        link = gw.gateway.runtime.monitor
        deadline = time.monotonic() + 30  # the new process's first round (~1.5 s; a loaded
        while time.monotonic() < deadline:  # machine takes longer)
            time.sleep(0.5)
            after = httpx.get(f"{gw.admin_url}/monitoring").json()["routes"]["churn"]["sides"]
            if link._ready.is_set() and after["inputs"]["reference_rows"] > \
                    before["inputs"]["reference_rows"]:
                break
        time.sleep(1.0)  # traffic on the new process too
        assert link._proc.pid != old_pid  # a new monitor process
    finally:
        stop.set()
        worker.join()
        text_metrics = httpx.get(f"{gw.admin_url}/metrics").text
        gw.stop()
        model.stop()
    assert len(statuses) > 50
    assert all(s == (200, 200) for s in statuses), [s for s in statuses if s != (200, 200)][:5]
    assert "driftgate_monitor_dropped_total 0.0" in text_metrics
    assert after["inputs"]["reference_rows"] > before["inputs"]["reference_rows"] > 0


def test_feedback_for_a_route_that_keeps_no_predictions_says_so(tmp_path):
    model = AppServer(build_model_app("churn", seed=1))
    cfg = split_config(tmp_path, model.url, model.url).replace(
        "    monitor: {learn: {rows: 500}}\n", "")
    gw = GatewayServer(cfg)
    try:
        r = httpx.post(f"{gw.url}/v1/models/churn:predict",
                       json={"instances": [[12, 70.5, 2, 21.3, "basic"]]})
        r = httpx.post(f"{gw.url}/feedback", json={"request_id": r.headers["x-request-id"],
                                                   "label": 1})
        assert r.status_code == 404
        assert r.json()["error"] == (
            "no prediction with this request_id (never seen, sampled out, or evicted); route "
            "churn keeps no predictions (no `monitor:`), so labels for its answers cannot be "
            "joined")
    finally:
        gw.stop()
        model.stop()
