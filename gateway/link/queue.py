"""The proxy's side of monitoring: a bounded capture queue, O(1), never blocking.

What a capture holds is gateway.link.messages.Capture; the bodies and header lists are the
objects the proxy already has (no copies). gateway.link.proxy_end ships the queue to the monitor
process in batches.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from gateway.link.messages import Capture


@dataclass(frozen=True, slots=True)
class RouteCapture:
    """Per-route capture settings the hot path reads. Without `bodies` (a split with no
    monitor) captures carry only variant, status and latency, for the experiment report."""

    route: str
    sample_rate: float
    max_capture: int
    bodies: bool = True

    def sample(self) -> bool:
        """Whether this answer's bodies go to the monitor (the route's sample rate)."""
        return self.bodies and (self.sample_rate >= 1.0 or random.random() < self.sample_rate)


class CaptureQueue:
    def __init__(self, size: int, dropped_counter) -> None:
        self.items: deque = deque()
        self.size = size
        self._dropped = dropped_counter

    def offer(self, item: Capture) -> bool:
        if len(self.items) >= self.size:
            self._dropped.inc()
            return False
        self.items.append(item)
        return True

    def drain(self) -> list[Capture]:
        items, self.items = self.items, deque()
        return list(items)

    def drop(self, n: int) -> None:
        """Count captures lost after they left the queue (the monitor process was not there)."""
        if n:
            self._dropped.inc(n)
