"""A worker process: the public port's proxy, one of `server.workers`, steered by the supervisor.

Started by gateway.workers.supervisor with one end of a socket pair (the channel, see
gateway.workers.channel). It binds the public port itself with SO_REUSEPORT, so the kernel
spreads new connections over the workers listening and a dead worker's port share goes to the
others at once. It serves exactly as the single-process gateway does (gateway.proxy), except:
- monitoring is relayed: its captures and /feedback questions go over the channel to the
  supervisor, which forwards them to the one monitor process (RelayLink);
- it decides nothing for the fleet: canaries only count here and follow the supervisor's
  decisions; weights and reloads come from the supervisor;
- it reports its metric families and canary counts every REPORT_EVERY seconds.
SIGTERM / SIGINT, DRAIN, or the channel closing (the supervisor is gone) make it drain and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.link.frames import frame, read_frame
from gateway.link.messages import Question, ToMonitor, captures_to_columns
from gateway.link.proxy_end import FLUSH_EVERY, MAX_BUFFER, MAX_QUESTIONS
from gateway.link.queue import CaptureQueue
from gateway.logs import configure_logging, get_logger
from gateway.proxy.app import ProxyApp
from gateway.proxy.protocol import guarded_protocol
from gateway.proxy.runtime import GatewayRuntime
from gateway.proxy.server import RuntimeHolder, _Server, _uvicorn_config, bind_socket, client_limits
from gateway.workers.channel import REPORT_EVERY, FromWorker, ToWorker


class Channel:
    """Frames to and from the supervisor over this worker's end of the socket pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, kind: FromWorker, data: object = None) -> None:
        if not self.writer.is_closing():
            self.writer.write(frame(kind, data))

    @property
    def backlog(self) -> int:
        return self.writer.transport.get_write_buffer_size()


class RelayLink:
    """Monitoring as the proxy sees it (the face of gateway.link.proxy_end.MonitorLink), relayed
    through the supervisor to the machine's one monitor process."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.queue: CaptureQueue | None = None
        self.snapshot: dict = {}
        self.metrics_text = b""
        self._flusher: asyncio.Task | None = None
        self._questions: dict[int, asyncio.Future] = {}
        self._next_token = 0

    def bind(self, cfg: GatewayConfig, config_dir: Path, queue: CaptureQueue) -> RelayLink:
        """GatewayRuntime's link factory: one relay for every runtime a reload builds."""
        self.queue = queue
        return self

    @property
    def alive(self) -> bool:
        return not self.channel.writer.is_closing()

    async def start(self, wait: bool = True, timeout: float = 30.0) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            self.flush()

    def flush(self) -> None:
        queue = self.queue
        if queue is None or not queue.items:
            return
        items = queue.drain()
        if not self.alive or self.channel.backlog > MAX_BUFFER:
            queue.drop(len(items))
            return
        # framed here for the monitor: the supervisor forwards the bytes as they are
        data = frame(ToMonitor.CAPTURES, captures_to_columns(items))
        self.channel.send(FromWorker.CAPTURES, (len(items), data))

    async def ask(self, question: Question, data: object = None,
                  timeout: float = 10.0) -> tuple[int, dict]:
        if not self.alive:
            return 503, {"error": "monitor process unavailable: the supervisor is gone"}
        if len(self._questions) >= MAX_QUESTIONS or self.channel.backlog > MAX_BUFFER:
            return 503, {"error": "monitor process busy: too many questions waiting, retry"}
        self.flush()  # this worker's captures first: a label can follow its prediction
        self._next_token += 1
        token = self._next_token
        future = self._questions[token] = asyncio.get_running_loop().create_future()
        self.channel.send(FromWorker.ASK, (token, question, data))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return 503, {"error": "monitor process unavailable: no answer in time"}
        finally:
            self._questions.pop(token, None)

    def answer(self, token: int, answer: tuple[int, dict]) -> None:
        future = self._questions.pop(token, None)
        if future is not None and not future.done():
            future.set_result(answer)

    async def stop(self, timeout: float = 15.0) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        self.flush()


class Worker(RuntimeHolder):
    def __init__(self, cfg: GatewayConfig, config_dir: Path, index: int,
                 channel: Channel) -> None:
        self.cfg = cfg
        self.config_dir = config_dir
        self.index = index
        self.channel = channel
        self.log = get_logger().bind(worker=index)
        self.relay = RelayLink(channel)
        self.runtime = self._runtime(cfg, None)
        self.proxy = ProxyApp(self.runtime)
        self._retiring: set[asyncio.Task] = set()
        self.socket = bind_socket(cfg.server.host, cfg.server.port, "server", reuseport=True)
        protocol = guarded_protocol(client_limits(cfg.server))
        self.server = _Server(_uvicorn_config(self.proxy, cfg, protocol, cfg.server.keep_alive))
        self.handlers = {ToWorker.CONFIG: self._on_config, ToWorker.WEIGHTS: self._on_weights,
                         ToWorker.CANARY: self._on_canary, ToWorker.ANSWER: self._on_answer,
                         ToWorker.DRAIN: self._on_drain, ToWorker.FLUSH: self._on_flush}

    def _runtime(self, cfg: GatewayConfig, previous: GatewayRuntime | None) -> GatewayRuntime:
        return GatewayRuntime(cfg, previous.metrics if previous else None, self.config_dir,
                              previous=previous, link=self.relay.bind, decides_canary=False)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_drain, None)
        await self.runtime.start()
        served = asyncio.create_task(self.server.serve(sockets=[self.socket]))
        while not self.server.started and not served.done():
            await asyncio.sleep(0.01)
        self.channel.send(FromWorker.READY, os.getpid())
        listener = asyncio.create_task(self._listen())
        reporter = asyncio.create_task(self._report_loop())
        try:
            await served
        finally:
            reporter.cancel()
            for task in self._retiring:
                task.cancel()
            self.proxy.close()
            await self.runtime.aclose()  # the relay ships the last captures
            self._report()
            with contextlib.suppress(ConnectionError):
                await self.channel.writer.drain()
            listener.cancel()

    async def _listen(self) -> None:
        while (message := await read_frame(self.channel.reader)) is not None:
            kind, data = message
            handler = self.handlers[kind]
            if asyncio.iscoroutinefunction(handler):
                await handler(data)
            else:
                handler(data)
        self.log.warning("supervisor gone: draining")
        self._on_drain(None)

    async def _on_config(self, data) -> None:
        cfg_json, _, _ = data
        try:
            cfg = GatewayConfig.model_validate_json(cfg_json)
            runtime = self._runtime(cfg, self.runtime)
            await runtime.start()
        except Exception as exc:  # validated by the supervisor: only a local failure lands here
            self.log.error("config reload failed in a worker", error=str(exc))
            self.channel.send(FromWorker.RELOADED, (False, str(exc)))
            return
        await self._swap(runtime)
        self.cfg = cfg
        self.channel.send(FromWorker.RELOADED, (True, "reloaded"))

    def _on_weights(self, data) -> None:
        name, weights = data
        route = self.runtime.route(name)
        if route is not None and route.splitter is not None:
            self.runtime.set_weights(route, weights)

    def _on_canary(self, data) -> None:
        name, position = data
        route = self.runtime.route(name)
        if route is not None and route.canary is not None:
            route.canary.follow(position, time.monotonic())
            self.runtime.apply_canary(route)

    def _on_answer(self, data) -> None:
        token, answer = data
        self.relay.answer(token, answer)

    def _on_flush(self, token: int) -> None:
        self.relay.flush()
        self.channel.send(FromWorker.FLUSHED, token)

    def _on_drain(self, _) -> None:
        self.server.should_exit = True

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY)
            self._report()

    def _report(self) -> None:
        """Running totals of every family, and each canary's counts since the last report."""
        self.channel.send(FromWorker.METRICS, list(self.runtime.metrics.registry.collect()))
        tallies = {r.name: r.canary.take_tally() for r in self.runtime.routes
                   if r.canary is not None}
        if tallies:
            self.channel.send(FromWorker.CANARY, tallies)


async def _main(channel_fd: int) -> int:
    sock = socket.socket(fileno=channel_fd)
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 30)
    first = await read_frame(reader)
    if first is None or first[0] != ToWorker.CONFIG:
        return 2
    cfg_json, config_dir, index = first[1]
    cfg = GatewayConfig.model_validate_json(cfg_json)
    configure_logging(cfg.logging.level, cfg.logging.format)
    worker = Worker(cfg, Path(config_dir), index, Channel(reader, writer))
    await worker.serve()
    return 0


if __name__ == "__main__":
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    with runner:
        sys.exit(runner.run(_main(int(sys.argv[1]))))
