"""Loopback port helpers shared by the demo, the tests and the benchmarks."""

from __future__ import annotations

import socket
import time
from collections import deque

_HANDED_OUT: deque[int] = deque(maxlen=256)


def free_port() -> int:
    """A free loopback port, never one of the last 256 handed out (the kernel may offer the
    same port twice in a row: two listeners of one config would then collide)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.append(port)
            return port


def port_or_free(preferred: int) -> int:
    """`preferred` when nothing listens there, else any free port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")
