"""A model stand-in that takes a fixed time per prediction (default 20 ms: a realistic real-time
model), answering KServe V1 with one prediction per instance. For benchmarks/latency_under_load.py.

    LATENCY_MS=20 uvicorn benchmarks.slow_model:app
"""

from __future__ import annotations

import asyncio
import os

import orjson

LATENCY = float(os.environ.get("LATENCY_MS", "20")) / 1000


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await asyncio.sleep(LATENCY)
    try:
        rows = len(orjson.loads(body).get("instances", [])) if body else 1
    except (orjson.JSONDecodeError, AttributeError):
        rows = 1
    answer = orjson.dumps({"predictions": [round(0.1 + 0.8 * (i % 7) / 7, 3) for i in range(rows)]})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})
