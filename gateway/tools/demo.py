"""`driftgate demo`: two demo model versions, the gateway in front, traffic, and a drift alert.

Everything runs on embedded defaults and loopback ports (the usual ones when free, others when
taken), with a baseline file and state directory in a temporary folder. It prints where to
look and a summary of what the gateway measured, then shifts one feature of the traffic
(monthly_charges +15%) and prints the drift alert as it reaches a local webhook. Meanwhile it
posts the true label of every answer to the gateway's /feedback, as a label queue would, and
prints the 50/50 experiment's verdict (v2 is the weaker model: its logit is shifted). It keeps
serving light traffic until Ctrl-C (or `--duration`), then stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import parse_config
from gateway.logs import configure_logging
from gateway.proxy.server import Gateway
from gateway.tools.demo_model import FEATURES, draw_labels, synthetic_rows
from gateway.tools.ports import port_or_free

MONITOR = "{{baseline: train.csv, features: [tenure_months, monthly_charges, support_calls, " \
          "usage_gb, plan]}}"
SPLIT = ("[{{name: control, upstream: churn-v1, weight: 50}}, "
         "{{name: candidate, upstream: churn-v2, weight: 50}}]")
DEMO_CONFIG = """
server: {{host: 127.0.0.1, port: {port}}}
admin: {{host: 127.0.0.1, port: {admin}}}
logging: {{level: warning, format: console, access_log: {{enabled: false}}}}
state_dir: state
upstreams:
  churn-v1: {{url: "http://127.0.0.1:{v1}"}}
  churn-v2: {{url: "http://127.0.0.1:{v2}"}}
routes:
  - {{name: churn-v2-protocol, match: {{path_prefix: /v2/models/churn}}, variants: SPLIT,
     protocol: v2, monitor: MONITOR}}
  - {{name: churn-v1-protocol, match: {{path_prefix: /v1/models/churn}}, variants: SPLIT,
     sticky: {{header: X-User-Id}}, protocol: kserve-v1, monitor: MONITOR}}
  - {{name: churn-mlflow, match: {{path: /invocations}}, upstream: churn-v2,
     protocol: mlflow, monitor: MONITOR}}
alerts:
  evaluate_every: 2s
  sinks:
    demo-webhook: {{type: webhook, url: "http://127.0.0.1:{hook}/alerts"}}
""".replace("MONITOR", MONITOR).replace("SPLIT", SPLIT)
SHIFT_FEATURE, SHIFT = "monthly_charges", 0.15
CANDIDATE_BIAS = 1.5  # v2's logit shift: ~13 points less accurate than v1 on demo traffic


async def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"demo model on port {port} did not start")


def demo_request(rows: list[list], protocol: str) -> tuple[str, dict]:
    """(path, JSON body) of one prediction request in the given protocol."""
    if protocol == "v1":
        return "/v1/models/churn:predict", {"instances": rows}
    if protocol == "v2":  # one named tensor per feature
        return "/v2/models/churn/infer", {"inputs": [
            {"name": f, "shape": [len(rows)], "datatype": "BYTES" if f == "plan" else "FP64",
             "data": [r[j] for r in rows]} for j, f in enumerate(FEATURES)]}
    return "/invocations", {"dataframe_split": {"columns": list(FEATURES), "data": rows}}


def demo_headers(protocol: str, user: int) -> dict[str, str]:
    """KServe V1 callers send a user id: the split keeps each user on one variant."""
    return {"x-user-id": f"user-{user}"} if protocol == "v1" else {}


class Traffic:
    """Steady demo traffic across the three protocols; remembers the gateway's own timing."""

    def __init__(self, url: str, rate: float, stopping=lambda: False, seed: int = 7) -> None:
        self.url = url
        self.stopping = stopping
        self.rate = rate
        self.rng = np.random.default_rng(seed)
        self.choice = random.Random(seed)
        self.gateway_ms: list[float] = []
        self.sent = 0
        self.failed = 0
        self.shift = 0.0  # relative change applied to SHIFT_FEATURE
        self.labels: list[dict] = []  # feedback waiting to be posted
        self.labelled = 0

    async def post_labels(self, client: httpx.AsyncClient) -> None:
        """The ground truth of the answers so far, in one batch: how a label queue would."""
        batch, self.labels = self.labels[:5000], self.labels[5000:]
        if batch:
            r = await client.post("/feedback", json=batch)
            if r.status_code == 200:
                self.labelled += r.json()["accepted"]

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            next_labels = time.monotonic() + 1.0
            while True:
                started = time.monotonic()
                protocol = self.choice.choice(("v1", "v2", "mlflow"))
                rows = synthetic_rows(self.choice.randint(1, 4), self.rng)
                if self.shift:
                    j = FEATURES.index(SHIFT_FEATURE)
                    for r in rows:
                        r[j] = round(r[j] * (1 + self.shift), 2)
                path, body = demo_request(rows, protocol)
                try:
                    r = await client.post(path, json=body, headers=demo_headers(
                        protocol, self.choice.randint(1, 500)))
                    self.sent += 1
                    self.failed += r.status_code >= 400
                    if r.status_code == 200 and len(self.labels) < 100_000:
                        self.labels.append({"request_id": r.headers["x-request-id"],
                                            "label": draw_labels(rows, self.rng)})
                    if time.monotonic() >= next_labels:
                        next_labels = time.monotonic() + 1.0
                        await self.post_labels(client)
                    timing = dict(p.strip().split(";dur=") for p in r.headers["server-timing"].split(","))
                    if len(self.gateway_ms) < 100_000:
                        self.gateway_ms.append(float(timing["gateway"]))
                except (httpx.HTTPError, KeyError, ValueError):
                    if not self.stopping():  # refusals while the gateway drains are expected
                        self.failed += 1
                await asyncio.sleep(max(0.0, 1 / self.rate - (time.monotonic() - started)))


async def print_summary(admin_url: str, traffic: Traffic) -> None:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{admin_url}/metrics")).text
    counts: dict[tuple[str, str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "driftgate_requests":
            for s in family.samples:
                key = (s.labels["route"], s.labels["variant"], s.labels["upstream"], s.labels["code"])
                counts[key] = counts.get(key, 0) + s.value
    print("\n--- what the gateway measured so far (from /metrics) ---")
    print(f"{'route':<20} {'variant':<10} {'upstream':<10} {'code':<5} requests  share")
    totals: dict[str, float] = {}
    for (route, _, _, _), n in counts.items():
        totals[route] = totals.get(route, 0) + n
    for (route, variant, upstream, code), n in sorted(counts.items()):
        share = n / totals[route] if totals[route] else 0
        print(f"{route:<20} {variant:<10} {upstream:<10} {code:<5} {n:<9.0f} {share:.0%}")
    if traffic.gateway_ms:
        ms = np.array(traffic.gateway_ms)
        print(f"gateway's own time per request (Server-Timing): p50 {np.percentile(ms, 50):.3f} ms, "
              f"p99 {np.percentile(ms, 99):.3f} ms over {len(ms)} requests")
    print(f"example: curl -s {admin_url}/metrics | grep driftgate_requests_total\n")


async def print_experiment(admin_url: str) -> None:
    from gateway.tools.report import explain_test, fetch_report, format_experiment

    try:
        experiments = await asyncio.to_thread(fetch_report, admin_url)
    except (httpx.HTTPError, RuntimeError) as exc:
        print(f"experiment report unavailable: {exc}", flush=True)
        return
    print("\n--- the 50/50 experiment so far (GET /experiments; also: driftgate report "
          f"--admin {admin_url}) ---", flush=True)
    for exp in experiments:
        print(format_experiment(exp), flush=True)
        accuracy = next((t for t in exp["tests"] if t["metric"] == "accuracy"), None)
        if accuracy is not None:
            print(f"  in words: {explain_test(exp, accuracy)}", flush=True)
    print(flush=True)


class AlertReceiver(asyncio.Protocol):
    """A minimal local webhook: hands each alert (parsed JSON) to `on_alert`, answers 200."""

    def __init__(self, on_alert) -> None:
        self.on_alert = on_alert
        self.buffer = b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head, sep, body = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        if len(body) < length:
            return
        self.buffer = b""
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        try:
            alert = orjson.loads(body[:length])
        except orjson.JSONDecodeError:
            return
        self.on_alert(alert)


def print_alert(demo: dict):
    """The demo's webhook handler: print each alert, with its delay after the shift."""
    def on_alert(alert: dict) -> None:
        since = ""
        if demo.get("shift_at") and alert.get("status") == "firing":
            since = f" ({time.monotonic() - demo['shift_at']:.1f} s after the shift)"
            demo.setdefault("alerted", time.monotonic())
        print(f"ALERT {alert.get('status')} {alert.get('alert')} {alert.get('route')}/"
              f"{alert.get('variant')} feature={alert.get('feature')}: {alert.get('summary')}"
              f"{since}", flush=True)
    return on_alert


def write_baseline(path: Path, rows: int = 20_000, seed: int = 2024) -> None:
    """A CSV of demo-model training rows (header: FEATURES), usable as `monitor.baseline`."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(FEATURES)
        w.writerows(synthetic_rows(rows, np.random.default_rng(seed)))


def start_models(v1: int, v2: int) -> list[subprocess.Popen]:
    """The two demo model servers: churn v1, and v2 with its logit shifted (the weaker one)."""
    return [subprocess.Popen([sys.executable, "-m", "gateway", "demo-model", "--port", str(p),
                              "--name", "churn", "--version", version, "--seed", str(seed),
                              "--bias-shift", str(bias)])
            for p, version, seed, bias in ((v1, "v1", 1, 0.0), (v2, "v2", 2, CANDIDATE_BIAS))]


def stop_models(models: list[subprocess.Popen]) -> None:
    for proc in models:
        proc.terminate()
    for proc in models:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def print_banner(url: str, admin_url: str, ports: tuple[int, int, int], rate: float) -> None:
    v1, v2, hook = ports
    print(f"""
driftgate demo
  model churn v1    http://127.0.0.1:{v1}   (KServe V1, Open Inference V2, MLflow)
  model churn v2    http://127.0.0.1:{v2}
  split             V1 and V2 traffic: 50% control (v1), 50% candidate (v2), sticky by
                    X-User-Id; MLflow traffic all to v2
  feedback          the true label of every answer is posted to {url}/feedback
  gateway           {url}      <- point clients here
  admin             {admin_url}      /metrics /healthz /readyz /monitoring /experiments
  alerts webhook    http://127.0.0.1:{hook}/alerts   (prints what it gets, below)
try:
  curl -s -X POST {url}/v1/models/churn:predict -d '{{"instances": [[12, 70.5, 2, 21.3, "basic"]]}}'
sending {rate:g} requests/s of V1, V2 and MLflow traffic, monitored against a baseline;
the access log is off and the gateway logs warnings only (logging: in a config);
Ctrl-C stops everything
""", flush=True)


def demo_ports() -> tuple[dict[str, int], list[str]]:
    """The usual ports where free, others where not, and a sentence for each one moved."""
    wanted = {"gateway": 8080, "admin": 8090, "model v1": 9001, "model v2": 9002}
    ports = {name: port_or_free(p) for name, p in wanted.items()}
    moved = [f"port {wanted[name]} is taken: the {name} listens on {ports[name]} instead"
             + (f" (point clients and locust --host at http://127.0.0.1:{ports[name]})"
                if name == "gateway" else "")
             for name in wanted if ports[name] != wanted[name]]
    return ports, moved


async def _demo(duration: float | None, rate: float) -> int:
    ports, moved = demo_ports()
    v1, v2, port, admin = ports["model v1"], ports["model v2"], ports["gateway"], ports["admin"]
    workdir = Path(tempfile.mkdtemp(prefix="driftgate-demo-"))
    write_baseline(workdir / "train.csv")
    demo_state: dict = {}
    receiver = await asyncio.get_running_loop().create_server(
        lambda: AlertReceiver(print_alert(demo_state)), "127.0.0.1", 0)
    hook = receiver.sockets[0].getsockname()[1]
    models = start_models(v1, v2)
    tasks: list[asyncio.Task] = []
    try:
        await asyncio.gather(wait_port(v1), wait_port(v2))
        cfg = parse_config(DEMO_CONFIG.format(port=port, admin=admin, v1=v1, v2=v2, hook=hook),
                           "<demo>")
        gw = Gateway(cfg, workdir)
        serving = asyncio.create_task(gw.serve())
        await gw.started.wait()
        url, admin_url = f"http://127.0.0.1:{gw.port}", f"http://127.0.0.1:{gw.admin_port}"
        print_banner(url, admin_url, (v1, v2, hook), rate)
        for line in moved:
            print(line, flush=True)
        traffic = Traffic(url, rate, stopping=lambda: gw.draining)
        tasks.append(asyncio.create_task(traffic.run()))
        first = min(6.0, duration) if duration else 6.0
        await asyncio.sleep(first)
        await print_summary(admin_url, traffic)
        print(f"shifting {SHIFT_FEATURE} by +{SHIFT:.0%} in all traffic now; the drift alert "
              f"should reach the webhook within seconds", flush=True)
        traffic.shift = SHIFT
        demo_state["shift_at"] = time.monotonic()
        verdict_at = min(12.0, max(0.0, (duration or 1e9) - first - 2.0))
        await asyncio.wait([serving], timeout=verdict_at)
        await print_experiment(admin_url)
        if duration is not None:
            await asyncio.wait([serving], timeout=max(0.0, duration - first - verdict_at))
            tasks[0].cancel()
            gw.stop()
        while not serving.done():  # until Ctrl-C: the experiment again every minute
            await asyncio.wait([serving], timeout=60.0)
            if not serving.done():
                await print_experiment(admin_url)
        await serving
        if "alerted" not in demo_state:
            print("no drift alert arrived before the demo ended", flush=True)
        return 0 if traffic.sent and traffic.failed == 0 else 1
    finally:
        for task in tasks:
            task.cancel()
        receiver.close()
        stop_models(models)
        print("demo stopped: gateway and both models are down", flush=True)


def run_demo(duration: float | None = None, rate: float = 50.0) -> int:
    configure_logging("warning", "console")  # the story below is the demo's own; logs: warnings
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    with runner:
        return runner.run(_demo(duration, rate))
