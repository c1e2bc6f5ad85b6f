"""A canary that steps forward while its SLOs hold and rolls back at once when one breaks.

The candidate's share walks through `steps` (percent of traffic), one step per
`step_interval`, provided each step saw at least `min_requests` candidate requests within the
SLO (error rate, p99 latency) measured on that step's own traffic. A broken SLO sets the share
to 0 and keeps it there. Time is passed in.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

# Latency buckets (ms) for the step's p99: fixed size whatever the traffic.
_BUCKETS_MS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000,
               10000, float("inf"))


@dataclass(frozen=True)
class SLO:
    max_error_rate: float = 0.01
    max_p99_latency_ms: float = 200.0
    min_requests: int = 200


class Canary:
    def __init__(self, variant: str, steps: list[float], step_interval: float, slo: SLO,
                 now: float) -> None:
        if not steps or any(not 0 <= s <= 100 for s in steps):
            raise ValueError("canary steps are percents between 0 and 100")
        self.variant = variant
        self.steps = list(steps)
        self.step_interval = step_interval
        self.slo = slo
        self.step = 0
        self.state = "stepping"          # stepping | done | rolled_back
        self.reason = ""
        self._reset(now)

    def _reset(self, now: float) -> None:
        self.step_started = now
        self.requests = 0
        self.errors = 0
        self.latency = [0] * len(_BUCKETS_MS)

    @property
    def percent(self) -> float:
        return 0.0 if self.state == "rolled_back" else self.steps[self.step]

    def record(self, ok: bool, latency_s: float) -> None:
        """One candidate request: O(1)."""
        self.requests += 1
        if not ok:
            self.errors += 1
        self.latency[bisect_left(_BUCKETS_MS, latency_s * 1000)] += 1

    def p99_ms(self) -> float:
        if not self.requests:
            return 0.0
        target = 0.99 * self.requests
        seen = 0
        for bound, n in zip(_BUCKETS_MS, self.latency):
            seen += n
            if seen >= target:
                return bound
        return _BUCKETS_MS[-1]

    def evaluate(self, now: float) -> str | None:
        """'rollback', 'advance' or None; call on a cadence."""
        if self.state != "stepping":
            return None
        slo = self.slo
        if self.requests >= slo.min_requests:
            error_rate = self.errors / self.requests
            p99 = self.p99_ms()
            if error_rate > slo.max_error_rate or p99 > slo.max_p99_latency_ms:
                self.state = "rolled_back"
                self.reason = (f"error rate {error_rate:.2%} (max {slo.max_error_rate:.2%})"
                               if error_rate > slo.max_error_rate else
                               f"p99 {p99:g} ms (max {slo.max_p99_latency_ms:g} ms)")
                return "rollback"
        if now - self.step_started >= self.step_interval and self.requests >= slo.min_requests:
            if self.step + 1 >= len(self.steps):
                self.state = "done"
                return None
            self.step += 1
            self._reset(now)
            if self.step + 1 == len(self.steps) and self.steps[-1] >= 100:
                self.state = "done"
            return "advance"
        return None

    def describe(self) -> dict:
        return {"variant": self.variant, "state": self.state, "percent": self.percent,
                "step": self.step, "steps": self.steps, "requests_this_step": self.requests,
                "errors_this_step": self.errors, "p99_ms_this_step": self.p99_ms(),
                "reason": self.reason or None}
