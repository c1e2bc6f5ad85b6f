"""A locust load run against the demo, with one short report.

Starts the demo's two model servers and the gateway on its embedded demo config (50/50 split,
monitoring against a baseline, a local alert webhook), runs locust headless with
benchmarks/locustfile.py (V1, V2 and MLflow payloads, feedback labels, a drift phase: +15%
monthly_charges from `--drift-at`), then reports: req/s, failures and p50/p95/p99 per scenario
(locust's view), the gateway's /metrics view of the same run, and whether a drift alert reached
the webhook in the drift phase and how long after it began.

    python benchmarks/run_load.py [--users 20] [--seconds 60] [--drift-at 30]
                                  [--out benchmarks/results/load_run.md]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import emit, machine_line  # noqa: E402
from gateway.config import parse_config  # noqa: E402
from gateway.logs import configure_logging  # noqa: E402
from gateway.proxy.server import Gateway  # noqa: E402
from gateway.tools.demo import (  # noqa: E402
    DEMO_CONFIG,
    AlertReceiver,
    start_models,
    stop_models,
    wait_port,
    write_baseline,
)
from gateway.tools.ports import free_port  # noqa: E402

HERE = Path(__file__).resolve().parent


def gateway_view(text: str) -> dict:
    """What the gateway counted: requests by route/variant/code, monitor rows, captures
    dropped, feedback, alerts."""
    view: dict = {"requests": {}, "rows": 0.0, "dropped": 0.0, "feedback": {}, "alerts": 0.0,
                  "labels": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "driftgate_requests_total" and s.labels.get("shadow") != "true":
                key = (s.labels["route"], s.labels["variant"], s.labels["code"])
                view["requests"][key] = view["requests"].get(key, 0) + s.value
            elif s.name == "driftgate_monitor_rows_total":
                view["rows"] += s.value
            elif s.name == "driftgate_monitor_dropped_total":
                view["dropped"] += s.value
            elif s.name == "driftgate_feedback_total":
                view["feedback"][s.labels["result"]] = s.value
            elif s.name == "driftgate_feedback_labels_total":
                view["labels"] += s.value
            elif s.name == "driftgate_alerts_total" and s.labels["status"] == "firing":
                view["alerts"] += s.value
    return view


def _percentile(times: dict[str, int], q: float) -> float:
    """A percentile from locust's response-time histogram ({rounded ms: count})."""
    items = sorted((float(k), n) for k, n in times.items())
    total = sum(n for _, n in items)
    seen = 0
    for ms, n in items:
        seen += n
        if seen >= q * total:
            return ms
    return float("nan")


def locust_rows(stats_json: Path, seconds: float) -> list[dict]:
    """Per scenario (locust's `name`): requests, failures, req/s, p50/p95/p99 ms, plus "all"."""
    entries = orjson.loads(stats_json.read_bytes())
    rows = []
    merged: dict[str, int] = {}
    for e in sorted(entries, key=lambda e: e["name"]):
        times = e["response_times"]
        for k, n in times.items():
            merged[k] = merged.get(k, 0) + n
        rows.append({"name": e["name"], "requests": e["num_requests"],
                     "failures": e["num_failures"], "times": times})
    rows.append({"name": "all", "requests": sum(r["requests"] for r in rows),
                 "failures": sum(r["failures"] for r in rows), "times": merged})
    for r in rows:
        r.update(rps=r["requests"] / seconds,
                 **{f"p{q}": _percentile(r["times"], q / 100) for q in (50, 95, 99)})
    return rows


async def run(args) -> str:
    v1, v2, port, admin = free_port(), free_port(), free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="driftgate-load-"))
    write_baseline(workdir / "train.csv")
    alerts: list[tuple[float, dict]] = []
    receiver = await asyncio.get_running_loop().create_server(
        lambda: AlertReceiver(lambda a: alerts.append((time.time(), a))), "127.0.0.1", 0)
    hook = receiver.sockets[0].getsockname()[1]
    models = start_models(v1, v2)
    try:
        await asyncio.gather(wait_port(v1), wait_port(v2))
        cfg = parse_config(DEMO_CONFIG.format(port=port, admin=admin, v1=v1, v2=v2, hook=hook)
                           .replace("format: console", "format: json"), "<load>")
        gw = Gateway(cfg, workdir)
        serving = asyncio.create_task(gw.serve(install_signals=False))
        await gw.started.wait()
        url = f"http://127.0.0.1:{gw.port}"
        out = workdir / "locust"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--host", url,
            "--headless", "-u", str(args.users), "-r", str(args.users), "-t", f"{args.seconds}s",
            "--json-file", str(out), "--only-summary",
            "--drift-at", str(args.drift_at),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=workdir)
        started_at = None
        async for line in proc.stdout:
            text = line.decode(errors="replace")
            if text.startswith("driftgate-locust: test started at"):
                started_at = float(text.rsplit(" ", 1)[1])
        code = await proc.wait()
        await asyncio.sleep(args.settle)  # the monitor's last round reaches /metrics
        async with httpx.AsyncClient() as client:
            metrics_text = (await client.get(f"http://127.0.0.1:{gw.admin_port}/metrics")).text
        gw.stop()
        await serving
    finally:
        receiver.close()
        stop_models(models)
    return report(args, code, locust_rows(Path(f"{out}.json"), args.seconds),
                  gateway_view(metrics_text), alerts, started_at)


def report(args, code: int, rows: list[dict], view: dict, alerts: list[tuple[float, dict]],
           started_at: float | None) -> str:
    lines = [f"Machine: {machine_line()}. Everything on the same 2 cores, unpinned: locust, the two "
             "demo models (numpy, uvicorn), the gateway and its monitor process.",
             f"Run: `python benchmarks/run_load.py --users {args.users} --seconds {args.seconds} "
             f"--drift-at {args.drift_at}`; locust exit code {code}.", "",
             "Locust's view:", "",
             "| scenario | requests | failures | req/s | p50 ms | p95 ms | p99 ms |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['requests']} | {r['failures']} | {r['rps']:.1f} | "
                     f"{r['p50']:g} | {r['p95']:g} | {r['p99']:g} |")
    lines += ["", "The gateway's view (/metrics after the run):", "",
              "| route | variant | code | requests |", "|---|---|---|---|"]
    for (route, variant, status), n in sorted(view["requests"].items()):
        lines.append(f"| {route} | {variant} | {status} | {n:.0f} |")
    counted = sum(view["requests"].values())
    fb = view["feedback"]
    predictions = sum(r["requests"] for r in rows if r["name"] not in ("all", "feedback"))
    lines += ["", f"- requests counted by the gateway: {counted:.0f} (locust's predictions: "
              f"{predictions})",
              f"- rows decoded by the monitor: {view['rows']:.0f}; captures dropped: "
              f"{view['dropped']:.0f}",
              f"- feedback items: {', '.join(f'{k} {v:.0f}' for k, v in sorted(fb.items())) or 'none'};"
              f" prediction rows labelled: {view['labels']:.0f}"]
    firing = [(t, a) for t, a in alerts if a.get("status") == "firing"]
    if started_at is None:
        lines.append("- drift alert: locust did not report its start")
    else:
        drift_start = started_at + args.drift_at
        early = [a for t, a in firing if t < drift_start]
        late = [(t - drift_start, a) for t, a in firing if t >= drift_start]
        if late:
            delay, first = late[0]
            lines.append(f"- drift alert: `{first['alert']}` on {first['route']}/{first['variant']} "
                         f"feature {first['feature']} ({first['metric']} = {first['value']:.3g}) "
                         f"reached the webhook {delay:.1f} s after the drift phase began "
                         f"(target: within 30 s); {len(late)} firing notifications in the phase")
        else:
            lines.append("- drift alert: none reached the webhook in the drift phase")
        lines.append(f"- alerts before the drift phase (false alarms): {len(early)}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--drift-at", type=float, default=30.0)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to wait before reading /metrics")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    configure_logging("warning", "json")
    emit(asyncio.run(run(args)), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
