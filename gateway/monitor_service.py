"""The monitor process: captures in on stdin, metrics and /monitoring snapshots out on stdout.

Started by gateway.monitor_link with the gateway's config. Decoding payloads and updating
statistics cost tens of microseconds of Python per request; in their own process they never
take the proxy's GIL or core. The process:
- reads frames: ("config", (config JSON, config dir)), ("captures", [...]), ("stop", None),
  and questions ("ask", (token, kind, data)) it answers with ("answer", (token, result)):
  kind "feedback" (a POST /feedback body), "experiments" (a route name or None) and
  "reset_experiment" (a route name);
- decodes and ingests captures as they come (gateway.monitor.MonitorCore), keeps predictions
  for their labels (gateway.feedback) and each route's experiment (gateway.experiment_book);
- every `alerts.evaluate_every` runs the evaluator (gauges, alert rules, sinks) and sends back
  ("metrics", exposition text) and ("snapshot", /monitoring JSON);
- saves state every `monitoring.persist_every` and when told to stop, then ("stopped", None).
Logs go to stderr (stdout carries frames).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from prometheus_client import generate_latest

from gateway.config import GatewayConfig
from gateway.evaluator import Evaluator
from gateway.experiment_book import RouteExperiment
from gateway.feedback import FeedbackDesk
from gateway.frames import frame, read_frame
from gateway.logs import configure_logging, get_logger
from gateway.metrics import MonitorMetrics
from gateway.monitor import MonitorCore, RouteMonitor
from gateway.sinks import Dispatcher


def build(cfg: GatewayConfig, config_dir: Path):
    state_dir = cfg.state_path(config_dir)
    metrics = MonitorMetrics()
    monitors = {}
    experiments = {}
    for rc in cfg.routes:
        if rc.captures:
            exp = experiments[rc.name] = RouteExperiment(rc, state_dir)
            exp.load()
        if rc.monitor is not None:
            mon = RouteMonitor(rc, state_dir, config_dir)
            for side in ("inputs", "outputs"):
                for variant in rc.variant_names:
                    mon.model(side, variant)  # brings back persisted state now
            monitors[rc.name] = mon
    admin = f"http://{cfg.admin.host}:{cfg.admin.port}/monitoring"
    dispatcher = Dispatcher(cfg.alerts.sinks, metrics, admin)
    desk = FeedbackDesk(cfg.feedback, experiments, metrics, state_dir / "predictions.npz") \
        if cfg.feedback.enabled else None
    evaluator = Evaluator(cfg, monitors, metrics, dispatcher, experiments)
    return MonitorCore(monitors, metrics, experiments, desk), evaluator, dispatcher, metrics


def answer_question(core: MonitorCore, kind: str, data) -> tuple[int, dict]:
    """(HTTP status, JSON body) for a question the gateway forwards."""
    now = time.time()
    if kind == "feedback":
        if core.desk is None:
            return 404, {"error": "feedback is disabled (feedback.enabled: false)"}
        return core.desk.handle(data, now)
    if kind not in ("experiments", "reset_experiment"):
        return 400, {"error": f"unknown question {kind!r}"}
    if kind == "experiments" and data is None:
        return 200, {"experiments": [e.report(now) for e in core.experiments.values()
                                     if len(e.variants) > 1]}
    exp = core.experiments.get(data)
    if exp is None:
        return 404, {"error": f"no experiment for route {data!r}",
                     "routes": sorted(core.experiments)}
    if kind == "experiments":
        return 200, exp.report(now)
    exp.reset()
    exp.save()
    return 200, {"route": data, "reset": True, "since": exp.started_at}


async def serve() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    out = sys.stdout.buffer

    def send(kind: str, data: object = None) -> None:
        out.write(frame(kind, data))
        out.flush()

    first = await read_frame(reader)
    if first is None or first[0] != "config":
        return 1
    cfg_json, config_dir = first[1]
    cfg = GatewayConfig.model_validate_json(cfg_json)
    configure_logging(cfg.logging.level, cfg.logging.format, stream=sys.stderr)
    log = get_logger()
    core, evaluator, dispatcher, metrics = build(cfg, Path(config_dir))
    await dispatcher.start()
    send("ready", os.getpid())

    async def cadence() -> None:
        next_persist = time.time() + cfg.monitoring.persist_every
        while True:
            await asyncio.sleep(cfg.alerts.evaluate_every)
            now = time.time()
            try:
                evaluator.run(now)
                send("metrics", generate_latest(metrics.registry))
                send("snapshot", evaluator.snapshot())
                if now >= next_persist:
                    next_persist = now + cfg.monitoring.persist_every
                    core.persist()
            except Exception:  # keep monitoring whatever one round hit
                log.exception("evaluation failed")

    ticker = asyncio.create_task(cadence())
    while True:
        message = await read_frame(reader)
        if message is None or message[0] == "stop":
            break
        if message[0] == "captures":
            try:
                core.process(message[1])
            except Exception:
                log.exception("monitor batch failed", captures=len(message[1]))
        elif message[0] == "ask":
            token, kind, data = message[1]
            try:
                answer = answer_question(core, kind, data)
            except Exception as exc:
                log.exception("question failed", kind=kind)
                answer = (500, {"error": f"monitor could not answer: {exc}"})
            send("answer", (token, answer))
    ticker.cancel()
    core.persist()  # labels for answers given before a restart still find them
    evaluator.run(time.time())
    send("metrics", generate_latest(metrics.registry))
    send("snapshot", evaluator.snapshot())
    await dispatcher.aclose()
    send("stopped")
    return 0


def main() -> int:
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    if hasattr(os, "sched_setaffinity"):
        # Started from a pinned gateway, the monitor may still run on any core that is free.
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    with runner:
        return runner.run(serve())


if __name__ == "__main__":
    raise SystemExit(main())
