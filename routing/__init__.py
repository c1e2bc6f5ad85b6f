"""Routing decisions: which route and variant serve a request. Pure code: no sockets, no clock."""

from routing.match import RouteRule, RouteTable

__all__ = ["RouteRule", "RouteTable"]
