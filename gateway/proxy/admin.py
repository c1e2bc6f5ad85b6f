"""The admin app (its own port): /metrics for Prometheus, /healthz and /readyz for orchestrators,
/monitoring and /experiments for people and dashboards, /admin/* to steer."""

from __future__ import annotations

import hmac
from typing import Protocol

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import gateway
from gateway.link.messages import Question
from gateway.proxy.runtime import GatewayRuntime


class Steerable(Protocol):
    """What the admin app reads and steers: the running gateway (gateway.proxy.server)."""

    runtime: GatewayRuntime
    draining: bool

    async def reload(self, source: str, who: str = "local") -> tuple[bool, str]: ...

    def set_weights(self, route, weights: dict[str, float]) -> tuple[dict, dict]: ...

    def exposition(self) -> bytes: ...

    def describe_workers(self) -> list[dict]: ...


class AdminApp:
    def __init__(self, gw: Steerable) -> None:
        self.gw = gw

    @property
    def rt(self) -> GatewayRuntime:
        return self.gw.runtime  # read per request: a reload swaps it

    async def metrics(self, request: Request) -> Response:
        return Response(self.gw.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive", "version": gateway.__version__})

    async def readyz(self, request: Request) -> Response:
        if self.gw.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not any(w["ready"] for w in self.gw.describe_workers()):
            return JSONResponse({"status": "unready", "workers": "none serving the public port"},
                                status_code=503)
        unready = self.rt.unready_routes()
        if unready:
            return JSONResponse({"status": "unready", "routes_without_upstream": unready},
                                status_code=503)
        return JSONResponse({"status": "ready", "routes": [r.name for r in self.rt.routes]})

    async def monitoring(self, request: Request) -> Response:
        """Every monitored route x variant: windows, measures, flags, histograms, alerts."""
        link = self.rt.monitor
        body = {"monitored_routes": sorted(self.rt.monitored),
                "monitor_process": {"alive": link is not None and link.alive},
                "queue": {"waiting": len(self.rt.capture.items),
                          "capacity": self.rt.capture.size},
                **(link.snapshot if link is not None else {})}
        wanted = {k: request.query_params.get(k) for k in ("route", "variant", "feature")}
        if any(wanted.values()):  # an alert's generatorURL: the view of its feature
            body = narrow(body, **wanted)
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")

    async def experiments(self, request: Request) -> Response:
        """The A/B report of every split route, or of one (`/experiments/{route}`)."""
        link = self.rt.monitor
        route = request.path_params.get("route")
        if link is None:
            return JSONResponse({"error": "no experiments: no route has a split or a monitor"},
                                status_code=404)
        status, body = await link.ask(Question.EXPERIMENTS, route)
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                        media_type="application/json")

    async def experiment_reset(self, request: Request) -> Response:
        """Start a route's experiment over; an admin write (bearer token), audited."""
        if (denied := self.authorize(request)) is not None:
            return denied
        link = self.rt.monitor
        route = request.path_params["route"]
        if link is None:
            return JSONResponse({"error": f"no experiment for route {route!r}"}, status_code=404)
        status, body = await link.ask(Question.RESET_EXPERIMENT, route)
        if status == 200:
            self.rt.log.info("audit", action="reset experiment", route=route, who=self.who(request))
        return JSONResponse(body, status_code=status)

    def authorize(self, request: Request) -> Response | None:
        """Admin writes need `Authorization: Bearer <admin.token>`; none configured: 403."""
        token = self.rt.cfg.admin.token
        if not token:
            return JSONResponse({"error": "admin writes are disabled: set admin.token"},
                                status_code=403)
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                headers={"www-authenticate": "Bearer"})
        return None

    def who(self, request: Request) -> str:
        return request.client.host if request.client else "unknown"

    async def admin_routes(self, request: Request) -> Response:
        return JSONResponse({"routes": self.rt.describe_routes()})

    async def admin_workers(self, request: Request) -> Response:
        """The processes serving the public port (one without `server.workers`)."""
        return JSONResponse({"workers": self.gw.describe_workers()})

    async def admin_reload(self, request: Request) -> Response:
        if (denied := self.authorize(request)) is not None:
            return denied
        ok, message = await self.gw.reload("POST /admin/reload", who=self.who(request))
        return JSONResponse({"reloaded": ok, "message": message}, status_code=200 if ok else 400)

    async def admin_weights(self, request: Request) -> Response:
        if (denied := self.authorize(request)) is not None:
            return denied
        rt = self.rt
        route = rt.route(request.path_params["route"])
        if route is None:
            return JSONResponse({"error": f"no route {request.path_params['route']!r}"},
                                status_code=404)
        try:
            body = orjson.loads(await request.body())
            weights = body["weights"]
            if not isinstance(weights, dict):
                raise TypeError
            before, after = self.gw.set_weights(route, weights)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return JSONResponse({"error": 'body must be {"weights": {"variant": number, ...}}'},
                                status_code=400)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        rt.log.info("audit", action="set weights", route=route.name, who=self.who(request),
                    before=before, after=after)
        return JSONResponse({"route": route.name, "before": before, "after": after})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/metrics", self.metrics),
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/monitoring", self.monitoring),
            Route("/experiments", self.experiments),
            Route("/experiments/{route}", self.experiments),
            Route("/admin/experiments/{route}/reset", self.experiment_reset, methods=["POST"]),
            Route("/admin/routes", self.admin_routes),
            Route("/admin/workers", self.admin_workers),
            Route("/admin/reload", self.admin_reload, methods=["POST"]),
            Route("/admin/routes/{route}/weights", self.admin_weights, methods=["PUT"]),
        ])


def build_admin_app(gw: Steerable) -> Starlette:
    return AdminApp(gw).app()


def narrow(body: dict, route: str | None, variant: str | None, feature: str | None) -> dict:
    """/monitoring narrowed to one route, variant and/or feature (a copy; the rest as is)."""
    def keep(name: str | None, wanted: str | None) -> bool:
        return wanted is None or name == wanted

    routes = {}
    for rname, rview in body.get("routes", {}).items():
        if not keep(rname, route):
            continue
        variants = {}
        for vname, sides in rview.get("variants", {}).items():
            if not keep(vname, variant):
                continue
            variants[vname] = {side: {**view,
                                      "features": [f for f in view.get("features", [])
                                                   if keep(f.get("feature"), feature)],
                                      "histograms": {k: v for k, v in view.get("histograms", {}).items()
                                                     if keep(k, feature)}}
                               for side, view in sides.items()}
        routes[rname] = {**rview, "variants": variants}
    alerts = [a for a in body.get("alerts", []) if keep(a.get("route"), route)
              and keep(a.get("variant"), variant) and keep(a.get("feature"), feature)]
    return {**body, "routes": routes, "alerts": alerts}
