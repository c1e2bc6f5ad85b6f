"""Real servers for tests: uvicorn apps and the gateway on 127.0.0.1, each in its own thread."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs

import orjson
import uvicorn

from gateway.config import GatewayConfig, parse_config
from gateway.proxy.server import Gateway
from gateway.tools.ports import free_port, wait_port  # noqa: F401  (re-exported for tests)

ROOT = Path(__file__).resolve().parent.parent


class LoopThread:
    """An asyncio loop in a daemon thread, running one long-lived coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class AppServer:
    """A real uvicorn server for an ASGI app, on a free loopback port."""

    def __init__(self, app, port: int | None = None, **kwargs) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="off", http="httptools", **kwargs)
        self.server = uvicorn.Server(config)
        self.server.capture_signals = lambda: _nullcontext()  # type: ignore[method-assign]
        self._loop = LoopThread()
        self._future = asyncio.run_coroutine_threadsafe(self.server.serve(), self._loop.loop)
        wait_port(self.port)

    def stop(self) -> None:
        self.server.should_exit = True
        try:
            self._future.result(10)
        finally:
            self._loop.close()


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class GatewayServer:
    """The real gateway (proxy + admin ports) serving a config, in a thread."""

    def __init__(self, cfg: GatewayConfig | str, config_dir: Path | None = None,
                 config_path: Path | None = None) -> None:
        if isinstance(cfg, str):
            cfg = parse_config(cfg)
        self.gateway = Gateway(cfg, config_dir, config_path)
        self.url = f"http://127.0.0.1:{self.gateway.port}"
        self.admin_url = f"http://127.0.0.1:{self.gateway.admin_port}"
        self._loop = LoopThread()
        self._future = asyncio.run_coroutine_threadsafe(
            self.gateway.serve(install_signals=False), self._loop.loop)
        self._loop.run(self.gateway.started.wait())

    def stop(self) -> None:
        self._loop.loop.call_soon_threadsafe(self.gateway.stop)
        try:
            self._future.result(15)
        finally:
            self._loop.close()


def gateway_yaml(upstreams: dict[str, str], routes: list[tuple[str, str, str]], extra: str = "",
                 **upstream_opts) -> str:
    """A config with free ports: routes are (name, path_prefix, upstream)."""
    opts = "".join(f", {k}: {v}" for k, v in upstream_opts.items())
    lines = [f"server: {{port: {free_port()}}}", f"admin: {{port: {free_port()}}}",
             "logging: {format: json}", "upstreams:"]
    lines += [f"  {name}: {{url: \"{url}\"{opts}}}" for name, url in upstreams.items()]
    lines.append("routes:")
    lines += [f"  - {{name: {n}, match: {{path_prefix: \"{p}\"}}, upstream: {u}}}" for n, p, u in routes]
    return "\n".join(lines) + "\n" + extra


def churn_monitor_yaml(model_url: str, state_dir: Path, alerts: str, monitor: str = "") -> str:
    """A gateway with one monitored KServe V1 route to the demo churn model (baseline
    train.csv beside the config, every demo feature watched); `alerts` is the alerts block,
    `monitor` more keys of the route's monitor block (e.g. "window: 30s")."""
    from gateway.tools.demo_model import FEATURES

    return f"""
server: {{port: {free_port()}}}
admin: {{port: {free_port()}}}
logging: {{format: json, access_log: {{enabled: false}}}}
state_dir: {state_dir}
upstreams:
  churn-v1: {{url: "{model_url}"}}
routes:
  - name: churn
    match: {{path_prefix: /v1/models/churn}}
    upstream: churn-v1
    protocol: kserve-v1
    monitor: {{baseline: train.csv, features: [{", ".join(FEATURES)}]{", " + monitor if monitor else ""}}}
alerts:
{alerts}
"""


def run_cli(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **kwargs.pop("env", {})},
                          **kwargs)


# -- upstream apps used by the tests -----------------------------------------------------------

class Recorder:
    """A webhook receiver: keeps every JSON body it gets, with its arrival time."""

    def __init__(self) -> None:
        self.received: list[tuple[float, object]] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        self.received.append((time.time(), orjson.loads(body) if body else None))
        await _send(send, 200, b"{}")


class EchoApp:
    """Answers with what it received; a few paths behave like awkward real servers.

    /stream?n=N&delay=S  server-sent events, one event every S seconds (chunked, no length)
    /slow?delay=S        answers after S seconds
    /status/CODE         answers CODE with a JSON error body
    /binary              echoes the body back as application/octet-stream
    /close               answers with `Connection: close`
    anything else        JSON: method, path, raw_path, query, headers, body size and sha256
    """

    def __init__(self) -> None:
        self.connections: set[tuple] = set()
        self.requests = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        self.requests += 1
        self.connections.add(tuple(scope["client"]))
        body = await read_body(receive)
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        path = scope["path"]
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for i in range(int(query.get("n", 5))):
                event = f"data: token-{i} {time.time()}\n\n".encode()
                await send({"type": "http.response.body", "body": event, "more_body": True})
                await asyncio.sleep(float(query.get("delay", 0.2)))
            await send({"type": "http.response.body", "body": b""})
            return
        if path == "/slow":
            await asyncio.sleep(float(query.get("delay", 5)))
        if "/status/" in path:
            code = int(path.rsplit("/", 1)[1])
            await _send(send, code, orjson.dumps({"error": f"status {code}"}))
            return
        if path == "/binary":
            await _send(send, 200, bytes(body), b"application/octet-stream")
            return
        extra = [(b"connection", b"close")] if path == "/close" else []
        payload = {
            "method": scope["method"], "path": path, "raw_path": scope["raw_path"].decode(),
            "query": scope["query_string"].decode(),
            "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
            "body_size": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
            "body": body.decode(errors="replace")[:1000],
        }
        await _send(send, 200, orjson.dumps(payload), extra_headers=[
            (b"x-upstream-header", b"kept"), (b"keep-alive", b"timeout=5"), *extra])


async def read_body(receive) -> bytes:
    """The whole request body of an ASGI exchange."""
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def _send(send, status: int, body: bytes, ctype: bytes = b"application/json",
                extra_headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", ctype), (b"content-length", str(len(body)).encode()),
        *(extra_headers or [])]})
    await send({"type": "http.response.body", "body": body})
