"""Prometheus metric families of the gateway.

Labels come only from config (route, variant and upstream names) and from small closed sets
(method, status code, error kind), never from raw paths, so the series count stays bounded.
Label children are cached per label tuple: `labels()` is the expensive part of an update.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

import gateway

# `_created` series double the exposition for no use in dashboards or alerts.
disable_created_metrics()

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = tuple(float(4 ** k * 64) for k in range(10))  # 64 B .. 16 MiB

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"})


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "driftgate_requests", "Requests answered, by route, variant, upstream, method, code; "
            "shadow=\"true\" for mirrored copies.",
            ["route", "variant", "upstream", "method", "code", "shadow"], registry=r)
        self.request_duration = Histogram(
            "driftgate_request_duration_seconds",
            "Whole request as the client sees it, first byte in to last byte out.",
            ["route", "variant", "upstream", "code_class", "shadow"], buckets=LATENCY_BUCKETS,
            registry=r)
        self.upstream_duration = Histogram(
            "driftgate_upstream_duration_seconds",
            "Upstream exchange: request sent to last response byte read.",
            ["route", "upstream"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge(
            "driftgate_requests_in_flight", "Requests being served now.", ["route"], registry=r)
        self.upstream_errors = Counter(
            "driftgate_upstream_errors", "Failed upstream exchanges by kind "
            "(connect, timeout, reset, protocol, pool_exhausted).",
            ["upstream", "kind"], registry=r)
        self.request_size = Histogram(
            "driftgate_request_size_bytes", "Request body size.", ["route"],
            buckets=SIZE_BUCKETS, registry=r)
        self.response_size = Histogram(
            "driftgate_response_size_bytes", "Response body size.", ["route"],
            buckets=SIZE_BUCKETS, registry=r)
        self.unrouted = Counter(
            "driftgate_unrouted_requests", "Requests that matched no route (answered 404).",
            registry=r)
        self.ejections = Counter(
            "driftgate_upstream_ejections", "Times passive health ejected an upstream.",
            ["upstream"], registry=r)
        self.healthy = Gauge(
            "driftgate_upstream_healthy", "Active health check verdict (1 healthy, 0 down).",
            ["upstream"], registry=r)
        self.shadow_dropped = Counter(
            "driftgate_shadow_dropped", "Shadow copies not sent: the in-flight cap was reached.",
            ["route"], registry=r)
        self.canary_percent = Gauge(
            "driftgate_canary_percent", "Share of traffic (percent) the canary variant gets now.",
            ["route", "variant"], registry=r)
        self.canary_rollbacks = Counter(
            "driftgate_canary_rollbacks", "Canaries rolled back for breaking their SLO.",
            ["route"], registry=r)
        self.retries = Counter(
            "driftgate_retries", "Fallback retries by outcome (retried, budget_exhausted).",
            ["route", "outcome"], registry=r)
        # Captures the proxy could not hand to the monitor (queue full or monitor down).
        self.monitor_dropped = Counter(
            "driftgate_monitor_dropped", "Captures dropped: the monitor queue was full or the "
            "monitor process was not taking them.", registry=r)
        self.build_info = Info("driftgate_build", "Gateway version.", registry=r)
        self.build_info.info({"version": gateway.__version__})
        self._request_children: dict[tuple, tuple] = {}
        self._route_children: dict[str, tuple] = {}
        self._error_children: dict[tuple[str, str], Counter] = {}

    def route_children(self, route: str) -> tuple:
        """(in_flight, request_size, response_size) children of one route."""
        children = self._route_children.get(route)
        if children is None:
            children = (self.in_flight.labels(route), self.request_size.labels(route),
                        self.response_size.labels(route))
            self._route_children[route] = children
        return children

    def observe_request(self, key: tuple[str, str, str, str, int, str], duration: float,
                        upstream_duration: float | None) -> None:
        """One answered request; `key` is (route, variant, upstream, method, status, shadow)."""
        children = self._request_children.get(key)
        if children is None:
            route, variant, upstream, method, status, shadow = key
            method_label = method if method in _KNOWN_METHODS else "OTHER"
            children = (
                self.requests.labels(route, variant, upstream, method_label, str(status), shadow),
                self.request_duration.labels(route, variant, upstream, f"{status // 100}xx",
                                             shadow),
                self.upstream_duration.labels(route, upstream),
            )
            if len(self._request_children) < 10_000:  # bounded: codes are a small closed set
                self._request_children[key] = children
        children[0].inc()
        children[1].observe(duration)
        if upstream_duration is not None:
            children[2].observe(upstream_duration)

    def upstream_error(self, upstream: str, kind: str) -> None:
        child = self._error_children.get((upstream, kind))
        if child is None:
            child = self._error_children[(upstream, kind)] = self.upstream_errors.labels(
                upstream, kind)
        child.inc()
