"""N worker processes on one machine, answering as one gateway (`server.workers`).

The supervisor is the gateway without a public port of its own: the admin port, the config
(file watch, SIGHUP, POST /admin/reload), the monitor process and every decision that must be
taken once. It starts `server.workers` worker processes (gateway.workers.worker) that each
listen on the public port with SO_REUSEPORT, and over one channel per worker
(gateway.workers.channel):
- forwards their captures to the monitor process as they come (already framed: no re-encoding)
  and their /feedback questions, answering each on its own channel;
- sums their metric reports into one /metrics (gateway.workers.exposition);
- sends every reload, weights PUT and canary move to all of them, and catches a restarted
  worker up (config, live weights, canary positions);
- decides each canary once, on the counts all workers report;
- restarts a worker that dies (at once; backing off to 10 s while it keeps dying young), the
  others serving meanwhile; on SIGTERM / SIGINT tells every worker to drain, waits for them
  (`server.drain_timeout`), then stops the monitor process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from gateway.config import GatewayConfig
from gateway.link.frames import frame, read_frame
from gateway.link.messages import Question
from gateway.proxy.runtime import GatewayRuntime, Route
from gateway.proxy.server import Gateway
from gateway.workers.channel import FromWorker, ToWorker
from gateway.workers.exposition import FleetExposition

_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
READY_TIMEOUT = 30.0
FLUSH_TIMEOUT = 1.0
STABLE_AFTER = 30.0  # a worker that lived this long and dies is restarted at once


@dataclass(eq=False)
class WorkerHandle:
    slot: int
    proc: asyncio.subprocess.Process
    writer: asyncio.StreamWriter
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = field(default_factory=time.monotonic)
    reloads: asyncio.Queue = field(default_factory=asyncio.Queue)  # RELOADED answers
    done: asyncio.Event = field(default_factory=asyncio.Event)     # its channel closed
    flushes: dict[int, asyncio.Future] = field(default_factory=dict)  # FLUSH token -> FLUSHED

    def flushed(self, token: int) -> None:
        future = self.flushes.pop(token, None)
        if future is not None and not future.done():
            future.set_result(None)

    def send(self, kind: ToWorker, data: object = None) -> None:
        if not self.writer.is_closing():
            self.writer.write(frame(kind, data))


class _FleetCollector:
    def __init__(self, fleet: FleetExposition) -> None:
        self.fleet = fleet

    def collect(self):
        return self.fleet.collect()


class Supervisor(Gateway):
    def __init__(self, cfg: GatewayConfig, config_dir: Path | None = None,
                 config_path: Path | None = None, workers: int | None = None) -> None:
        super().__init__(cfg, config_dir, config_path, serve_proxy=False)
        self.count = workers or cfg.server.worker_count
        self.workers: dict[int, WorkerHandle] = {}
        self.fleet = FleetExposition(lambda: self.runtime.metrics.registry)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_FleetCollector(self.fleet))
        self._stop = asyncio.Event()
        self._restart_delay: dict[int, float] = {}
        self._flush_token = 0
        self._restarts: dict[int, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self.runtime.on_canary = self._canary_moved

    # -- serving -------------------------------------------------------------------------
    async def serve(self, install_signals: bool = True) -> None:
        watcher = await self._begin(install_signals)
        admin_task = asyncio.create_task(self._admin_server.serve(sockets=[self.admin_socket]))
        await asyncio.gather(*(self._spawn(slot) for slot in range(self.count)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(
                *(w.ready.wait() for w in self.workers.values())), READY_TIMEOUT)
        while not self._admin_server.started and not admin_task.done():
            await asyncio.sleep(0.01)
        self._announce(workers=self.count)
        try:
            await self._stop.wait()
            await self._drain_workers()
            self._admin_server.should_exit = True
            await admin_task
        finally:
            if watcher is not None:
                watcher.cancel()
            for task in (*self._retiring, *self._tasks):
                task.cancel()
            await self.runtime.aclose()  # the monitor saves its state last

    def stop(self, force: bool = False) -> None:
        if self.draining and force:
            for w in self.workers.values():
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
        self.draining = True
        self._stop.set()

    async def _drain_workers(self) -> None:
        """Every worker drains at once; the monitor keeps taking their captures meanwhile."""
        for w in self.workers.values():
            w.send(ToWorker.DRAIN)
        deadline = self.cfg.server.drain_timeout + 10.0
        waits = [w.done.wait() for w in self.workers.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), deadline)
        except TimeoutError:
            self.log.warning("workers did not drain in time: killed")
            for w in self.workers.values():
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()

    # -- workers -------------------------------------------------------------------------
    async def _spawn(self, slot: int) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (_PROJECT_ROOT, os.environ.get("PYTHONPATH")) if p)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", "gateway.workers.worker", str(theirs.fileno()),
            pass_fds=(theirs.fileno(),), env=env)
        theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours, limit=1 << 30)
        handle = WorkerHandle(slot, proc, writer)
        self.workers[slot] = handle
        handle.send(ToWorker.CONFIG, (self._worker_config(), str(self.runtime.config_dir), slot))
        self._catch_up(handle)
        task = asyncio.create_task(self._listen(handle, reader))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _worker_config(self) -> str:
        """The config as workers get it: the public port the supervisor holds (a `port: 0`
        in the file would give every worker a port of its own)."""
        server = self.cfg.server.model_copy(update={"port": self.port})
        return self.cfg.model_copy(update={"server": server}).model_dump_json(by_alias=True)

    def _catch_up(self, handle: WorkerHandle) -> None:
        """A (re)started worker gets the fleet's live weights and canary positions."""
        for route in self.runtime.routes:
            if route.splitter is not None and route.canary is None:
                handle.send(ToWorker.WEIGHTS, (route.name, dict(zip(route.splitter.names,
                                                                     route.splitter.weights))))
            if route.canary is not None:
                handle.send(ToWorker.CANARY, (route.name, route.canary.position()))

    async def _listen(self, w: WorkerHandle, reader: asyncio.StreamReader) -> None:
        handlers = {FromWorker.READY: lambda pid: w.ready.set(),
                    FromWorker.CAPTURES: self._on_captures,
                    FromWorker.ASK: lambda data: self._answer(w, data),
                    FromWorker.METRICS: lambda families: self.fleet.report(w.slot, families),
                    FromWorker.CANARY: self._on_canary_tally,
                    FromWorker.RELOADED: w.reloads.put_nowait,
                    FromWorker.FLUSHED: w.flushed}
        while (message := await read_frame(reader)) is not None:
            kind, data = message
            handlers[kind](data)
        code = await w.proc.wait()
        w.done.set()
        self.fleet.retire(w.slot)
        if self.draining:
            return
        lived = time.monotonic() - w.started_at
        delay = 0.1 if lived > STABLE_AFTER else min(10.0, self._restart_delay.get(w.slot, 0.05) * 2)
        self._restart_delay[w.slot] = delay
        self._restarts[w.slot] = self._restarts.get(w.slot, 0) + 1
        self.log.error("worker exited; starting it again", worker=w.slot, code=code, in_s=delay)
        await asyncio.sleep(delay)
        if not self.draining:
            await self._spawn(w.slot)

    def _on_captures(self, data: tuple[int, bytes]) -> None:
        count, framed = data
        monitor = self.runtime.monitor
        if monitor is not None:
            monitor.forward(count, framed)
        else:  # no route is monitored any more (a reload): nothing to take them
            self.runtime.capture.drop(count)

    def _answer(self, w: WorkerHandle, data) -> None:
        token, question, payload = data

        async def ask() -> None:
            if question == Question.FEEDBACK:
                await self._flush_workers()
            monitor = self.runtime.monitor
            answer = (503, {"error": "monitor process unavailable: not running"}) \
                if monitor is None else await monitor.ask(question, payload)
            w.send(ToWorker.ANSWER, (token, answer))

        task = asyncio.create_task(ask())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_workers(self) -> None:
        """Every worker's queued captures to the monitor before a label is joined: its
        prediction may have been served by another worker a moment ago."""
        self._flush_token += 1
        token = self._flush_token
        loop = asyncio.get_running_loop()
        waits = []
        for w in self.workers.values():
            if w.ready.is_set() and not w.done.is_set():
                future = w.flushes[token] = loop.create_future()
                w.send(ToWorker.FLUSH, token)
                waits.append(future)
        try:
            await asyncio.wait_for(asyncio.gather(*waits), FLUSH_TIMEOUT)
        except TimeoutError:  # a stuck worker must not hold labels up: join what is there
            pass
        finally:
            for w in self.workers.values():
                w.flushes.pop(token, None)

    def _on_canary_tally(self, tallies: dict[str, tuple]) -> None:
        for name, tally in tallies.items():
            route = self.runtime.route(name)
            if route is not None and route.canary is not None:
                route.canary.add_tally(tally)

    def _canary_moved(self, route: Route) -> None:
        assert route.canary is not None
        self._broadcast(ToWorker.CANARY, (route.name, route.canary.position()))

    def _broadcast(self, kind: ToWorker, data: object = None) -> None:
        for w in self.workers.values():
            w.send(kind, data)

    # -- steering ------------------------------------------------------------------------
    async def reload(self, source: str, who: str = "local") -> tuple[bool, str]:
        """Reload here first (validation, the monitor's hand-over), then in every worker;
        answers once each live worker has swapped (or said why it could not)."""
        ok, message = await super().reload(source, who)
        if not ok:
            return ok, message
        live = [w for w in self.workers.values() if not w.done.is_set()]
        for w in live:
            while not w.reloads.empty():
                w.reloads.get_nowait()
            w.send(ToWorker.CONFIG, (self._worker_config(), str(self.runtime.config_dir), w.slot))
        failed = []
        for w in live:
            try:
                done, why = await asyncio.wait_for(w.reloads.get(), 15.0)
            except TimeoutError:
                done, why = False, "no answer in 15 s"
            if not done:
                failed.append(f"worker {w.slot}: {why}")
        if failed:
            return False, "reloaded here, but not in every worker: " + "; ".join(failed)
        return True, message

    def _next_runtime(self, cfg: GatewayConfig) -> GatewayRuntime:
        runtime = super()._next_runtime(cfg)
        runtime.on_canary = self._canary_moved
        return runtime

    def set_weights(self, route, weights: dict[str, float]) -> tuple[dict, dict]:
        before, after = self.runtime.set_weights(route, weights)
        self._broadcast(ToWorker.WEIGHTS, (route.name, dict(zip(route.splitter.names,
                                                                 route.splitter.weights))))
        return before, after

    def describe_workers(self) -> list[dict]:
        now = time.monotonic()
        return [{"worker": slot, "pid": w.proc.pid, "ready": w.ready.is_set() and not w.done.is_set(),
                 "up_s": round(now - w.started_at, 1), "restarts": self._restarts.get(slot, 0),
                 "requests": self.fleet.requests(slot)}
                for slot, w in sorted(self.workers.items())]

    def exposition(self) -> bytes:
        text = generate_latest(self.registry)
        if self.runtime.monitor is not None:
            text += self.runtime.monitor.metrics_text
        return text
