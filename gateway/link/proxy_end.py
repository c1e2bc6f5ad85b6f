"""The proxy's end of the pipe to the monitor process: start it, ship captures, collect its results.

Every 20 ms the capture queue goes to the monitor process as one frame over a pipe (asyncio
writes: the event loop never blocks on it). If the process falls behind by more than
`MAX_BUFFER` bytes of frames, or is gone, captures are dropped and counted, never waited for.
The process answers with Prometheus text and /monitoring snapshots, kept here for the admin app.
If it dies it is started again (state comes back from the state directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections import deque
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.link.frames import frame, read_frame
from gateway.link.messages import FromMonitor, Question, ToMonitor, captures_to_columns
from gateway.link.queue import CaptureQueue
from gateway.logs import get_logger

FLUSH_EVERY = 0.02
MAX_BUFFER = 64 << 20
MAX_QUESTIONS = 256  # questions waiting for an answer; beyond: 503 at once, nothing queued
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding gateway/


class MonitorLink:
    def __init__(self, cfg: GatewayConfig, config_dir: Path, queue: CaptureQueue) -> None:
        self.cfg = cfg
        self.config_dir = config_dir
        self.queue = queue
        self.log = get_logger()
        self.metrics_text = b""
        self.snapshot: dict = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._flusher: asyncio.Task | None = None
        self._reader: asyncio.Task | None = None  # one per process: replaced on a restart
        self._ready = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopping = False
        self._questions: dict[int, asyncio.Future] = {}
        self._spawned_at = 0.0
        self._restart_delay = 0.05
        self._next_token = 0
        self._held: deque[tuple[int, bytes]] = deque()  # forwarded frames waiting for a start
        self._held_count = 0

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self, wait: bool = True, timeout: float = 30.0) -> None:
        """Start the monitor process; with `wait`, wait for it at most `timeout`: past that
        the proxy serves anyway (captures queue, then drop and count; /feedback answers 503)
        while the process keeps being restarted."""
        await self._spawn()
        self._flusher = asyncio.create_task(self._flush_loop())
        if not wait:
            return
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            self.log.error("monitor process not ready; serving without monitoring until it is",
                           waited_s=timeout)

    async def _spawn(self) -> None:
        self._ready.clear()
        self._spawned_at = asyncio.get_running_loop().time()
        # -P: the working directory cannot shadow the project's packages (a stray stats.py);
        # PYTHONPATH: the child runs the same code as this process, installed or not.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (_PROJECT_ROOT, os.environ.get("PYTHONPATH")) if p)}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", "gateway.monitor.service", env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 30)
        cfg_json = self.cfg.model_dump_json(by_alias=True)
        self._proc.stdin.write(frame(ToMonitor.CONFIG, (cfg_json, str(self.config_dir))))
        self._reader = asyncio.create_task(self._read_loop(self._proc))

    async def _read_loop(self, proc: asyncio.subprocess.Process) -> None:
        handlers = {FromMonitor.READY: self._on_ready, FromMonitor.METRICS: self._on_metrics,
                    FromMonitor.SNAPSHOT: self._on_snapshot, FromMonitor.ANSWER: self._on_answer,
                    FromMonitor.STOPPED: self._on_stopped}
        while (message := await read_frame(proc.stdout)) is not None:
            kind, data = message
            handlers[kind](data)
        await proc.wait()
        for future in self._questions.values():  # the process that would answer is gone
            if not future.done():
                future.set_exception(ConnectionError("monitor process exited"))
        self._questions.clear()
        if not self._stopping:
            # at once after a crash; backing off (to 10 s) only while it keeps crashing early
            stable = asyncio.get_running_loop().time() - self._spawned_at > 30.0
            self._restart_delay = 0.1 if stable else min(10.0, self._restart_delay * 2)
            self.log.error("monitor process exited; starting it again", code=proc.returncode,
                           in_s=self._restart_delay)
            await asyncio.sleep(self._restart_delay)
            await self._spawn()

    def _on_ready(self, pid: int) -> None:
        self.log.info("monitor process started", pid=pid)
        self._ready.set()

    def _on_metrics(self, text: bytes) -> None:
        self.metrics_text = text

    def _on_snapshot(self, snapshot: dict) -> None:
        self.snapshot = snapshot

    def _on_answer(self, data: tuple[int, tuple[int, dict]]) -> None:
        token, answer = data
        future = self._questions.pop(token, None)
        if future is not None and not future.done():
            future.set_result(answer)

    def _on_stopped(self, _: None) -> None:
        self._stopped.set()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            self.flush()

    def flush(self) -> None:
        """Ship the queue. While the process is (re)starting the captures wait in the queue
        (bounded: `monitoring.queue_size`, beyond which offers are dropped and counted); when
        the pipe is full they are dropped and counted here."""
        if self._held and self._ready.is_set():
            self._release_held()
        if not self.queue.items or not self._ready.is_set():
            return
        items = self.queue.drain()
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin.is_closing() \
                or proc.stdin.transport.get_write_buffer_size() > MAX_BUFFER:
            self.queue.drop(len(items))
            return
        proc.stdin.write(frame(ToMonitor.CAPTURES, captures_to_columns(items)))

    def forward(self, count: int, data: bytes) -> None:
        """A worker's captures, already framed for the monitor (gateway.workers): written as
        they are; while the process (re)starts they wait as queued captures do (bounded by
        `monitoring.queue_size` captures), and are dropped and counted past that."""
        if self._ready.is_set():
            self._release_held()
        if self._writable() and not self._held:
            self._proc.stdin.write(data)
            return
        if self._ready.is_set() or self._held_count + count > self.queue.size:
            self.queue.drop(count)
            return
        self._held.append((count, data))
        self._held_count += count

    def _release_held(self) -> None:
        while self._held and self._writable():
            count, data = self._held.popleft()
            self._held_count -= count
            self._proc.stdin.write(data)

    def _writable(self) -> bool:
        proc = self._proc
        return (self._ready.is_set() and proc is not None and proc.returncode is None
                and not proc.stdin.is_closing()
                and proc.stdin.transport.get_write_buffer_size() <= MAX_BUFFER)

    async def ask(self, question: Question, data: object = None,
                  timeout: float = 10.0) -> tuple[int, dict]:
        """A question for the monitor process: (HTTP status, JSON body); 503 with the reason
        when the process is not there to answer in time. Captures queued so far are sent
        first, so a label can follow its prediction straight away."""
        if not self._ready.is_set() and not self._stopping:  # (re)starting: worth a wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout)
        proc = self._proc
        if not self._ready.is_set() or self._stopping or proc is None \
                or proc.returncode is not None or proc.stdin.is_closing():
            return 503, {"error": "monitor process unavailable: not running"}
        if len(self._questions) >= MAX_QUESTIONS or \
                proc.stdin.transport.get_write_buffer_size() > MAX_BUFFER:
            return 503, {"error": "monitor process busy: too many questions waiting, retry"}
        self.flush()
        self._next_token += 1
        token = self._next_token
        future = self._questions[token] = asyncio.get_running_loop().create_future()
        proc.stdin.write(frame(ToMonitor.ASK, (token, question, data)))
        try:
            return await asyncio.wait_for(future, timeout)
        except (TimeoutError, ConnectionError) as exc:
            return 503, {"error": f"monitor process unavailable: {exc or 'no answer in time'}"}
        finally:
            self._questions.pop(token, None)

    async def stop(self, timeout: float = 15.0) -> None:
        """Flush what is queued, let the process save its state, and wait for it."""
        self._stopping = True
        if self._flusher is not None:
            # nothing may follow STOP: a capture sent after it would be lost, not counted (the
            # queue stays to whoever flushes it next: a reload's new monitor)
            self._flusher.cancel()
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self.flush()
        proc.stdin.write(frame(ToMonitor.STOP))
        try:
            await proc.stdin.drain()
            await asyncio.wait_for(self._stopped.wait(), timeout)
            await asyncio.wait_for(proc.wait(), 5)
        except (TimeoutError, ConnectionError):
            self.log.warning("monitor process did not stop in time: killed")
            proc.kill()
        finally:
            for task in (self._flusher, self._reader):
                if task is not None:
                    task.cancel()
