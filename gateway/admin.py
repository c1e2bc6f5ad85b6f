"""The admin app (its own port): /metrics for Prometheus, /healthz and /readyz for orchestrators,
/monitoring and /experiments for people and dashboards, /admin/* to steer."""

from __future__ import annotations

import hmac
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

    async def experiments(request: Request) -> Response:
        """The A/B report of every split route, or of one (`/experiments/{route}`)."""
        link = gw.runtime.monitor
        route = request.path_params.get("route")
        if link is None:
            return JSONResponse({"error": "no experiments: no route has a split or a monitor"},
                                status_code=404)
        status, body = await link.ask("experiments", route)
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                        media_type="application/json")

    async def experiment_reset(request: Request) -> Response:
        """Start a route's experiment over; an admin write (bearer token), audited."""
        if (denied := authorize(request)) is not None:
            return denied
        link = gw.runtime.monitor
        route = request.path_params["route"]
        if link is None:
            return JSONResponse({"error": f"no experiment for route {route!r}"}, status_code=404)
        status, body = await link.ask("reset_experiment", route)
        if status == 200:
            gw.runtime.log.info("audit", action="reset experiment", route=route, who=who(request))
        return JSONResponse(body, status_code=status)

    def authorize(request: Request) -> Response | None:
        """Admin writes need `Authorization: Bearer <admin.token>`; none configured: 403."""
        token = gw.runtime.cfg.admin.token
        if not token:
            return JSONResponse({"error": "admin writes are disabled: set admin.token"},
                                status_code=403)
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                headers={"www-authenticate": "Bearer"})
        return None

    def who(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    async def admin_routes(request: Request) -> Response:
        return JSONResponse({"routes": gw.runtime.describe_routes()})

    async def admin_reload(request: Request) -> Response:
        if (denied := authorize(request)) is not None:
            return denied
        ok, message = await gw.reload("POST /admin/reload", who=who(request))
        return JSONResponse({"reloaded": ok, "message": message}, status_code=200 if ok else 400)

    async def admin_weights(request: Request) -> Response:
        if (denied := authorize(request)) is not None:
            return denied
        rt = gw.runtime
        route = rt.route(request.path_params["route"])
        if route is None:
            return JSONResponse({"error": f"no route {request.path_params['route']!r}"},
                                status_code=404)
        try:
            body = orjson.loads(await request.body())
            weights = body["weights"]
            if not isinstance(weights, dict):
                raise TypeError
            before, after = rt.set_weights(route, weights)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return JSONResponse({"error": 'body must be {"weights": {"variant": number, ...}}'},
                                status_code=400)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        rt.log.info("audit", action="set weights", route=route.name, who=who(request),
                    before=before, after=after)
        return JSONResponse({"route": route.name, "before": before, "after": after})

    return Starlette(routes=[
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/monitoring", monitoring),
        Route("/experiments", experiments),
        Route("/experiments/{route}", experiments),
        Route("/admin/experiments/{route}/reset", experiment_reset, methods=["POST"]),
        Route("/admin/routes", admin_routes),
        Route("/admin/reload", admin_reload, methods=["POST"]),
        Route("/admin/routes/{route}/weights", admin_weights, methods=["PUT"]),
    ])
