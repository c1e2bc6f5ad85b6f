"""Routing decisions: which route and variant serve a request. Pure code: no sockets, no clock."""

from routing.match import RouteRule, RouteTable
from routing.split import BUCKETS, Splitter, UnknownVariant, cookie_value

__all__ = ["BUCKETS", "RouteRule", "RouteTable", "Splitter", "UnknownVariant", "cookie_value"]
