"""Match a request (method, path) to a configured route.

Exact paths win over prefixes, and longer prefixes over shorter ones, whatever the order in the
config, so adding a broad route never steals traffic from a specific one. A prefix matches on
path-segment boundaries: `/v1/models/iris` matches `/v1/models/iris:predict` and
`/v1/models/iris/infer` but not `/v1/models/irises`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)

# Characters that may follow a prefix for the match to sit on a boundary (KServe uses `:predict`).
_BOUNDARY = frozenset("/:?;.")


@dataclass(frozen=True, slots=True)
class RouteRule(Generic[T]):
    target: T
    path: str | None = None
    path_prefix: str | None = None
    methods: frozenset[str] = field(default_factory=frozenset)

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        if self.path is not None:
            return path == self.path
        prefix = self.path_prefix or "/"
        if not path.startswith(prefix):
            return False
        return (len(path) == len(prefix) or prefix.endswith("/")
                or path[len(prefix)] in _BOUNDARY)


class RouteTable(Generic[T]):
    """Ordered rules; `match` returns the most specific rule's target, or None."""

    def __init__(self, rules: Iterable[RouteRule[T]]) -> None:
        def specificity(rule: RouteRule[T]) -> tuple[int, int, int]:
            exact = rule.path is not None
            length = len(rule.path if exact else (rule.path_prefix or "/"))
            return (0 if exact else 1, -length, 0 if rule.methods else 1)

        self._rules = sorted(rules, key=specificity)  # sorted() is stable: config order breaks ties
        self._cache: dict[tuple[str, str], T | None] = {}

    def match(self, method: str, path: str) -> T | None:
        key = (method, path)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = None
        for rule in self._rules:
            if rule.matches(method, path):
                found = rule.target
                break
        # Bounded memo: clients choose paths, so never let it grow without limit.
        if len(self._cache) >= 4096:
            self._cache.clear()
        self._cache[key] = found
        return found
