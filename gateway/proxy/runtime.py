"""What a loaded config becomes at run time: upstream pools, the route table, readiness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from gateway.config import GatewayConfig, check_files
from gateway.link.proxy_end import MonitorLink
from gateway.link.queue import CaptureQueue, RouteCapture
from gateway.logs import flush_access_log, get_logger
from gateway.proxy.engine import PoolSettings, UpstreamPool
from gateway.proxy.metrics import GatewayMetrics
from routing import RouteRule, RouteTable, Splitter
from routing.canary import SLO, Canary
from routing.health import HealthCheck, OutlierDetector, RetryBudget


@dataclass(eq=False)
class Upstream:
    name: str
    pool: UpstreamPool
    # Monotonic time of the last connection it accepted (probe or proxied request).
    last_ok: float = 0.0
    detector: OutlierDetector = field(default_factory=OutlierDetector)
    check: HealthCheck | None = None  # active health verdict, when configured

    def available(self, now: float) -> bool:
        return self.detector.available(now) and (self.check is None or self.check.healthy)


@dataclass(eq=False)
class Variant:
    name: str
    upstream: Upstream
    header: bytes = b""  # its X-Driftgate-Variant value


@dataclass(eq=False)
class Route:
    name: str
    variants: list[Variant]
    splitter: Splitter | None = None             # None: one variant, no decision to make
    override_header: bytes = b"x-driftgate-variant"
    sticky_header: bytes | None = None
    sticky_cookie: bytes | None = None
    salt: str = ""
    fallback: Variant | None = None
    budget: RetryBudget = field(default_factory=RetryBudget)
    shadows: list[tuple[Upstream, float]] = field(default_factory=list)  # (upstream, share 0..1)
    shadow_cap: int = 100
    shadow_in_flight: int = 0
    canary: Canary | None = None
    base_weights: dict[str, float] = field(default_factory=dict)  # from the config
    in_flight: object = field(repr=False, default=None)
    request_size: object = field(repr=False, default=None)
    response_size: object = field(repr=False, default=None)
    monitor: RouteCapture | None = None

    def usable_fallback(self, variant: Variant, now: float) -> Variant | None:
        """The route's fallback for a pick of `variant`, when it is another variant and up."""
        fb = self.fallback
        return fb if fb is not None and fb is not variant and fb.upstream.available(now) else None


class GatewayRuntime:
    def __init__(self, cfg: GatewayConfig, metrics: GatewayMetrics | None = None,
                 config_dir: Path | None = None,
                 previous: GatewayRuntime | None = None,
                 link: Callable[[GatewayConfig, Path, CaptureQueue], MonitorLink] | None = None,
                 decides_canary: bool = True) -> None:
        """`previous`: the runtime a reload replaces; unchanged upstreams keep their pools and
        health state, and an unchanged monitoring setup keeps its monitor process.
        In a worker process (gateway.workers) `link` relays monitoring through the supervisor
        and the supervisor decides the canaries (`decides_canary` False: counts only)."""
        self.cfg = cfg
        self.previous = previous
        self._link = link or MonitorLink
        self.decides_canary = decides_canary
        # called with a route whose canary moved (the supervisor tells its workers)
        self.on_canary: Callable[[Route], None] | None = None
        self.metrics = metrics or GatewayMetrics()
        self.log = get_logger()
        self.config_dir = (config_dir or Path.cwd()).resolve()
        kept = previous.upstreams if previous is not None else {}
        self.upstreams = {
            name: kept[name] if name in kept and previous.cfg.upstreams[name] == u
            else self._upstream(name, u) for name, u in cfg.upstreams.items()}
        self.routes: list[Route] = []
        rules = []
        for rc in cfg.routes:
            variants = [Variant(name, self.upstreams[up], name.encode())
                        for name, up in rc.variant_upstreams]
            route = Route(rc.name, variants, budget=RetryBudget(ratio=rc.retry_budget))
            route.fallback = next((v for v in variants if v.name == rc.fallback), None)
            route.shadows = [(self.upstreams[sh.upstream], sh.percent / 100) for sh in rc.shadow]
            route.shadow_cap = rc.shadow_max_in_flight
            if rc.variants:
                route.splitter = Splitter(rc.name, [(v.name, v.weight) for v in rc.variants],
                                          rc.salt)
                route.salt = rc.salt
                route.base_weights = {v.name: v.weight for v in rc.variants}
                if rc.canary is not None:
                    c = rc.canary
                    control = rc.control_variant if rc.control_variant != c.variant else next(
                        v.name for v in rc.variants if v.name != c.variant)
                    route.canary = Canary(c.variant, c.steps, c.step_interval, SLO(
                        c.slo.max_error_rate, c.slo.max_p99_latency_ms, c.slo.min_requests),
                        now=time.monotonic(), promote_when=c.promote_when, control=control,
                        margin=c.margin)
                    self.apply_canary(route)
                route.override_header = rc.override_header.lower().encode()
                if rc.sticky is not None:
                    route.sticky_header = rc.sticky.header.lower().encode() if rc.sticky.header \
                        else None
                    route.sticky_cookie = rc.sticky.cookie.encode() if rc.sticky.cookie else None
            route.in_flight, route.request_size, route.response_size = (
                self.metrics.route_children(rc.name))
            self.routes.append(route)
            rules.append(RouteRule(route, path=rc.match.path, path_prefix=rc.match.path_prefix,
                                   methods=frozenset(rc.match.methods)))
        self.table: RouteTable[Route] = RouteTable(rules)
        self._tasks: list[asyncio.Task] = []
        self._build_monitoring()

    def apply_canary(self, route: Route) -> None:
        """The candidate gets the canary's percent; the others share the rest by their weights."""
        canary = route.canary
        assert canary is not None
        others = {n: w for n, w in route.base_weights.items() if n != canary.variant}
        total = sum(others.values()) or 1.0
        rest = 100.0 - canary.percent
        weights = {n: rest * w / total for n, w in others.items()}
        weights[canary.variant] = canary.percent
        ordered = [(n, weights[n]) for n in route.base_weights]
        route.splitter = Splitter(route.name, ordered, route.salt)
        self.metrics.canary_percent.labels(route.name, canary.variant).set(canary.percent)

    async def _canary_loop(self, route: Route, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            canary = route.canary
            assert canary is not None
            action = canary.evaluate(time.monotonic())
            if action is None:
                continue
            self.apply_canary(route)
            if self.on_canary is not None:
                self.on_canary(route)
            if action == "rollback":
                self.metrics.canary_rollbacks.labels(route.name).inc()
                self.log.warning("canary rolled back", route=route.name, variant=canary.variant,
                                 reason=canary.reason)
            else:
                self.log.info("canary advanced", route=route.name, variant=canary.variant,
                              percent=canary.percent)

    def route(self, name: str) -> Route | None:
        return next((r for r in self.routes if r.name == name), None)

    def set_weights(self, route: Route, weights: dict[str, float]) -> tuple[dict, dict]:
        """Swap in a new split for `route` (one attribute assignment); (before, after) shares.

        Names not given keep their weight. Raises ValueError naming what is wrong.
        """
        if route.splitter is None:
            raise ValueError(f"route {route.name!r} has no variants to weigh")
        unknown = sorted(set(weights) - set(route.splitter.names))
        if unknown:
            raise ValueError(f"unknown variants {unknown}; variants: {route.splitter.names}")
        current = dict(zip(route.splitter.names, route.splitter.weights))
        new = {**current, **{k: float(v) for k, v in weights.items()}}
        splitter = Splitter(route.name, list(new.items()), route.salt)  # validates weights
        before = route.splitter.shares()
        route.splitter = splitter
        return before, splitter.shares()

    def describe_routes(self) -> list[dict]:
        now = time.monotonic()
        out = []
        for r in self.routes:
            shares = r.splitter.shares() if r.splitter else {r.variants[0].name: 1.0}
            weights = dict(zip(r.splitter.names, r.splitter.weights)) if r.splitter else \
                {r.variants[0].name: 1.0}
            out.append({
                "route": r.name,
                "variants": [{"name": v.name, "upstream": v.upstream.name,
                              "weight": weights[v.name], "share": shares[v.name],
                              "available": v.upstream.available(now),
                              "ejections": v.upstream.detector.ejections} for v in r.variants],
                "fallback": r.fallback.name if r.fallback else None,
                "shadow": [{"upstream": u.name, "share": share} for u, share in r.shadows],
                "canary": r.canary.describe() if r.canary else None,
            })
        return out

    @staticmethod
    def _upstream(name: str, u) -> Upstream:
        pool = UpstreamPool(u.url, PoolSettings(
            connect_timeout=u.timeout.connect, read_timeout=u.timeout.read,
            max_connections=u.max_connections, idle_timeout=u.idle_timeout,
            max_header_bytes=u.max_response_header_bytes, max_headers=u.max_response_headers))
        detector = OutlierDetector(u.outlier.consecutive_failures, u.outlier.base_ejection,
                                   u.outlier.max_ejection)
        check = (HealthCheck(u.health_check.healthy_threshold, u.health_check.unhealthy_threshold)
                 if u.health_check else None)
        return Upstream(name, pool, detector=detector, check=check)

    def record_outcome(self, upstream: Upstream, ok: bool) -> None:
        """Passive health: count one exchange; log and count an ejection."""
        if upstream.detector.record(ok, time.monotonic()):
            d = upstream.detector
            self.metrics.ejections.labels(upstream.name).inc()
            self.log.warning("upstream ejected", upstream=upstream.name, ejections=d.ejections,
                             seconds=round(d.ejected_until - time.monotonic(), 1))

    async def _health_loop(self, upstream: Upstream, hc) -> None:
        """Active health checks of one upstream, off the request path (httpx)."""
        url = upstream.pool.url.rstrip("/") + hc.path
        async with httpx.AsyncClient(timeout=hc.timeout) as client:
            while True:
                try:
                    ok = (await client.get(url)).status_code < 400
                except httpx.HTTPError:
                    ok = False
                assert upstream.check is not None
                if upstream.check.record(ok):
                    self.log.warning("upstream health changed", upstream=upstream.name,
                                     healthy=upstream.check.healthy)
                self.metrics.healthy.labels(upstream.name).set(float(upstream.check.healthy))
                await asyncio.sleep(hc.interval)

    def _build_monitoring(self) -> None:
        """Capture settings for monitored routes and experiments; the monitor process link."""
        cfg = self.cfg
        check_files(cfg, self.config_dir)  # a config not loaded from its file is checked here
        previous = self.previous
        if previous is not None:  # one queue across reloads: captures in flight cross them
            self.capture = previous.capture
            self.capture.size = cfg.monitoring.queue_size
        else:
            self.capture = CaptureQueue(cfg.monitoring.queue_size, self.metrics.monitor_dropped)
        self.monitored: list[str] = []
        for rc, route in zip(cfg.routes, self.routes):
            if not rc.captures:
                continue
            if rc.monitor is None:  # a split without monitoring: its experiment only
                route.monitor = RouteCapture(rc.name, 0.0, 0, bodies=False)
                self.monitored.append(rc.name)
                continue
            route.monitor = RouteCapture(rc.name, rc.monitor.sample_rate,
                                         rc.monitor.max_capture_bytes)
            self.monitored.append(rc.name)
        if previous is not None and previous.monitor is not None and \
                _monitoring_view(previous.cfg) == _monitoring_view(cfg):
            self.monitor = previous.monitor  # keep it running
            self.monitor_reused = True
        else:
            self.monitor_reused = False
            self.monitor = self._link(cfg, self.config_dir, self.capture) if self.monitored else None
        # POST here goes to the monitor process; without one the path is routed like any other
        self.feedback_path = cfg.feedback.path if cfg.feedback.enabled and self.monitor else None

    # -- readiness ---------------------------------------------------------------------------
    def unready_routes(self) -> dict[str, str]:
        """Routes with no variant whose upstream is available (not ejected, passing active
        checks) and accepted a connection recently enough."""
        now = time.monotonic()
        horizon = now - 2 * self.cfg.admin.readiness_interval
        return {r.name: ", ".join(v.upstream.name for v in r.variants) for r in self.routes
                if not any(v.upstream.last_ok >= horizon and v.upstream.available(now)
                           for v in r.variants)}

    async def probe_once(self) -> None:
        stale = time.monotonic() - self.cfg.admin.readiness_interval / 2
        targets = [u for u in self.upstreams.values() if u.last_ok < stale]
        results = await asyncio.gather(*(u.pool.probe() for u in targets))
        now = time.monotonic()
        for upstream, ok in zip(targets, results):
            if ok:
                upstream.last_ok = now

    async def _probe_loop(self) -> None:
        while True:
            try:
                await self.probe_once()
            except Exception as exc:  # never let a probe bug kill readiness
                self.log.warning("readiness probe failed", error=str(exc))
            await asyncio.sleep(self.cfg.admin.readiness_interval)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            flush_access_log()

    async def start(self) -> None:
        """Probes and loops; on a first start, the monitor process too (waited for). After a
        reload the monitor changes hands in `take_over_monitoring`, once the swap is done."""
        first, self.previous = self.previous is None, None  # no chain of every runtime loaded
        await self.probe_once()
        self._tasks = [asyncio.create_task(self._probe_loop()),
                       asyncio.create_task(self._flush_loop())]
        for rc, route in zip(self.cfg.routes, self.routes):
            if route.canary is not None and rc.canary is not None and self.decides_canary:
                self._tasks.append(asyncio.create_task(
                    self._canary_loop(route, rc.canary.evaluate_every)))
        for name, u in self.cfg.upstreams.items():
            if u.health_check is not None:
                self._tasks.append(asyncio.create_task(
                    self._health_loop(self.upstreams[name], u.health_check)))
        if first and self.monitor is not None:
            await self.monitor.start()

    async def take_over_monitoring(self, old: GatewayRuntime) -> None:
        """After a reload's swap, a changed monitoring setup gets a new monitor process once the
        old one saved its state. Meanwhile captures wait in the queue both runtimes share and
        questions (/feedback) wait for the new process: the change costs no data and no 503s."""
        if self.monitor_reused:
            return
        if old.monitor is not None:
            await old.monitor.stop()  # flushes the queue, saves the state the new one loads
        if self.monitor is not None:
            if old.monitor is not None:  # /monitoring and /metrics stay whole until its 1st round
                self.monitor.snapshot = old.monitor.snapshot
                self.monitor.metrics_text = old.monitor.metrics_text
            await self.monitor.start(wait=False)

    async def retire(self, successor: GatewayRuntime) -> None:
        """After a reload: stop this runtime's tasks now; close the pools the successor did
        not keep once requests still on them had time to finish."""
        for task in self._tasks:
            task.cancel()
        dropped = [u for name, u in self.upstreams.items() if successor.upstreams.get(name) is not u]
        if dropped:
            grace = max(self.cfg.upstreams[u.name].timeout.read for u in dropped) + 1.0
            await asyncio.sleep(grace)
            await asyncio.gather(*(u.pool.aclose() for u in dropped))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        flush_access_log()
        if self.monitor is not None:
            await self.monitor.stop()  # flushes the queue; the process saves its state
        await asyncio.gather(*(u.pool.aclose() for u in self.upstreams.values()))


def _monitoring_view(cfg: GatewayConfig) -> str:
    """Everything the monitor process is built from: equal views, same process."""
    return orjson.dumps({
        "routes": [(r.name, r.protocol, r.monitor.model_dump() if r.monitor else None,
                    r.variant_names, r.control, r.experiment.model_dump()) for r in cfg.routes],
        "feedback": cfg.feedback.model_dump(),
        "alerts": cfg.alerts.model_dump(), "monitoring": cfg.monitoring.model_dump(),
        "state_dir": cfg.state_dir, "logging": cfg.logging.model_dump(),
        "admin": (cfg.admin.host, cfg.admin.port)}, option=orjson.OPT_SORT_KEYS).decode()
