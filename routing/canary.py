"""A canary that steps forward while its SLOs hold and rolls back at once when one breaks.

The candidate's share walks through `steps` (percent of traffic), one step per
`step_interval`, provided each step saw at least `min_requests` candidate requests within the
SLO (error rate, p99 latency) measured on that step's own traffic. A broken SLO sets the share
to 0 and keeps it there. Time is passed in.

With `promote_when="significant_no_worse"` a step also needs evidence: the candidate's error rate
minus the control's (same step, same time) must have its one-sided 95% upper bound below
`margin` (non-inferiority, the unpooled two-proportion standard error); a candidate significantly
worse than the control (lower bound above 0) is rolled back; in between the step waits for more
traffic.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

Z_ONE_SIDED_95 = 1.6448536269514722
PROMOTE_RULES = ("slo", "significant_no_worse")

# Latency buckets (ms) for the step's p99: fixed size whatever the traffic.
_BUCKETS_MS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000,
               10000, float("inf"))


def proportion_gap(x_a: int, n_a: int, x_b: int, n_b: int) -> tuple[float, float]:
    """(p_b - p_a, its unpooled standard error) for x successes of n.

    The scalar form of stats.experiments.two_proportions (tests hold them equal): routing/ runs
    in the proxy process, which must not import numba or scipy through stats/.
    """
    p_a, p_b = x_a / n_a, x_b / n_b
    return p_b - p_a, math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)


@dataclass(frozen=True)
class SLO:
    max_error_rate: float = 0.01
    max_p99_latency_ms: float = 200.0
    min_requests: int = 200


class Canary:
    def __init__(self, variant: str, steps: list[float], step_interval: float, slo: SLO,
                 now: float, promote_when: str = "slo", control: str | None = None,
                 margin: float = 0.01) -> None:
        if not steps or any(not 0 <= s <= 100 for s in steps):
            raise ValueError("canary steps are percents between 0 and 100")
        if promote_when not in PROMOTE_RULES:
            raise ValueError(f"promote_when is one of {PROMOTE_RULES}")
        self.variant = variant
        self.promote_when = promote_when
        self.control = control
        self.margin = margin
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
        self.control_requests = 0
        self.control_errors = 0

    @property
    def percent(self) -> float:
        return 0.0 if self.state == "rolled_back" else self.steps[self.step]

    def record(self, ok: bool, latency_s: float) -> None:
        """One candidate request: O(1)."""
        self.requests += 1
        if not ok:
            self.errors += 1
        self.latency[bisect_left(_BUCKETS_MS, latency_s * 1000)] += 1

    def record_control(self, ok: bool) -> None:
        """One control request in the same step: the comparison's other side."""
        self.control_requests += 1
        if not ok:
            self.control_errors += 1

    # -- several processes, one decision (gateway.workers): each worker records into its own
    # -- Canary and hands its counts over; one Canary sums them, decides, and the workers follow
    def take_tally(self) -> tuple:
        """This step's counts since the last take, zeroed here: (step, requests, errors,
        latency buckets, control requests, control errors)."""
        tally = (self.step, self.requests, self.errors, self.latency, self.control_requests,
                 self.control_errors)
        self.requests = self.errors = self.control_requests = self.control_errors = 0
        self.latency = [0] * len(_BUCKETS_MS)
        return tally

    def add_tally(self, tally: tuple) -> None:
        """Counts taken from another Canary; those of an earlier step are stale and ignored."""
        step, requests, errors, latency, control_requests, control_errors = tally
        if step != self.step or self.state != "stepping":
            return
        self.requests += requests
        self.errors += errors
        self.latency = [a + b for a, b in zip(self.latency, latency)]
        self.control_requests += control_requests
        self.control_errors += control_errors

    def position(self) -> tuple[int, str, str]:
        return self.step, self.state, self.reason

    def follow(self, position: tuple[int, str, str], now: float) -> None:
        """Take the deciding Canary's step and state (counts start over with a new step)."""
        step, state, reason = position
        if (step, state) != (self.step, self.state):
            self._reset(now)
        self.step, self.state, self.reason = step, state, reason

    def error_rate_gap(self) -> tuple[float, float, float]:
        """(candidate - control error rate, one-sided 95% lower and upper bounds)."""
        effect, se = proportion_gap(self.control_errors, max(self.control_requests, 1),
                                    self.errors, max(self.requests, 1))
        return effect, effect - Z_ONE_SIDED_95 * se, effect + Z_ONE_SIDED_95 * se

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
            if self.promote_when == "significant_no_worse":
                if self.control_requests < slo.min_requests:
                    return None
                gap, lower, upper = self.error_rate_gap()
                if lower > 0:
                    self.state = "rolled_back"
                    self.reason = (f"error rate {gap:+.2%} vs {self.control}, significantly worse "
                                   f"(one-sided 95% bound {lower:+.2%})")
                    return "rollback"
                if upper >= self.margin:
                    return None  # not yet shown no worse than the margin: more traffic
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
        out = {"variant": self.variant, "state": self.state, "percent": self.percent,
                "step": self.step, "steps": self.steps, "requests_this_step": self.requests,
                "errors_this_step": self.errors, "p99_ms_this_step": self.p99_ms(),
                "reason": self.reason or None, "promote_when": self.promote_when}
        if self.promote_when == "significant_no_worse":
            gap, lower, upper = self.error_rate_gap()
            out.update(control=self.control, control_requests_this_step=self.control_requests,
                       error_rate_gap=gap, error_rate_gap_95=[lower, upper], margin=self.margin)
        return out
