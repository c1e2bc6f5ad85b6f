"""Run the gateway: the proxy and the admin app on their own ports, in one event loop.

Signals: SIGTERM or SIGINT stop accepting, /readyz turns 503, in-flight requests get up to
`server.drain_timeout` seconds to finish, then the process exits 0. A second SIGINT forces.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import signal
import socket
import sys
from pathlib import Path

import uvicorn
from prometheus_client import generate_latest

import gateway
from gateway.config import ConfigError, GatewayConfig, ServerConfig, load_config
from gateway.logs import get_logger
from gateway.proxy.admin import build_admin_app
from gateway.proxy.app import ProxyApp
from gateway.proxy.protocol import guarded_protocol
from gateway.proxy.runtime import GatewayRuntime


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: the Gateway owns signals for both."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class ListenError(OSError):
    """A listener that cannot be opened, with the address it was for."""


def bind_socket(host: str, port: int, what: str = "server",
                reuseport: bool = False) -> socket.socket:
    """A socket bound to `host:port` (uvicorn makes it listen); ListenError names the address
    and the config key. `reuseport`: workers each bind the same port and the kernel spreads
    connections over those listening (SO_REUSEPORT)."""
    try:
        return _bind(host, port, reuseport)
    except OSError as exc:
        hint = " (another process has it: pick another port)" if exc.errno == errno.EADDRINUSE \
            else ""
        raise ListenError(f"cannot listen on {host}:{port} ({what}.host / {what}.port): "
                          f"{exc.strerror or exc}{hint}") from exc


def _bind(host: str, port: int, reuseport: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto says
    # TCP; with proto 0 the response's second write waits out the client's delayed ACK (40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


# Open files kept for upstream connections, the monitor's pipes and state files when the cap on
# client connections is set from the open-files limit.
_RESERVED_FILES = 1024


def client_limits(server: ServerConfig) -> ServerConfig:
    """The server limits in force: the open-files limit raised to its hard maximum (as nginx's
    worker_rlimit_nofile or Go's runtime do), and max_connections kept below it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    cap = max(64, soft - _RESERVED_FILES) if soft > 2 * _RESERVED_FILES else soft // 2
    return server.model_copy(update={"max_connections": min(server.max_connections, cap)})


def _uvicorn_config(app, cfg: GatewayConfig, protocol: type, keep_alive: float) -> uvicorn.Config:
    return uvicorn.Config(
        app, http=protocol, loop="none", lifespan="off", access_log=False,
        server_header=False, date_header=False, proxy_headers=False, log_config=None,
        timeout_keep_alive=int(max(1, keep_alive)), backlog=2048,
        timeout_graceful_shutdown=int(cfg.server.drain_timeout) or None)


class RuntimeHolder:
    """What serves with a GatewayRuntime and swaps it on a reload: the single-process Gateway,
    and each worker process (gateway.workers.worker)."""

    runtime: GatewayRuntime
    proxy: ProxyApp | None
    _retiring: set[asyncio.Task]

    async def _swap(self, runtime: GatewayRuntime) -> GatewayRuntime:
        """Swap a started runtime in (one attribute: the next request sees it); the old one
        hands over monitoring and retires once its requests had time to finish."""
        old, self.runtime = self.runtime, runtime
        if self.proxy is not None:
            self.proxy.runtime = runtime
        await runtime.take_over_monitoring(old)
        task = asyncio.create_task(old.retire(runtime))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return old


class Gateway(RuntimeHolder):
    """A gateway built from one config; `serve()` runs it until `stop()` or a signal.

    `serve_proxy=False` (gateway.workers.supervisor): the admin port, the monitor process and
    the config only; worker processes serve the public port."""

    def __init__(self, cfg: GatewayConfig, config_dir: Path | None = None,
                 config_path: Path | None = None, serve_proxy: bool = True) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.config_dir = config_dir or (config_path.parent if config_path else None)
        self.runtime = GatewayRuntime(cfg, config_dir=self.config_dir)
        self._reload_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()
        self.draining = False
        self.log = get_logger()
        self.proxy_socket = bind_socket(cfg.server.host, cfg.server.port, "server",
                                        reuseport=not serve_proxy)
        self.admin_socket = bind_socket(cfg.admin.host, cfg.admin.port, "admin")
        protocol = guarded_protocol(client_limits(cfg.server))  # both ports, one rlimit change
        self.proxy = ProxyApp(self.runtime) if serve_proxy else None
        self._proxy_server = _Server(_uvicorn_config(self.proxy, cfg, protocol,
                                                     cfg.server.keep_alive)) if serve_proxy else None
        self._admin_server = _Server(_uvicorn_config(build_admin_app(self), cfg, protocol, 5))
        self.started = asyncio.Event()

    @property
    def port(self) -> int:
        return self.proxy_socket.getsockname()[1]

    @property
    def admin_port(self) -> int:
        return self.admin_socket.getsockname()[1]

    def _next_runtime(self, cfg: GatewayConfig) -> GatewayRuntime:
        """The runtime a reload builds from `cfg`, taking over from the current one."""
        return GatewayRuntime(cfg, self.runtime.metrics, self.config_dir, previous=self.runtime)

    def set_weights(self, route, weights: dict[str, float]) -> tuple[dict, dict]:
        """A weights PUT: (shares before, after); ValueError naming what is wrong."""
        return self.runtime.set_weights(route, weights)

    def exposition(self) -> bytes:
        """/metrics: the proxy's families, then the monitor process's as of its last round."""
        text = generate_latest(self.runtime.metrics.registry)
        if self.runtime.monitor is not None:
            text += self.runtime.monitor.metrics_text
        return text

    def describe_workers(self) -> list[dict]:
        return [{"worker": 0, "pid": os.getpid(), "ready": self.started.is_set(),
                 "restarts": 0}]

    def stop(self, force: bool = False) -> None:
        if self.draining and force:
            self._proxy_server.force_exit = self._admin_server.force_exit = True
        self.draining = True
        self._proxy_server.should_exit = True

    async def _begin(self, install_signals: bool) -> asyncio.Task | None:
        """Signals (SIGTERM/SIGINT drain, SIGHUP reloads), the runtime, and the config file's
        watcher (returned, to cancel at the end)."""
        loop = asyncio.get_running_loop()
        if install_signals:
            loop.add_signal_handler(signal.SIGTERM, self._on_signal, "SIGTERM")
            loop.add_signal_handler(signal.SIGINT, self._on_signal, "SIGINT")
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(
                self.reload("SIGHUP")))
        await self.runtime.start()
        if self.config_path is not None and self.cfg.admin.watch_interval > 0:
            return asyncio.create_task(self._watch_config())
        return None

    def _announce(self, **extra) -> None:
        """The "gateway started" line (tests and scripts read its url and admin) and the
        started event."""
        self.log.info("gateway started", version=gateway.__version__, **extra,
                      url=f"http://{self.cfg.server.host}:{self.port}",
                      admin=f"http://{self.cfg.admin.host}:{self.admin_port}",
                      routes=[r.name for r in self.runtime.routes],
                      upstreams=sorted(self.runtime.upstreams))
        self.started.set()

    async def serve(self, install_signals: bool = True) -> None:
        watcher = await self._begin(install_signals)
        proxy_task = asyncio.create_task(self._proxy_server.serve(sockets=[self.proxy_socket]))
        admin_task = asyncio.create_task(self._admin_server.serve(sockets=[self.admin_socket]))
        while not (self._proxy_server.started and self._admin_server.started):
            if proxy_task.done() or admin_task.done():
                break
            await asyncio.sleep(0.01)
        self._announce()
        try:
            await proxy_task
            # The admin port outlives the drain so /readyz can say "draining" meanwhile.
            self._admin_server.should_exit = True
            await admin_task
        finally:
            if watcher is not None:
                watcher.cancel()
            for task in self._retiring:
                task.cancel()
            if self.proxy is not None:
                self.proxy.close()
            await self.runtime.aclose()
            self.log.info("gateway stopped")

    async def reload(self, source: str, who: str = "local") -> tuple[bool, str]:
        """Validate the config file and swap it in atomically; a bad file changes nothing.

        In-flight requests finish on the runtime they started with. Listener addresses
        (server/admin host and port) need a restart: a change there is logged and ignored.
        """
        if self.config_path is None:
            return False, "this gateway was not started from a config file"
        async with self._reload_lock:
            try:
                cfg = load_config(self.config_path)
            except ConfigError as exc:
                self.log.error("config reload refused", source=source, error=str(exc))
                return False, str(exc)
            before = self.runtime.cfg
            if (cfg.server.host, cfg.server.port, cfg.admin.host, cfg.admin.port) != (
                    before.server.host, before.server.port, before.admin.host, before.admin.port):
                self.log.warning("listen addresses changed in the config: restart to apply")
            try:
                runtime = self._next_runtime(cfg)
                await runtime.start()
            except (ConfigError, OSError, ValueError) as exc:
                self.log.error("config reload failed", source=source, error=str(exc))
                return False, str(exc)
            old = await self._swap(runtime)
            self.cfg = cfg
            self.log.info("audit", action="reload", source=source, who=who,
                          before=_summary(old), after=_summary(runtime))
            return True, "reloaded"

    async def _watch_config(self) -> None:
        """Reload a changed file once it has stopped changing for one watch interval: an
        editor's or a script's partial write (truncate, write part, pause) never goes live."""
        assert self.config_path is not None
        last = self._stamp()
        changed = False
        while True:
            await asyncio.sleep(self.cfg.admin.watch_interval)
            now = self._stamp()
            if now != last:
                last, changed = now, True
            elif changed:
                changed = False
                await self.reload("file change")

    def _stamp(self) -> tuple[int, int]:
        try:
            st = self.config_path.stat() if self.config_path else None
        except OSError:
            return (0, -1)
        return (st.st_mtime_ns, st.st_size) if st else (0, -1)

    def _on_signal(self, name: str) -> None:
        self.log.info("shutdown requested", signal=name,
                      drain_timeout_s=self.cfg.server.drain_timeout)
        self.stop(force=self.draining and name == "SIGINT")


def _summary(rt: GatewayRuntime) -> dict:
    """What an audit line says a config was: each route's variants and their shares."""
    return {r["route"]: {v["name"]: v["share"] for v in r["variants"]}
            for r in rt.describe_routes()}


def run(cfg: GatewayConfig, config_dir: Path | None = None,
        config_path: Path | None = None, kind: type[Gateway] | None = None) -> int:
    """Serve until signalled, on uvloop where available. Returns the process exit code.
    `kind`: the Gateway class to run (gateway.workers.supervisor.Supervisor for workers)."""
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a Linux dependency
        runner = asyncio.Runner()
    try:
        gw = (kind or Gateway)(cfg, config_dir, config_path)
    except ListenError as exc:
        print(f"driftgate: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    with runner:
        runner.run(gw.serve())
    return 0
