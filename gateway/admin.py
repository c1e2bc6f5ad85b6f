"""The admin app (its own port): /metrics for Prometheus, /healthz and /readyz for orchestrators."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import gateway

if TYPE_CHECKING:
    from gateway.server import Gateway


def build_admin_app(gw: Gateway) -> Starlette:
    async def metrics(request: Request) -> Response:
        text = generate_latest(gw.runtime.metrics.registry)
        if gw.runtime.monitor is not None:  # the monitor process's families, as of its last round
            text += gw.runtime.monitor.metrics_text
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive", "version": gateway.__version__})

    async def readyz(request: Request) -> Response:
        if gw.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        unready = gw.runtime.unready_routes()
        if unready:
            return JSONResponse({"status": "unready", "routes_without_upstream": unready},
                                status_code=503)
        return JSONResponse({"status": "ready", "routes": [r.name for r in gw.runtime.routes]})

    async def monitoring(request: Request) -> Response:
        """Every monitored route x variant: windows, measures, flags, histograms, alerts."""
        link = gw.runtime.monitor
        body = {"monitored_routes": sorted(gw.runtime.monitored),
                "monitor_process": {"alive": link is not None and link.alive},
                "queue": {"waiting": len(gw.runtime.capture.items),
                          "capacity": gw.runtime.capture.size},
                **(link.snapshot if link is not None else {})}
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")

    return Starlette(routes=[
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/monitoring", monitoring),
    ])
