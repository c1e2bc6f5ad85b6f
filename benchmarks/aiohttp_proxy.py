"""A minimal raw-ASGI proxy on aiohttp's client: the fastest off-the-shelf Python client here.

Comparison target for benchmarks/proxy_overhead.py; upstream from $UPSTREAM_URL.
Run: UPSTREAM_URL=http://127.0.0.1:9001 uvicorn benchmarks.aiohttp_proxy:app
"""

import os

import aiohttp

UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:9001")
_session: aiohttp.ClientSession | None = None


async def app(scope, receive, send):
    global _session
    if scope["type"] != "http":
        return
    if _session is None:
        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100), auto_decompress=False)
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode(): v.decode() for k, v in scope["headers"] if k not in (b"host", b"connection")}
    url = UPSTREAM + scope["path"] + (("?" + scope["query_string"].decode()) if scope["query_string"] else "")
    async with _session.request(scope["method"], url, data=body, headers=headers) as resp:
        data = await resp.read()
        out = [(k.encode(), v.encode()) for k, v in resp.headers.items()
               if k.lower() not in ("transfer-encoding", "connection", "content-length")]
        await send({"type": "http.response.start", "status": resp.status, "headers": out})
        await send({"type": "http.response.body", "body": data})
