"""Alert rules and their lifecycle: pending -> firing (re-sent) -> resolved.

One alert per (route, variant, feature, rule) for its whole life: which measure tripped it, its
value and threshold are what it says, not who it is. A condition must hold for the rule's `for:`
(default 5 s: two evaluations at the default cadence, so one window's fluke does not page)
before the alert fires. A firing alert resolves only when its condition has stayed off for
`keep_firing_for` (default 60 s) *and* the measures that tripped it are back on the good side of
their thresholds: the decision to fire asks for both a large effect and enough evidence, the
decision to clear for the effect to be gone, so a resolved notification never reports a value
past its threshold, and an alert does not flap on a drift that persists. Time is passed in, so
tests need not wait.
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
    AlertRule(name="joint_drift", condition="joint_drift", severity="warning"),
)


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Measure:
    """One measure of a condition as last seen: the larger of its windows' values (those with
    enough data to measure it), which window that was, and its threshold."""

    value: float | None
    threshold: float | None
    window: str
    bad: str = "above"          # the side of the threshold that is bad: above (|value|) or below

    @property
    def settled(self) -> bool:
        """Back on the good side of the threshold (or not measurable: no data)."""
        if self.value is None or self.threshold is None:
            return True
        if self.bad == "below":
            return self.value >= self.threshold
        return abs(self.value) <= self.threshold


@dataclass
class Observation:
    """What the evaluator saw for one (route, variant, feature, rule) this round."""

    route: str
    variant: str
    feature: str
    rule: AlertRule
    active: bool
    metric: str                 # the measure that shows the condition (or would)
    value: float | None
    threshold: float | None
    window: str
    subject: str                # "route/variant: feature 'x' feature drift"
    measures: dict[str, Measure] = field(default_factory=dict)
    bad: str = "above"
    features: list[str] | None = None  # joint drift: the features moving together, most first

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.route, self.variant, self.feature, self.rule.name)

    @property
    def summary(self) -> str:
        if self.threshold is None:
            return self.subject
        value = "n/a" if self.value is None else f"{self.value:.4g}"
        bound = f"alert below {self.threshold:g}" if self.bad == "below" else \
            f"threshold {self.threshold:g}"
        return f"{self.subject}: {self.metric} = {value} ({bound}) over the last {self.window}"


@dataclass
class Alert:
    key: tuple[str, str, str, str]
    rule: AlertRule
    pending_since: float
    fired_at: float | None = None
    last_active: float = 0.0
    tripped: dict[str, None] = field(default_factory=dict)  # measures seen active, in order
    sent: dict[str, float] = field(default_factory=dict)    # sink name -> last post
    last: Observation | None = field(default=None, repr=False)

    def payload(self, status: str, now: float, repeat: bool = False) -> dict:
        o = self.last
        assert o is not None
        out = {
            "status": status, "alert": self.rule.name, "severity": self.rule.severity,
            "route": o.route, "variant": o.variant, "feature": o.feature, "metric": o.metric,
            "value": o.value, "threshold": o.threshold, "window": o.window,
            "started_at": iso(self.fired_at or self.pending_since), "summary": o.summary,
            "repeat": repeat,
        }
        if o.features is not None:
            out["features"] = o.features
        if status == "resolved":
            out["ended_at"] = iso(now)
        return out


class AlertBook:
    """Active alerts. `observe` says what an observation changed:
    "firing" (it fires now), "resolved", "active" (still firing), or None."""

    def __init__(self) -> None:
        self.alerts: dict[tuple[str, str, str, str], Alert] = {}

    def observe(self, obs: Observation, now: float) -> tuple[str, Alert] | None:
        alert = self.alerts.get(obs.key)
        if obs.active:
            if alert is None:
                alert = self.alerts[obs.key] = Alert(obs.key, obs.rule, pending_since=now)
            alert.last = obs
            alert.last_active = now
            alert.tripped[obs.metric] = None
            if alert.fired_at is not None:
                return "active", alert
            if now - alert.pending_since >= obs.rule.for_:
                alert.fired_at = now
                return "firing", alert
            return None
        if alert is None:
            return None
        if alert.fired_at is None:  # was only pending: one clear round ends it, silently
            del self.alerts[obs.key]
            return None
        if now - alert.last_active < obs.rule.keep_firing_for or not self._settled(alert, obs):
            return "active", alert
        del self.alerts[obs.key]
        alert.last = self._clearing(alert, obs)
        return "resolved", alert

    @staticmethod
    def _settled(alert: Alert, obs: Observation) -> bool:
        return all(obs.measures[m].settled for m in alert.tripped if m in obs.measures)

    @staticmethod
    def _clearing(alert: Alert, obs: Observation) -> Observation:
        """The clearing observation, reporting the measure that tripped the alert last."""
        metric = alert.last.metric if alert.last is not None else obs.metric
        m = obs.measures.get(metric)
        if m is None:
            return obs
        return Observation(obs.route, obs.variant, obs.feature, obs.rule, False, metric, m.value,
                           m.threshold, m.window, obs.subject, obs.measures, m.bad)

    def firing(self) -> list[Alert]:
        return [a for a in self.alerts.values() if a.fired_at is not None]

    # -- persistence: a restarted monitor (a crash, a reload) does not page again for alerts
    # -- that were already firing, and still resolves them when they clear
    def to_json(self) -> list[dict]:
        out = []
        for a in self.firing():
            o = a.last
            assert o is not None
            out.append({"key": list(a.key), "pending_since": a.pending_since,
                        "fired_at": a.fired_at, "last_active": a.last_active,
                        "tripped": list(a.tripped), "sent": a.sent,
                        "last": {"metric": o.metric, "value": o.value, "threshold": o.threshold,
                                 "window": o.window, "subject": o.subject, "bad": o.bad}})
        return out

    def restore(self, items: list[dict], rules: dict[str, AlertRule]) -> int:
        """Firing alerts saved by `to_json`; those of rules no longer configured are dropped
        (nothing is sent for them). Returns how many came back."""
        for item in items:
            route, variant, feature, name = item["key"]
            rule = rules.get(name)
            if rule is None:
                continue
            last = item["last"]
            obs = Observation(route, variant, feature, rule, True, last["metric"], last["value"],
                              last["threshold"], last["window"], last["subject"], {}, last["bad"])
            self.alerts[obs.key] = Alert(
                obs.key, rule, float(item["pending_since"]), float(item["fired_at"]),
                float(item["last_active"]), dict.fromkeys(item["tripped"]),
                {k: float(v) for k, v in item["sent"].items()}, obs)
        return len(self.alerts)
