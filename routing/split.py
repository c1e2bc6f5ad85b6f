"""Which variant serves a request: weighted split, sticky keys, override by name.

Consistent bucketing: the unit interval of traffic is cut into BUCKETS buckets, and each
variant owns a contiguous run of them in config order, sized by its weight. A sticky key hashes
(with the route name and a salt) to a bucket, the same in every process and replica, so it
keeps its variant across restarts; when weights change, only the buckets between the old and
new boundaries change hands (90/10 -> 80/20 moves 10% of keys, the least possible). Requests
without a key take a random bucket.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Sequence

BUCKETS = 10_000


class UnknownVariant(ValueError):
    """An override named no variant of the route."""


class Splitter:
    def __init__(self, route: str, variants: Sequence[tuple[str, float]], salt: str = "") -> None:
        if not variants:
            raise ValueError("a split needs at least one variant")
        weights = [float(w) for _, w in variants]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("weights must be >= 0 with at least one > 0")
        self.route = route
        self.names = [name for name, _ in variants]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.weights = weights
        self._prefix = f"{route}\x00{salt}\x00".encode()
        total = sum(weights)
        # bounds[i] = first bucket past variant i; zero-weight variants own no bucket
        bounds, acc = [], 0.0
        for w in weights:
            acc += w
            bounds.append(round(acc / total * BUCKETS))
        bounds[-1] = BUCKETS
        self._bounds = bounds[:-1]  # bisect over the inner boundaries
        self._random = random.random

    def bucket(self, key: bytes) -> int:
        """The key's bucket: stable across processes (blake2b, not Python's salted hash)."""
        digest = hashlib.blake2b(self._prefix + key, digest_size=8).digest()
        return int.from_bytes(digest, "big") % BUCKETS

    def choose(self, key: bytes | None = None, override: str | None = None) -> int:
        """Index of the variant for this request."""
        if override is not None:
            try:
                return self.index[override]
            except KeyError:
                raise UnknownVariant(override) from None
        b = self.bucket(key) if key else int(self._random() * BUCKETS)
        return bisect_right(self._bounds, b)

    def shares(self) -> dict[str, float]:
        edges = [0, *self._bounds, BUCKETS]
        return {n: (edges[i + 1] - edges[i]) / BUCKETS for i, n in enumerate(self.names)}


def cookie_value(header: bytes, name: bytes) -> bytes | None:
    """The value of cookie `name` in a Cookie header, or None."""
    for part in header.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            return value.strip(b'"')
    return None
