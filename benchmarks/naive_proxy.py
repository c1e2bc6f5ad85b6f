"""The proxy most people write first: starlette + httpx.AsyncClient, body read then posted.

Comparison target for benchmarks/proxy_overhead.py; upstream from $UPSTREAM_URL.
Run: UPSTREAM_URL=http://127.0.0.1:9001 uvicorn benchmarks.naive_proxy:app
"""

import os

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:9001")
client = httpx.AsyncClient(base_url=UPSTREAM, timeout=10.0)


async def proxy(request: Request) -> Response:
    upstream = await client.request(
        request.method, request.url.path, params=request.query_params, content=await request.body(),
        headers={"content-type": request.headers.get("content-type", "application/json")})
    return Response(upstream.content, upstream.status_code,
                    media_type=upstream.headers.get("content-type"))


app = Starlette(routes=[Route("/{path:path}", proxy, methods=["GET", "POST", "PUT", "DELETE"])])
