"""Shared pieces of the benchmarks: free ports, pinned processes, nginx stand-ins, wrk runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.tools.ports import free_port, wait_port  # noqa: F401  (used by the benchmarks)

CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent


def pinned(cmd: list[str], cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if cpu is not None and shutil.which("taskset") else cmd


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children() -> dict[int, list[int]]:
    """Every process's direct children, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError):
                continue
    return children


def monitor_pids(gateway_pid: int) -> list[int]:
    """The monitor processes a `driftgate serve` process started (one, while it runs)."""
    out = []
    for child in _children().get(gateway_pid, []):
        try:
            if b"gateway.monitor.service" in Path(f"/proc/{child}/cmdline").read_bytes():
                out.append(child)
        except OSError:
            continue
    return out


def status_kb(pid: int, field: str) -> int:
    """A /proc/<pid>/status figure in kB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int, descendants: bool = True) -> float:
    """User + system CPU of a process and (by default) all its descendants (nginx workers)."""
    if not descendants:
        return sum(int(v) for v in _stat(pid)[11:13]) / CLK_TCK
    children = _children()
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += sum(int(v) for v in _stat(p)[11:15])
        except OSError:
            continue
        todo.extend(children.get(p, []))
    return total / CLK_TCK


class Process:
    """A child process that is always killed on exit."""

    def __init__(self, cmd: list[str], env: dict | None = None, cpu: str | None = None,
                 port: int | None = None, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(pinned(cmd, cpu), env={**os.environ, **(env or {})},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     cwd=cwd or ROOT)
        if port is not None:
            try:
                wait_port(port)
            except RuntimeError as exc:
                self.stop()
                raise RuntimeError(
                    f"{cmd[0]} did not start: {self.proc.stderr.read().decode()[-2000:]}") from exc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def nginx_model(port: int, body: str, cpu: str | None = "0", latency_ms: int = 0) -> Process:
    """nginx answering every request with a fixed JSON body: the fastest possible model."""
    tmp = Path(tempfile.mkdtemp(prefix="driftgate-nginx-"))
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {tmp}; keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{body}'; }}
  }}
}}
""")
    return Process([nginx_binary(), "-c", str(conf), "-e", str(tmp / "error.log")], cpu=cpu, port=port)


def nginx_proxy(port: int, upstream_port: int, cpu: str | None = "1") -> Process:
    """nginx as a plain keep-alive reverse proxy: the C baseline for the gateway."""
    tmp = Path(tempfile.mkdtemp(prefix="driftgate-nginx-proxy-"))
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp}; keepalive_requests 1000000;
  # bodies up to 1 MiB stay in memory (the default 16k spills a 30 KB request to a temp file)
  client_body_buffer_size 1m;
  upstream model {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://model; proxy_http_version 1.1;
                 proxy_set_header Connection ""; }}
  }}
}}
""")
    return Process([nginx_binary(), "-c", str(conf), "-e", str(tmp / "error.log")], cpu=cpu, port=port)


def uvicorn_app(module: str, env: dict[str, str], cpu: str | None) -> tuple[Process, int]:
    """An ASGI app (`module:app`) under uvicorn with uvloop + httptools, on a free port."""
    port = free_port()
    return Process([sys.executable, "-m", "uvicorn", module, "--port", str(port), "--log-level",
                    "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"],
                   env=env, cpu=cpu, port=port), port


def driftgate_process(model_port: int, monitored: bool, workdir: Path, cpu: str | None,
                      queue_size: int | None = None) -> tuple[Process, int, int]:
    """(process, port, admin port) of `driftgate serve` with one route to the model, with or
    without full monitoring against `workdir/train.csv` (gateway.tools.demo.write_baseline)."""
    from gateway.tools.demo_model import FEATURES

    port, admin = free_port(), free_port()
    monitor = ("    protocol: kserve-v1\n    monitor: {baseline: train.csv, features: ["
               + ", ".join(FEATURES) + "]}\n") if monitored else ""
    queue = f"monitoring: {{queue_size: {queue_size}}}\n" if queue_size else ""
    cfg = workdir / f"gateway-{'on' if monitored else 'off'}.yaml"
    cfg.write_text(f"""
server: {{port: {port}}}
admin: {{port: {admin}}}
logging: {{format: json}}
state_dir: {workdir / 'state'}
{queue}upstreams:
  model: {{url: "http://127.0.0.1:{model_port}"}}
routes:
  - name: churn
    match: {{path_prefix: /}}
    upstream: model
{monitor}""")
    return Process([sys.executable, "-m", "gateway", "serve", "-c", str(cfg)], cpu=cpu,
                   port=port), port, admin


def nginx_binary() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit("nginx not found: apt-get install nginx-light (or nginx)")


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, connections: int, seconds: float, body: str, cpu: str | None = "0",
        content_type: str = "application/json") -> WrkResult:
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    script = Path(tempfile.mkdtemp(prefix="driftgate-wrk-")) / "post.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "{content_type}"\n'
                      f"wrk.body = [==[{body}]==]\n")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
           "-s", str(script), url]
    out = subprocess.run(pinned(cmd, cpu),
                         capture_output=True, text=True, check=True).stdout
    errors = 0
    pattern = (r"Non-2xx or 3xx responses: (\d+)|"
               r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    for m in re.finditer(pattern, out):
        errors += sum(int(g) for g in m.groups() if g)
    return WrkResult(
        requests=int(re.search(r"(\d+) requests in", out).group(1)),
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        p50_ms=_ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
        p99_ms=_ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
        errors=errors,
    )


def emit(report: str, out: Path | None) -> None:
    """Print a benchmark's report and, with --out, write it there too."""
    print(report)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)


def machine_line() -> str:
    import platform
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"
