"""Requests that once crashed, exhausted or escaped the gateway, sent through real sockets to a
gateway process: each asserts the bound or the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from benchmarks.harness import monitor_pids, status_kb
from tests.servers import ROOT, GatewayServer, LoopThread, free_port, gateway_yaml, wait_port


class GatewayProcess:
    """`driftgate serve` as its own process (its memory is its own to measure)."""

    def __init__(self, tmp_path, upstream_url: str, extra: str = "", server: str = "") -> None:
        self.port, self.admin = free_port(), free_port()
        self.log = tmp_path / "gateway.log"
        cfg = tmp_path / "gateway.yaml"
        cfg.write_text(f"""
server: {{port: {self.port}{", " + server if server else ""}}}
admin: {{port: {self.admin}}}
logging: {{format: json, access_log: {{enabled: false}}}}
state_dir: {tmp_path / "state"}
upstreams:
  echo: {{url: "{upstream_url}"}}
routes:
  - {{name: r, match: {{path_prefix: /}}, upstream: echo, protocol: auto, monitor: {{learn: {{rows: 100}}}}}}
{extra}""")
        with open(self.log, "wb") as log:  # both streams: JSON lines, and any traceback
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config",
                                          str(cfg)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, 60)
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin}"

    def monitor_pid(self) -> int:
        pids = monitor_pids(self.proc.pid)
        assert len(pids) == 1, pids
        return pids[0]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def gateway_process(echo, tmp_path):
    gw = GatewayProcess(tmp_path, echo.url)
    yield gw
    gw.stop()


def test_decode_bombs_are_proxied_counted_and_leave_the_monitor_small(gateway_process):
    gw = gateway_process
    monitor = gw.monitor_pid()
    bombs = [
        json.dumps({"inputs": [{"name": "x", "shape": [0, 10**12], "datatype": "FP32",
                                "data": []}]}).encode(),
        json.dumps({"instances": [{f"key{i}": i} for i in range(20_000)]}).encode(),
        json.dumps({"instances": [{f"k{j}": j for j in range(5_000)} for _ in range(20)]}).encode(),
    ]
    with httpx.Client(timeout=30) as client:
        for body in bombs:
            r = client.post(f"{gw.url}/v1/models/m:predict", content=body,
                            headers={"content-type": "application/json"})
            assert r.status_code == 200  # proxied unchanged: the upstream decides
        time.sleep(2.0)  # the monitor takes its batches every 20 ms
        assert httpx.get(f"{gw.admin_url}/monitoring").json()["monitor_process"]["alive"]
    assert gw.monitor_pid() == monitor  # never restarted
    assert status_kb(monitor, "VmHWM") < 600_000  # kB: numba and the state, not the bombs


def test_a_feedback_flood_cannot_exhaust_the_proxy(gateway_process):
    """40 clients posting 8 MiB bodies at once once got the gateway OOM-killed: now bodies in
    the proxy's hands are bounded together (feedback.max_pending_bytes, 32 MiB)."""
    gw = gateway_process
    before = status_kb(gw.proc.pid, "VmRSS")
    body = os.urandom((8 << 20) - 1024)

    async def flood() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            async def one() -> int:
                try:
                    return (await client.post(f"{gw.url}/feedback", content=body)).status_code
                except httpx.HTTPError:
                    return -1  # a refusal before the body was read may reset the upload
            return await asyncio.gather(*(one() for _ in range(40)))

    statuses = asyncio.run(flood())
    peak = status_kb(gw.proc.pid, "VmHWM")
    assert set(statuses) <= {400, 503, -1}, statuses  # random bytes: 400 once read
    assert statuses.count(503) + statuses.count(-1) >= 20  # most refused unread
    assert 400 in statuses
    assert peak - before < 200_000, (before, peak)  # kB; unbounded, it took 320 MB and more
    assert httpx.post(f"{gw.url}/feedback", json={"request_id": "x", "label": 1}).status_code == 404


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _answer(s: socket.socket) -> bytes:
    """Everything the gateway sends until it closes (the sockets here ask for nothing more)."""
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


@pytest.mark.slow
def test_slow_headers_are_cut_off_and_never_crowd_out_a_normal_client(echo, tmp_path):
    gw = GatewayProcess(tmp_path, echo.url, server="header_timeout: 2s")
    slow = []
    try:
        for _ in range(1000):  # slowloris: partial headers, then nothing
            s = _connect(gw.port)
            s.sendall(b"GET /slow-loris HTTP/1.1\r\nHost: x\r\nX-A: ")
            slow.append(s)
        started = time.monotonic()
        r = httpx.get(f"{gw.url}/normal", timeout=10)
        elapsed = time.monotonic() - started
        assert r.status_code == 200 and r.json()["path"] == "/normal"
        assert elapsed < 0.25, elapsed  # a few ms here; margin for a loaded machine
        time.sleep(2.5)  # past header_timeout: the gateway has closed every slow connection
        for s in slow[:: 50]:
            s.settimeout(5)
            answer = _answer(s)
            assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer
    finally:
        for s in slow:
            s.close()
        gw.stop()


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /h HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n", 431),
    (b"GET /h HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200))
     + b"\r\n", 431),
    (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
])
def test_header_limits_answer_and_close(gateway_process, request_bytes, status):
    gw = gateway_process
    with _connect(gw.port) as s:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            s.sendall(request_bytes)
        answer = _answer(s)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert httpx.get(f"{gw.url}/after").status_code == 200
    assert status_kb(gw.proc.pid, "VmHWM") < 200_000  # kB: the 1 MiB header was never kept whole


def test_trailers_never_become_headers(gateway_process):
    gw = gateway_process
    with _connect(gw.port) as s:
        s.sendall(b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Type: application/json\r\nConnection: close\r\n\r\n"
                  b"2\r\n{}\r\n0\r\nAuthorization: Bearer stolen\r\nX-Request-ID: evil\r\n"
                  b"X-Forwarded-For: 6.6.6.6\r\n\r\n")
        answer = _answer(s)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    seen = {k: v for k, v in json.loads(body)["headers"]}
    assert "authorization" not in seen
    assert seen["x-request-id"] != "evil"
    assert "6.6.6.6" not in seen["x-forwarded-for"]


def test_connections_past_the_cap_are_refused_and_the_rest_served(echo, tmp_path):
    gw = GatewayProcess(tmp_path, echo.url, server="max_connections: 20, header_timeout: 30s")
    held = []
    try:
        with httpx.Client() as client:  # one kept-alive connection: inside the cap
            assert client.get(f"{gw.url}/first").status_code == 200
            held = [_connect(gw.port) for _ in range(19)]
            time.sleep(0.3)
            extra = _connect(gw.port)  # the 21st: accepted by the kernel, reset by the gateway
            extra.settimeout(5)
            assert _answer(extra) == b""
            extra.close()
            assert client.get(f"{gw.url}/still-served").status_code == 200
        for s in held:
            s.close()
        time.sleep(0.3)
        assert httpx.get(f"{gw.url}/after").status_code == 200
    finally:
        for s in held:
            s.close()
        gw.stop()


class RawUpstream:
    """A model server that answers every request with the same raw bytes, then closes."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.port = free_port()
        self.loop = LoopThread()
        self.server = self.loop.run(asyncio.start_server(self._serve, "127.0.0.1", self.port))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.answer)
            await writer.drain()
        writer.close()

    def stop(self) -> None:
        self.server.close()
        self.loop.close()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 600 Beyond\r\ncontent-length: 2\r\n\r\n{}",
    b"HTTP/1.1 999 Whatever\r\ncontent-length: 2\r\n\r\n{}",
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-%d: v\r\n" % i for i in range(150))
    + b"content-length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (4 << 20) + b"\r\ncontent-length: 2\r\n\r\n{}",
], ids=["600", "999", "101", "150-headers", "4MiB-header"])
def test_answers_that_break_http_or_the_limits_are_a_502(answer):
    upstream = RawUpstream(answer)
    gw = GatewayServer(gateway_yaml({"up": f"http://127.0.0.1:{upstream.port}"},
                                    [("r", "/", "up")]))
    try:
        r = httpx.get(f"{gw.url}/x", timeout=10)
        assert r.status_code == 502, r.text
        assert r.json()["error"].startswith("bad response from upstream")
        assert httpx.get(f"{gw.admin_url}/healthz").status_code == 200
    finally:
        gw.stop()
        upstream.stop()


def _code_count(admin_url: str, code: str) -> float:
    text = httpx.get(f"{admin_url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("driftgate_requests_total{") and f'code="{code}"' in line)


def test_a_client_that_leaves_frees_the_upstream_at_once(gateway_process):
    """It used to keep the upstream busy (and the exchange open) for the whole answer."""
    gw = gateway_process
    s = _connect(gw.port)
    s.sendall(b"GET /slow?delay=6 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    s.close()
    deadline = time.monotonic() + 3.0  # the upstream would answer after 6 s
    while time.monotonic() < deadline and _code_count(gw.admin_url, "499") < 1:
        time.sleep(0.1)
    assert _code_count(gw.admin_url, "499") == 1
    assert _code_count(gw.admin_url, "200") == 0


def test_an_upstream_failing_mid_body_cuts_the_answer_and_logs_one_json_line(tmp_path):
    upstream = RawUpstream(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
    gw = GatewayProcess(tmp_path, f"http://127.0.0.1:{upstream.port}")
    try:
        for _ in range(5):
            with pytest.raises(httpx.RemoteProtocolError):  # never a silently short 200
                httpx.get(f"{gw.url}/x", timeout=10)
    finally:
        gw.stop()
        upstream.stop()
    lines = gw.log.read_text().splitlines()
    assert not any("Traceback" in line for line in lines), lines
    errors = [json.loads(line) for line in lines if '"upstream error"' in line]
    assert len(errors) == 1 and errors[0]["kind"] == "reset"  # then rate-limited (5 s)


def test_a_killed_proxy_process_leaves_no_monitor_behind_and_its_state_saved(echo, tmp_path):
    """kill -9 of `serve`: the monitor child sees its stdin close, saves, and exits."""
    gw = GatewayProcess(tmp_path, echo.url)
    try:
        for i in range(20):
            httpx.post(f"{gw.url}/v1/models/m:predict", json={"instances": [[i, 2.0]]})
        monitor = gw.monitor_pid()
        time.sleep(0.5)  # the captures reach the monitor (every 20 ms)
        gw.proc.kill()
        gw.proc.wait(10)
        deadline = time.monotonic() + 15
        while os.path.exists(f"/proc/{monitor}") and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(monitor, os.WNOHANG)  # (reaped by init, not by this process)
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{monitor}") or \
            open(f"/proc/{monitor}/stat").read().split(") ", 1)[1].startswith("Z")
        assert (tmp_path / "state" / "r.inputs.learning.json").is_file()
    finally:
        gw.stop()
