"""Latency under load: what does the gateway add in front of a 20 ms model at a steady rate?

A model stand-in that takes 20 ms per request (benchmarks/slow_model.py), and in front of it, in
one run: nothing (direct), driftgate without monitoring, driftgate with full monitoring (baseline,
drift statistics, prediction capture) and nginx as a reverse proxy. Each gets an open-loop,
constant request rate (wrk2-style: requests leave on a fixed schedule whatever the answers do,
and latency is measured from the scheduled time, so a stall is not hidden by coordinated
omission) at 50, 200 and 500 req/s. The proxies run pinned to CPU 1; model and load generator on
CPU 0. Prints percentiles, the added latency vs direct, and plots them (matplotlib, `bench`
extra) to benchmarks/results/latency_vs_load.png.

    python benchmarks/latency_under_load.py [--rates 50 200 500] [--seconds 10] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (  # noqa: E402
    Process,
    driftgate_process,
    emit,
    free_port,
    machine_line,
    nginx_proxy,
    uvicorn_app,
)
from benchmarks.proxy_overhead import BODY  # noqa: E402
from gateway.tools.demo import write_baseline  # noqa: E402

PROXY_CPU, LOAD_CPU = "1", "0"
PERCENTILES = (50, 90, 99, 99.9)
RESULTS = Path(__file__).resolve().parent / "results"


def slow_model(latency_ms: float) -> tuple[Process, int]:
    return uvicorn_app("benchmarks.slow_model:app", {"LATENCY_MS": str(latency_ms)}, LOAD_CPU)


async def constant_rate(url: str, rate: float, seconds: float, body: bytes) -> dict:
    """Open loop: request i leaves at start + i / rate; its latency counts from then."""
    loop = asyncio.get_running_loop()
    n = int(rate * seconds)
    latency = np.full(n, np.nan)
    errors = 0
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(20):  # warm: connections open, code paths hot
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
        start = loop.time() + 0.05

        async def one(i: int) -> None:
            nonlocal errors
            at = start + i / rate
            await asyncio.sleep(at - loop.time())
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latency[i] = loop.time() - at
            except aiohttp.ClientError:
                errors += 1

        gc.collect()
        gc.disable()  # a collection in the load generator would show up as everyone's tail
        try:
            await asyncio.gather(*(one(i) for i in range(n)))
        finally:
            gc.enable()
        took = loop.time() - start
    ms = latency[np.isfinite(latency)] * 1000
    return {"sent": n, "achieved": n / took, "errors": errors,
            **{f"p{p:g}": float(np.percentile(ms, p)) for p in PERCENTILES}}


def plot(results: dict[str, dict[float, dict]], rates: list[float], latency_ms: float,
         path: Path) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "(no plot: pip install -e '.[bench]' for matplotlib)"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    styles = {"direct": "k", "driftgate": "tab:blue", "driftgate+monitoring": "tab:green",
              "nginx": "tab:orange"}
    for ax, pct in zip(axes, ("p50", "p99")):
        for name, by_rate in results.items():
            ax.plot(rates, [by_rate[r][pct] for r in rates], marker="o", color=styles.get(name),
                    label=name)
        ax.set_title(f"{pct} latency, {latency_ms:g} ms model")
        ax.set_xlabel("offered load (req/s, constant rate)")
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return f"plot: {os.path.relpath(path)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[50.0, 200.0, 500.0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians reported")
    ap.add_argument("--out", type=Path, help="also write the table (markdown) here")
    ap.add_argument("--plot", type=Path, default=RESULTS / "latency_vs_load.png")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(LOAD_CPU)})  # the load generator beside the model
    workdir = Path(tempfile.mkdtemp(prefix="driftgate-latbench-"))
    write_baseline(workdir / "train.csv", seed=0)
    body = BODY.encode()
    results: dict[str, dict[float, dict]] = {}
    model, model_port = slow_model(args.latency_ms)
    procs = []
    try:
        targets = {"direct": model_port}
        for name, monitored in (("driftgate", False), ("driftgate+monitoring", True)):
            proc, port, _ = driftgate_process(model_port, monitored, workdir, PROXY_CPU)
            procs.append(proc)
            targets[name] = port
        nginx_port = free_port()
        procs.append(nginx_proxy(nginx_port, model_port, cpu=PROXY_CPU))
        targets["nginx"] = nginx_port
        runs: dict[str, dict[float, list[dict]]] = {}
        for _ in range(args.rounds):
            for rate in args.rates:  # targets interleaved at each rate
                for name, port in targets.items():
                    url = f"http://127.0.0.1:{port}/v1/models/churn:predict"
                    r = asyncio.run(constant_rate(url, rate, args.seconds, body))
                    runs.setdefault(name, {}).setdefault(rate, []).append(r)
                    print(f"{name:<22} {rate:>5g} req/s: p50 {r['p50']:.2f} ms, "
                          f"p99 {r['p99']:.2f} ms", file=sys.stderr)
                    time.sleep(0.5)
        results = {name: {rate: {k: float(np.median([r[k] for r in rs])) for k in rs[0]}
                          for rate, rs in by_rate.items()} for name, by_rate in runs.items()}
    finally:
        for proc in procs:
            proc.stop()
        model.stop()
    lines = [f"Machine: {machine_line()}. Proxies pinned to CPU {PROXY_CPU}; model stand-in "
             f"({args.latency_ms:g} ms per request) and load generator on CPU {LOAD_CPU}.",
             f"Load: open-loop constant rate (aiohttp), {len(body)}-byte KServe V1 POST, "
             f"{args.seconds:g} s per point, medians of {args.rounds} interleaved rounds; latency from "
             "each request's scheduled send time.", "",
             "| target | offered req/s | achieved | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | "
             "added p50 ms | added p99 ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for rate in args.rates:
        base = results["direct"][rate]
        for name in results:
            r = results[name][rate]
            added = ("-", "-") if name == "direct" else (f"{r['p50'] - base['p50']:+.2f}",
                                                         f"{r['p99'] - base['p99']:+.2f}")
            lines.append(f"| {name} | {rate:g} | {r['achieved']:.0f} | {r['errors']:.0f} | "
                         f"{r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | {r['p99.9']:.2f} | "
                         f"{added[0]} | {added[1]} |")
    lines.append("")
    if 200.0 in args.rates:
        added = results["driftgate+monitoring"][200.0]["p99"] - results["direct"][200.0]["p99"]
        lines.append(f"- driftgate with monitoring, added p99 at 200 req/s: {added:+.2f} ms "
                     f"(target <= 5 ms of the 100 ms real-time budget)")
    lines.append(f"- {plot(results, args.rates, args.latency_ms, args.plot)}")
    emit("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
