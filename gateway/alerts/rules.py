"""Alert rules and their lifecycle: pending -> firing (repeated) -> resolved.

One alert per (route, variant, feature, rule). A condition must hold for the rule's `for:`
before the alert fires; it is re-sent every `repeat_interval` while it holds, and resolved on
the first evaluation that no longer sees it. Time is passed in, so tests need not wait.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from gateway.config import AlertRule

DEFAULT_RULES = (
    AlertRule(name="feature_drift", condition="drift", severity="warning"),
    AlertRule(name="feature_outliers", condition="outliers", severity="warning"),
    AlertRule(name="feature_missing", condition="missing", severity="warning"),
    AlertRule(name="prediction_drift", condition="prediction_drift", severity="warning"),
)


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Observation:
    """What the evaluator saw for one (route, variant, feature, rule) this round."""

    route: str
    variant: str
    feature: str
    rule: AlertRule
    active: bool
    metric: str
    value: float | None
    threshold: float | None
    window: str
    summary: str


@dataclass
class Alert:
    key: tuple[str, str, str, str]
    rule: AlertRule
    pending_since: float
    fired_at: float | None = None
    last_sent: float = 0.0
    last: Observation | None = field(default=None, repr=False)

    def payload(self, status: str, now: float) -> dict:
        o = self.last
        assert o is not None
        out = {
            "status": status, "alert": self.rule.name, "severity": self.rule.severity,
            "route": o.route, "variant": o.variant, "feature": o.feature, "metric": o.metric,
            "value": o.value, "threshold": o.threshold, "window": o.window,
            "started_at": iso(self.fired_at or self.pending_since), "summary": o.summary,
        }
        if status == "resolved":
            out["ended_at"] = iso(now)
        return out


class AlertBook:
    """Active alerts; `observe` returns the notifications (status, alert) a round produces."""

    def __init__(self) -> None:
        self.alerts: dict[tuple[str, str, str, str], Alert] = {}

    def observe(self, obs: Observation, now: float) -> list[tuple[str, Alert]]:
        key = (obs.route, obs.variant, obs.feature, obs.rule.name)
        alert = self.alerts.get(key)
        if not obs.active:
            if alert is None:
                return []
            del self.alerts[key]
            if alert.fired_at is None:
                return []  # was only pending
            alert.last = obs if obs.value is not None else alert.last
            return [("resolved", alert)]
        if alert is None:
            alert = self.alerts[key] = Alert(key, obs.rule, pending_since=now)
        alert.last = obs
        if alert.fired_at is None:
            if now - alert.pending_since >= obs.rule.for_:
                alert.fired_at = alert.last_sent = now
                return [("firing", alert)]
            return []
        if now - alert.last_sent >= obs.rule.repeat_interval:
            alert.last_sent = now
            return [("firing", alert)]
        return []

    def firing(self) -> list[Alert]:
        return [a for a in self.alerts.values() if a.fired_at is not None]
