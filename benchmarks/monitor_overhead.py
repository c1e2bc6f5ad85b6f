"""What does monitoring cost the proxy? Gateway throughput with monitoring off vs on.

Same wrk load (the demo model's KServe V1 payload, 7 rows x 5 features, ~300 bytes) through
two gateways in one run, interleaved rounds, medians:
  off   the route has no `monitor:` block
  on    `monitor:` with a baseline file and sample_rate 1.0 (every request decoded and counted)
Each gateway is started pinned to CPU 1; its monitor process (gateway.monitor.service) may run
on any core, as it would in production; nginx (the model stand-in) and wrk share CPU 0. CPU is
reported for the proxy process and for the monitor process apart. Also reported: rows/s the
monitor sustained, and captures it dropped.

    python benchmarks/monitor_overhead.py [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (  # noqa: E402
    cpu_seconds,
    driftgate_process,
    emit,
    free_port,
    machine_line,
    nginx_model,
    wrk,
)
from benchmarks.proxy_overhead import ANSWER, BODY  # noqa: E402
from gateway.tools.demo import write_baseline  # noqa: E402

PROXY_CPU = "1"


def counters(admin: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{admin}/metrics").text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in ("driftgate_monitor_rows_total", "driftgate_monitor_dropped_total",
                          "driftgate_monitor_captures_total"):
                key = s.name + ("" if s.labels.get("side", "inputs") == "inputs" else ".outputs")
                out[key] = out.get(key, 0.0) + s.value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="driftgate-monbench-"))
    write_baseline(workdir / "train.csv", seed=0)
    model_port = free_port()
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    with nginx_model(model_port, ANSWER):
        procs = {name: driftgate_process(model_port, name == "on", workdir, PROXY_CPU,
                                          queue_size=100_000) for name in runs}
        try:
            for _ in range(args.rounds):
                for name, (proc, port, admin) in procs.items():
                    url = f"http://127.0.0.1:{port}/v1/models/churn:predict"
                    wrk(url, args.connections, 1.0, BODY)
                    before_cpu, before = cpu_seconds(proc.pid), counters(admin)
                    before_proxy = cpu_seconds(proc.pid, descendants=False)
                    started = time.monotonic()
                    result = wrk(url, args.connections, args.seconds, BODY)
                    time.sleep(0.5)  # let the monitor finish the queue it has
                    elapsed = time.monotonic() - started
                    after = counters(admin)
                    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                    runs[name].append({
                        "rps": result.rps, "p99_ms": result.p99_ms, "errors": result.errors,
                        "cpu_us": (cpu_seconds(proc.pid) - before_cpu) / result.requests * 1e6,
                        "proxy_cpu_us": (cpu_seconds(proc.pid, descendants=False) - before_proxy)
                        / result.requests * 1e6,
                        "rows_per_s": delta.get("driftgate_monitor_rows_total", 0) / elapsed,
                        "dropped": delta.get("driftgate_monitor_dropped_total", 0),
                        "captured": delta.get("driftgate_monitor_captures_total", 0),
                        "requests": result.requests})
                    print(f"{name}: {result.rps:,.0f} req/s", file=sys.stderr)
        finally:
            for proc, _, _ in procs.values():
                proc.stop()

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    ratio = med("on", "rps") / med("off", "rps")
    lines = [
        f"Machine: {machine_line()}. Each gateway started pinned to CPU {PROXY_CPU}; its monitor "
        "process free to use any core; nginx model and wrk on CPU 0.",
        f"Load: wrk, {len(BODY)}-byte KServe V1 POST (7 rows x 5 features), {args.connections} "
        f"connections x {args.seconds:g} s, {args.rounds} interleaved rounds, medians.",
        "",
        "| gateway | req/s | p99 ms | proxy process CPU us/req | + monitor process | "
        "monitor rows/s | captures dropped |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in runs:
        monitor_us = med(name, "cpu_us") - med(name, "proxy_cpu_us")
        lines.append(f"| monitoring {name} | {med(name, 'rps'):,.0f} | {med(name, 'p99_ms'):.2f} "
                     f"| {med(name, 'proxy_cpu_us'):.0f} | {monitor_us:.0f} "
                     f"| {med(name, 'rows_per_s'):,.0f} "
                     f"| {sum(r['dropped'] for r in runs[name]):.0f} |")
    lines += ["", f"- throughput with full monitoring / without: {ratio:.2f} (target >= 0.85)"]
    report = "\n".join(lines) + "\n"
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
