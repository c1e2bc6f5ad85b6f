"""What joint drift costs the monitor process: CPU per row with `monitor.joint` on vs off.

The monitor's real ingest path (gateway.monitor.core.MonitorCore.process: decode KServe V1
JSON bodies, windows, and with joint drift on the projection of every complete row onto 32
directions and its own window) on batches of captures of 4-row requests with 20 numeric
features, the two configurations interleaved round by round in one process; plus one
evaluation round each (the evaluator runs every few seconds, not per row).

    .venv/bin/python benchmarks/joint_cost.py [--rounds 7] [--batch 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config import parse_config  # noqa: E402
from gateway.link.messages import Capture  # noqa: E402
from gateway.logs import configure_logging  # noqa: E402
from gateway.monitor.core import MonitorCore, RouteMonitor  # noqa: E402
from gateway.monitor.evaluator import Evaluator  # noqa: E402
from gateway.monitor.metrics import MonitorMetrics  # noqa: E402

FEATURES = 20
ROWS = 4
HEADERS = [(b"content-type", b"application/json")]


def _config(joint: bool) -> str:
    names = ", ".join(f"f{j}" for j in range(FEATURES))
    return f"""
upstreams: {{m: {{url: "http://127.0.0.1:9"}}}}
routes:
  - name: r
    match: {{path_prefix: /}}
    upstream: m
    protocol: kserve-v1
    monitor: {{learn: {{rows: 2000}}, features: [{names}], joint: {{enabled: {str(joint).lower()}}}}}
"""


def _captures(rng: np.random.Generator, n: int, at: float) -> list[Capture]:
    out = []
    for _ in range(n):
        rows = (rng.standard_normal((ROWS, FEATURES)) * 10 + 50).round(3).tolist()
        body = orjson.dumps({"instances": rows})
        answer = orjson.dumps({"predictions": rng.random(ROWS).round(3).tolist()})
        out.append(Capture("r", "m", at, b"id", 0.001, True, body, HEADERS, answer, HEADERS, 200))
    return out


def _core(joint: bool, folder: Path) -> tuple[MonitorCore, Evaluator]:
    cfg = parse_config(_config(joint), "joint_cost.yaml", config_dir=folder)
    metrics = MonitorMetrics()
    monitors = {"r": RouteMonitor(cfg.routes[0], folder / ("on" if joint else "off"), folder)}
    return MonitorCore(monitors, metrics), Evaluator(cfg, monitors, metrics, None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=200, help="captures per timed batch")
    ap.add_argument("--batches", type=int, default=20, help="batches per round")
    args = ap.parse_args()
    configure_logging("warning")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        cores = {joint: _core(joint, Path(tmp)) for joint in (False, True)}
        now = time.time()
        learn = _captures(rng, 600, now)  # 2,400 rows: the references are learned
        for core, _ in cores.values():
            core.process(learn)
        batches = [_captures(rng, args.batch, now) for _ in range(args.batches)]
        per_row: dict[bool, list[float]] = {False: [], True: []}
        evaluation: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for joint, (core, evaluator) in cores.items():
                t0 = time.process_time()
                for b in batches:
                    core.process(b)
                per_row[joint].append((time.process_time() - t0) / (
                    args.batch * args.batches * ROWS) * 1e6)
                t0 = time.process_time()
                evaluator.run(time.time())
                evaluation[joint].append((time.process_time() - t0) * 1e3)
    off, on = statistics.median(per_row[False]), statistics.median(per_row[True])
    print(f"Monitor ingest, {FEATURES} numeric features, {ROWS}-row KServe V1 requests, "
          f"batches of {args.batch} captures, {args.rounds} interleaved rounds (medians):\n")
    print("| joint drift | monitor CPU us/row | evaluation round ms |")
    print("|---|---|---|")
    print(f"| off | {off:.2f} | {statistics.median(evaluation[False]):.1f} |")
    print(f"| on (32 directions) | {on:.2f} | {statistics.median(evaluation[True]):.1f} |")
    print(f"\n- per row, on / off: {on / off:.3f}x (target <= 1.15x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
