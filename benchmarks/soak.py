"""A soak: the demo's traffic for a long time, with feedback and a reload a minute.

Starts the demo's two model servers and `driftgate serve` (its own process, so its memory is
its own) on the demo config, sends V1, V2 and MLflow traffic at `--rate` requests/s with every
answer's label posted back, and reloads the config once a minute (odd minutes: new split
weights; even minutes: a monitoring change, which replaces the monitor process). Every 10 s it
samples the resident memory of the proxy process and of the monitor process. Reports errors,
reloads, captures dropped, labels joined, and each process's memory: after the first minute
(warm), at the end, the largest, and the growth per hour of the warm part.

    python benchmarks/soak.py [--minutes 30] [--rate 150] [--out benchmarks/results/soak.md]

Exits 1 when a request or a reload failed or a capture was dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import emit, machine_line, monitor_pids, status_kb  # noqa: E402
from benchmarks.run_load import gateway_view  # noqa: E402
from gateway.tools.demo import (  # noqa: E402
    DEMO_CONFIG,
    Traffic,
    start_models,
    stop_models,
    wait_port,
    write_baseline,
)
from gateway.tools.ports import free_port  # noqa: E402

TOKEN = "soak"


def rss_mb(pid: int) -> float:
    return status_kb(pid, "VmRSS") / 1024


def config_text(ports: dict[str, int], minute: int) -> str:
    """The demo config, a token for reloads, and what minute `minute`'s reload changes."""
    text = DEMO_CONFIG.format(**ports).replace(
        f"port: {ports['admin']}}}", f"port: {ports['admin']}, token: {TOKEN}, watch_interval: 0}}")
    text = re.sub(r"^logging: .*$", "logging: {format: json, access_log: {enabled: false}}",
                  text, flags=re.M)
    if minute % 2 == 1:  # new split weights: same monitor process
        text = text.replace("weight: 50}, ", "weight: 60}, ", 1)
    elif minute:  # a monitoring change: a new monitor process behind the swap
        text = text.replace("evaluate_every: 2s", "evaluate_every: 3s")
    return text


class Soak:
    def __init__(self, workdir: Path, rate: float) -> None:
        self.workdir = workdir
        self.ports = {"port": free_port(), "admin": free_port(), "v1": free_port(),
                      "v2": free_port(), "hook": free_port()}
        self.admin_url = f"http://127.0.0.1:{self.ports['admin']}"
        self.rate = rate
        self.samples: list[tuple[float, float, float]] = []  # (t, proxy MB, monitor MB)
        self.reloads: list[bool] = []

    async def run(self, minutes: float) -> dict:
        write_baseline(self.workdir / "train.csv")
        config = self.workdir / "gateway.yaml"
        config.write_text(config_text(self.ports, 0))
        models = start_models(self.ports["v1"], self.ports["v2"])
        log = open(self.workdir / "gateway.log", "wb")
        gateway = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "-c", str(config)],
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            await asyncio.gather(*(wait_port(self.ports[k]) for k in ("v1", "v2", "port", "admin")))
            return await self._drive(gateway, config, minutes)
        finally:
            gateway.terminate()
            gateway.wait(30)
            stop_models(models)
            log.close()

    async def _drive(self, gateway: subprocess.Popen, config: Path, minutes: float) -> dict:
        url = f"http://127.0.0.1:{self.ports['port']}"
        loops = [Traffic(url, self.rate / 3, seed=s, stopping=lambda: False) for s in range(3)]
        tasks = [asyncio.create_task(t.run()) for t in loops]
        started = time.monotonic()
        minute = 0
        async with httpx.AsyncClient(timeout=30) as client:
            while (elapsed := time.monotonic() - started) < minutes * 60:
                await asyncio.sleep(10.0)
                mon = next(iter(monitor_pids(gateway.pid)), None)
                self.samples.append((elapsed, rss_mb(gateway.pid), rss_mb(mon) if mon else 0.0))
                if elapsed // 60 > minute:
                    minute = int(elapsed // 60)
                    config.write_text(config_text(self.ports, minute))
                    r = await client.post(f"{self.admin_url}/admin/reload",
                                          headers={"authorization": f"Bearer {TOKEN}"})
                    self.reloads.append(r.status_code == 200)
            for t in tasks:
                t.cancel()
            await asyncio.sleep(2.0)  # the last labels and captures reach the monitor
            view = gateway_view((await client.get(f"{self.admin_url}/metrics")).text)
        return {"sent": sum(t.sent for t in loops), "failed": sum(t.failed for t in loops),
                "labelled": sum(t.labelled for t in loops), "view": view,
                "seconds": time.monotonic() - started}


def memory_row(name: str, samples: list[tuple[float, float]]) -> str:
    warm = [(t, mb) for t, mb in samples if t >= 60] or samples
    (t0, first), (t1, last) = warm[0], warm[-1]
    per_hour = (last - first) / max(t1 - t0, 1) * 3600
    return (f"| {name} | {first:.0f} | {last:.0f} | {max(mb for _, mb in samples):.0f} | "
            f"{per_hour:+.1f} |")


def report(args, soak: Soak, result: dict) -> str:
    view = result["view"]
    lines = [
        f"Machine: {machine_line()}. {result['seconds'] / 60:.1f} minutes at ~{args.rate:g} "
        f"req/s (V1, V2 and MLflow), every answer's label posted to /feedback, a reload a "
        f"minute (odd: split weights; even: a monitoring change, new monitor process).",
        "",
        f"- requests: {result['sent']:,} sent, {result['failed']} failed",
        f"- labels posted and joined to their predictions: {result['labelled']:,}",
        f"- reloads: {sum(soak.reloads)} of {len(soak.reloads)} applied",
        f"- captures dropped: {view['dropped']:.0f}",
        "",
        "| process | RSS after 1 min (MB) | at the end (MB) | largest (MB) | growth after 1 min "
        "(MB/hour) |",
        "|---|---|---|---|---|",
        memory_row("proxy", [(t, p) for t, p, _ in soak.samples]),
        memory_row("monitor", [(t, m) for t, _, m in soak.samples]),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="driftgate-soak-") as tmp:
        soak = Soak(Path(tmp), args.rate)
        result = asyncio.run(soak.run(args.minutes))
    emit(report(args, soak, result), args.out)
    ok = result["failed"] == 0 and all(soak.reloads) and result["view"]["dropped"] == 0
    return 0 if ok and result["sent"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
