"""The monitor process: captures in on stdin, metrics and /monitoring snapshots out on stdout.

Started by gateway.link.proxy_end with the gateway's config. Decoding payloads and updating
statistics cost tens of microseconds of Python per request; in their own process they never
take the proxy's GIL or core. The messages are gateway.link.messages'. The process:
- builds its live objects from the config in one place (`build`);
- decodes and ingests captures as they come (gateway.monitor.core), keeps predictions for their
  labels (gateway.experiments.feedback) and each route's experiment (gateway.experiments.book);
- answers questions (feedback, experiments, reset) by a handler table;
- every `alerts.evaluate_every` runs the evaluator (gauges, alert rules, sinks) and sends back
  the exposition text and the /monitoring snapshot;
- saves state every `monitoring.persist_every` and when told to stop.
Logs go to stderr (stdout carries frames).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

from prometheus_client import generate_latest

from gateway.alerts.sinks import Dispatcher
from gateway.config import GatewayConfig
from gateway.experiments.book import RouteExperiment
from gateway.experiments.feedback import FeedbackDesk
from gateway.link.frames import frame, read_frame
from gateway.link.messages import FromMonitor, Question, ToMonitor, captures_from_columns
from gateway.logs import configure_logging, get_logger
from gateway.monitor.core import MonitorCore, RouteMonitor
from gateway.monitor.evaluator import Evaluator
from gateway.monitor.metrics import MonitorMetrics
from gateway.state_files import load_or_set_aside


def admin_url(host: str, port: int) -> str:
    """How alerts link back to the admin port when `alerts.external_url` is not set."""
    if host in ("", "0.0.0.0", "::"):  # a wildcard bind: name the machine instead
        host = socket.gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def alerts_path(state_dir: Path) -> Path:
    return state_dir / "alerts.json"


def build(cfg: GatewayConfig, config_dir: Path):
    state_dir = cfg.state_path(config_dir)
    metrics = MonitorMetrics()
    monitors = {}
    experiments = {}
    for rc in cfg.routes:
        if rc.captures:
            exp = experiments[rc.name] = RouteExperiment(rc, state_dir)
            load_or_set_aside(exp.path, exp.load, exp.reset)
        if rc.monitor is not None:
            mon = RouteMonitor(rc, state_dir, config_dir)
            for side in ("inputs", "outputs"):
                for variant in rc.variant_names:
                    mon.model(side, variant)  # brings back persisted state now
            monitors[rc.name] = mon
    external = cfg.alerts.external_url or admin_url(cfg.admin.host, cfg.admin.port)
    dispatcher = Dispatcher(cfg.alerts.sinks, metrics, external, cfg.alerts.runbook_url,
                            cfg.alerts.evaluate_every)
    unjoinable = [rc.name for rc in cfg.routes if rc.captures and rc.monitor is None]
    desk = FeedbackDesk(cfg.feedback, experiments, metrics, state_dir / "predictions.npz",
                        unjoinable) if cfg.feedback.enabled else None
    evaluator = Evaluator(cfg, monitors, metrics, dispatcher, experiments)
    load_or_set_aside(alerts_path(state_dir), lambda: evaluator.load(alerts_path(state_dir)))
    return MonitorCore(monitors, metrics, experiments, desk), evaluator, dispatcher, metrics


class MonitorService:
    """The monitor process's loop: frames in, handled by kind; a cadence for evaluation."""

    def __init__(self, cfg: GatewayConfig, config_dir: Path, out) -> None:
        self.cfg = cfg
        self.out = out
        self.log = get_logger()
        self.core, self.evaluator, self.dispatcher, self.metrics = build(cfg, config_dir)
        self.state_dir = cfg.state_path(config_dir)
        self.questions = {Question.FEEDBACK: self._feedback,
                          Question.EXPERIMENTS: self._experiments,
                          Question.RESET_EXPERIMENT: self._reset_experiment}

    def send(self, kind: FromMonitor, data: object = None) -> None:
        try:
            self.out.write(frame(kind, data))
            self.out.flush()
        except BrokenPipeError:  # the proxy process is gone: this one is saving and leaving
            pass

    async def run(self, reader: asyncio.StreamReader) -> None:
        await self.dispatcher.start()
        self.send(FromMonitor.READY, os.getpid())
        handlers = {ToMonitor.CAPTURES: self._captures, ToMonitor.ASK: self._ask}
        ticker = asyncio.create_task(self._cadence())
        while (message := await read_frame(reader)) is not None and message[0] != ToMonitor.STOP:
            kind, data = message
            handlers[kind](data)
        ticker.cancel()
        self.core.persist()  # labels for answers given before a restart still find them
        self._evaluate(time.time())
        self._save_alerts()
        await self.dispatcher.aclose()
        self.send(FromMonitor.STOPPED)

    def _evaluate(self, now: float) -> None:
        self.evaluator.run(now)
        if self.evaluator.changed:  # an alert fired or resolved: a crash must not repeat it
            self._save_alerts()
        self.send(FromMonitor.METRICS, generate_latest(self.metrics.registry))
        self.send(FromMonitor.SNAPSHOT, self.evaluator.snapshot())

    async def _cadence(self) -> None:
        next_persist = time.time() + self.cfg.monitoring.persist_every
        while True:
            await asyncio.sleep(self.cfg.alerts.evaluate_every)
            now = time.time()
            try:
                self._evaluate(now)
                if now >= next_persist:
                    next_persist = now + self.cfg.monitoring.persist_every
                    self.core.persist()
                    self._save_alerts()
            except Exception:  # keep monitoring whatever one round hit
                self.log.exception("evaluation failed")

    def _save_alerts(self) -> None:
        try:
            self.evaluator.save(alerts_path(self.state_dir))
        except OSError as exc:
            self.log.warning("cannot save the firing alerts", error=str(exc))

    def _captures(self, columns: tuple) -> None:
        captures = captures_from_columns(columns)
        try:
            self.core.process(captures)
        except Exception:
            self.log.exception("monitor batch failed", captures=len(captures))

    def _ask(self, data: tuple[int, Question, object]) -> None:
        token, question, payload = data
        try:
            answer = self.questions[question](payload, time.time())
        except Exception as exc:
            self.log.exception("question failed", question=question.value)
            answer = (500, {"error": f"monitor could not answer: {exc}"})
        self.send(FromMonitor.ANSWER, (token, answer))

    # -- questions: (HTTP status, JSON body) -------------------------------------------------
    def _feedback(self, body: bytes, now: float) -> tuple[int, dict]:
        if self.core.desk is None:
            return 404, {"error": "feedback is disabled (feedback.enabled: false)"}
        return self.core.desk.handle(body, now)

    def _experiments(self, route: str | None, now: float) -> tuple[int, dict]:
        experiments = self.core.experiments
        if route is None:
            return 200, {"experiments": [e.report(now) for e in experiments.values()
                                         if len(e.variants) > 1]}
        exp = experiments.get(route)
        return (200, exp.report(now)) if exp is not None else self._no_experiment(route)

    def _reset_experiment(self, route: str, now: float) -> tuple[int, dict]:
        exp = self.core.experiments.get(route)
        if exp is None:
            return self._no_experiment(route)
        exp.reset()
        exp.save()
        return 200, {"route": route, "reset": True, "since": exp.started_at}

    def _no_experiment(self, route: str) -> tuple[int, dict]:
        return 404, {"error": f"no experiment for route {route!r}",
                     "routes": sorted(self.core.experiments)}


async def serve() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    first = await read_frame(reader)
    if first is None or first[0] != ToMonitor.CONFIG:
        return 1
    cfg_json, config_dir = first[1]
    cfg = GatewayConfig.model_validate_json(cfg_json)
    configure_logging(cfg.logging.level, cfg.logging.format, stream=sys.stderr)
    await MonitorService(cfg, Path(config_dir), sys.stdout.buffer).run(reader)
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
    # The proxy process owns this one's life: a Ctrl-C or a SIGTERM sent to the whole process
    # group (a terminal, systemd's default KillMode) must not kill it before it has saved its
    # state. It stops on STOP, or when its stdin closes because the proxy process is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with runner:
        return runner.run(serve())


if __name__ == "__main__":
    raise SystemExit(main())
