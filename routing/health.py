"""Upstream health decisions: passive outlier ejection, active check thresholds, retry budgets.

All take the time as an argument (monotonic seconds), so tests run hours in microseconds.
"""

from __future__ import annotations


class OutlierDetector:
    """Envoy-style passive health: `consecutive_failures` in a row eject the upstream for
    `base_ejection` x (number of ejections so far), at most `max_ejection`; when that time is up
    requests probe it again: a success brings it back, a failure ejects it longer."""

    def __init__(self, consecutive_failures: int = 5, base_ejection: float = 10.0,
                 max_ejection: float = 300.0) -> None:
        self.threshold = consecutive_failures
        self.base = base_ejection
        self.max = max_ejection
        self.failures = 0
        self.ejections = 0
        self.ejected_until = 0.0

    def available(self, now: float) -> bool:
        return now >= self.ejected_until

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until

    def record(self, ok: bool, now: float) -> bool:
        """Count one exchange; True when this failure ejected the upstream."""
        if ok:
            self.failures = 0
            # a long healthy spell forgets past ejections (their back-off)
            if self.ejections and now - self.ejected_until > self.max:
                self.ejections = 0
            return False
        self.failures += 1
        if self.failures < self.threshold or self.ejected(now):
            return False
        self.ejections += 1
        self.failures = 0
        self.ejected_until = now + min(self.base * self.ejections, self.max)
        return True


class HealthCheck:
    """Active check results: `unhealthy_threshold` failures in a row mark it down,
    `healthy_threshold` successes in a row mark it up again. Starts healthy."""

    def __init__(self, healthy_threshold: int = 2, unhealthy_threshold: int = 3) -> None:
        self.up_after = healthy_threshold
        self.down_after = unhealthy_threshold
        self.healthy = True
        self._streak = 0  # successes (>0) or failures (<0) in a row

    def record(self, ok: bool) -> bool:
        """Count one check; True when the verdict changed."""
        self._streak = max(self._streak, 0) + 1 if ok else min(self._streak, 0) - 1
        if self.healthy and self._streak <= -self.down_after:
            self.healthy = False
            return True
        if not self.healthy and self._streak >= self.up_after:
            self.healthy = True
            return True
        return False


class RetryBudget:
    """Retries may add at most `ratio` of the requests seen over the last `window` seconds
    (plus `min_retries` per window, so a quiet route can still fail over), so retries can never
    multiply load in an outage. Two half-window buckets approximate the sliding window."""

    def __init__(self, ratio: float = 0.2, min_retries: int = 3, window: float = 10.0) -> None:
        self.ratio = ratio
        self.min_retries = min_retries
        self.half = window / 2
        self._epoch = 0
        self._requests = [0, 0]
        self._retries = [0, 0]

    def _roll(self, now: float) -> None:
        """Move the two half-windows along to `now`; index 1 is always the current one."""
        epoch = int(now // self.half)
        if epoch != self._epoch:
            if epoch == self._epoch + 1:
                self._requests = [self._requests[1], 0]
                self._retries = [self._retries[1], 0]
            else:
                self._requests, self._retries = [0, 0], [0, 0]
            self._epoch = epoch

    def record_request(self, now: float) -> None:
        self._roll(now)
        self._requests[1] += 1

    def try_retry(self, now: float) -> bool:
        """Take a retry if the budget allows it."""
        self._roll(now)
        allowed = self.min_retries + self.ratio * sum(self._requests)
        if sum(self._retries) + 1 > allowed:
            return False
        self._retries[1] += 1
        return True
