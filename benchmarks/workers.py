"""Throughput of the gateway with 1 and with 2 worker processes (`server.workers`), side by side.

Same wrk load (the ~300-byte JSON POST of proxy_overhead.py, 64 connections) against an nginx
model stand-in, through `driftgate serve` with workers: 1 and workers: 2, interleaved round by
round. Nothing is pinned: the workers need every core there is, and on a small machine they
share them with wrk and the model - the table says what this machine allows, with its CPU
count. CPU per request counts every process of the gateway (supervisor, workers, monitor).

    python benchmarks/workers.py [--seconds 8] [--rounds 3] [--out benchmarks/results/workers.md]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import (  # noqa: E402
    Process,
    cpu_seconds,
    emit,
    free_port,
    machine_line,
    nginx_model,
    wrk,
)
from benchmarks.proxy_overhead import ANSWER, BODY  # noqa: E402


def gateway(model_port: int, workers: int) -> tuple[Process, int]:
    port, admin = free_port(), free_port()
    cfg = Path(tempfile.mkdtemp(prefix="driftgate-workers-")) / "gateway.yaml"
    cfg.write_text(f"""
server: {{port: {port}, workers: {workers}}}
admin: {{port: {admin}}}
logging: {{format: json, access_log: {{enabled: true}}}}
upstreams:
  model: {{url: "http://127.0.0.1:{model_port}"}}
routes:
  - {{name: model, match: {{path_prefix: /}}, upstream: model}}
""")
    return Process([sys.executable, "-m", "gateway", "serve", "-c", str(cfg)], cpu=None,
                   port=port), port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model_port = free_port()
    runs: dict[int, list[dict]] = {1: [], 2: []}
    with contextlib.ExitStack() as stack:
        stack.enter_context(nginx_model(model_port, ANSWER, cpu=None))
        targets = {}
        for n in runs:
            proc, port = gateway(model_port, n)
            stack.enter_context(proc)
            targets[n] = (f"http://127.0.0.1:{port}/v1/models/churn:predict", proc.pid)
        for _ in range(args.rounds):
            for n, (url, pid) in targets.items():
                wrk(url, args.connections, 1.0, BODY, cpu=None)  # warm up
                before = cpu_seconds(pid)
                result = wrk(url, args.connections, args.seconds, BODY, cpu=None)
                runs[n].append({"rps": result.rps, "p50": result.p50_ms, "p99": result.p99_ms,
                                "errors": result.errors,
                                "cpu_us": (cpu_seconds(pid) - before) / result.requests * 1e6})
    med = {n: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99", "cpu_us")}
           | {"errors": sum(r["errors"] for r in rs)} for n, rs in runs.items()}
    lines = [f"Machine: {machine_line()}; {os.cpu_count()} CPUs shared by wrk, the nginx model "
             f"and the gateway (nothing pinned).",
             f"Load: wrk, {len(BODY)}-byte JSON POST, {args.connections} connections x "
             f"{args.seconds:g} s, {args.rounds} interleaved rounds, medians; access log on.",
             "", "| workers | req/s | p50 ms | p99 ms | gateway CPU us/req | errors |",
             "|---|---|---|---|---|---|"]
    for n, m in med.items():
        lines.append(f"| {n} | {m['rps']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f} | "
                     f"{m['cpu_us']:.0f} | {m['errors']} |")
    lines += ["", f"- 2 workers / 1 worker throughput: {med[2]['rps'] / med[1]['rps']:.2f}x"]
    emit("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
