"""Alert lifecycle on an injected clock, and every sink format posted to real local servers."""

import asyncio
import json
import time

from gateway.alerts.rules import AlertBook, Measure, Observation, iso
from gateway.alerts.sinks import Dispatcher, dedup_key, format_for
from gateway.config import AlertRule, RetrainConfig, SinkConfig
from gateway.monitor.metrics import MonitorMetrics
from tests.servers import AppServer, Recorder, _send


def obs(rule, active, value=0.2, metric="wasserstein", measured=None):
    """An observation whose shown measure is `metric`; `measured` the condition's measures."""
    measures = {m: Measure(v, 0.1, "10s") for m, v in (measured or {metric: value}).items()}
    return Observation("r", "v1", "x", rule, active, metric, value, 0.1, "10s", "x drifted",
                       measures)


def test_fires_after_for_and_resolves_only_after_keep_firing_for():
    rule = AlertRule(name="drift", condition="drift", **{"for": 30}, keep_firing_for=60)
    book = AlertBook()
    assert book.observe(obs(rule, True), 0) is None          # pending
    assert book.observe(obs(rule, True), 29) is None
    status, alert = book.observe(obs(rule, True), 30)         # held for 30 s: fires
    assert status == "firing" and alert.payload("firing", 30)["started_at"].endswith("Z")
    assert book.observe(obs(rule, True), 100)[0] == "active"
    # clear for less than keep_firing_for: still firing, no resolve (no flapping)
    for t in (105, 130, 159):
        assert book.observe(obs(rule, False, 0.02), t)[0] == "active"
    assert book.observe(obs(rule, True), 160)[0] == "active"  # back: the span starts over
    assert book.observe(obs(rule, False, 0.02), 219)[0] == "active"
    status, alert = book.observe(obs(rule, False, 0.02), 220)
    payload = alert.payload(status, 220)
    assert status == "resolved" and "ended_at" in payload and payload["value"] == 0.02
    assert book.alerts == {}
    # a condition that clears while pending never fires nor resolves
    assert book.observe(obs(rule, True), 400) is None
    assert book.observe(obs(rule, False), 410) is None


def test_resolves_only_when_the_tripping_measure_is_back_within_its_threshold():
    """Off (not significant) but the effect still past the threshold: not resolved; the
    resolved notification reports the measure that tripped it, at or under its threshold."""
    rule = AlertRule(name="drift", condition="drift", **{"for": 0}, keep_firing_for=10)
    book = AlertBook()
    assert book.observe(obs(rule, True, 0.09, "std_change",
                            {"std_change": 0.09, "wasserstein": 0.03}), 0)[0] == "firing"
    # off (the std guard no longer sees enough evidence) while the change is still 0.13
    stuck = obs(rule, False, 0.13, "wasserstein", {"std_change": 0.13, "wasserstein": 0.13})
    assert book.observe(stuck, 20)[0] == "active"
    assert book.observe(stuck, 60)[0] == "active"
    cleared = obs(rule, False, 0.04, "wasserstein", {"std_change": 0.06, "wasserstein": 0.04})
    status, alert = book.observe(cleared, 70)
    payload = alert.payload(status, 70)
    assert status == "resolved"
    assert payload["metric"] == "std_change" and payload["value"] == 0.06
    assert payload["value"] <= payload["threshold"]
    assert "std_change = 0.06 (threshold 0.1)" in payload["summary"]


def test_identity_is_the_rule_and_feature_not_the_measure():
    rule = AlertRule(name="drift", condition="drift", **{"for": 0})
    book = AlertBook()
    assert book.observe(obs(rule, True, 0.2, "std_change"), 0)[0] == "firing"
    status, alert = book.observe(obs(rule, True, 0.3, "mean_change"), 5)
    assert status == "active" and len(book.alerts) == 1
    assert alert.payload("firing", 5)["metric"] == "mean_change"


def test_each_sink_is_due_at_its_own_cadence():
    sinks = {"am": SinkConfig(type="alertmanager", url="http://127.0.0.1:1"),
             "hook": SinkConfig(type="webhook", url="http://127.0.0.1:1/h")}
    d = Dispatcher(sinks, MonitorMetrics(), "http://gw:8090", evaluate_every=5)
    rule = AlertRule(name="drift", condition="drift", repeat_interval=300)
    assert sorted(d.due(rule, "firing", {}, 0)) == ["am", "hook"]
    sent = {"am": 0.0, "hook": 0.0}
    assert d.due(rule, "active", sent, 59) == []
    assert d.due(rule, "active", sent, 60) == ["am"]           # Alertmanager: every minute
    assert sorted(d.due(rule, "active", sent, 300)) == ["am", "hook"]
    assert sorted(d.due(rule, "resolved", sent, 301)) == ["am", "hook"]
    only = AlertRule(name="drift", condition="drift", sinks=["hook"])
    assert d.due(only, "active", {}, 1000) == ["hook"]


def test_alertmanager_body_has_stable_labels_and_ends_at():
    sink = SinkConfig(type="alertmanager", url="http://am:9093/")
    d = Dispatcher({"am": sink}, MonitorMetrics(), "http://gw:8090",
                   runbook_url="https://wiki.example/driftgate#{alert}", evaluate_every=5)
    rule = AlertRule(name="feature_drift", condition="drift")
    book = AlertBook()
    assert book.observe(obs(rule, True, 0.2, "std_change"), 1_800_000_000) is None  # pending
    _, alert = book.observe(obs(rule, True, 0.2, "std_change"), 1_800_000_005)
    payload = d.enrich(alert.payload("firing", 1_800_000_005), rule, "feature", 1_800_000_005)
    url, [body] = format_for(sink, payload)
    assert url == "http://am:9093/api/v2/alerts"
    assert body["labels"] == {"alertname": "feature_drift", "route": "r", "variant": "v1",
                              "feature": "x", "severity": "warning"}
    assert body["annotations"]["metric"] == "std_change"
    assert body["annotations"]["runbook_url"] == "https://wiki.example/driftgate#feature_drift"
    assert body["annotations"]["description"].startswith("The distribution of feature 'x'")
    assert body["generatorURL"] == "http://gw:8090/monitoring?route=r&variant=v1&feature=x"
    assert body["endsAt"] == iso(1_800_000_005 + 4 * 60)  # four re-sends ahead
    resolved = d.enrich(alert.payload("resolved", 1_800_000_100), rule, "feature", 1_800_000_100)
    assert format_for(sink, resolved)[1][0]["endsAt"] == iso(1_800_000_100)


class Flaky(Recorder):
    """Answers 500 the first `failures` times, then 200."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def __call__(self, scope, receive, send):
        if self.failures > 0 and scope["type"] == "http":
            self.failures -= 1
            while (await receive()).get("more_body"):
                pass
            await _send(send, 500, b"{}")
            return
        await super().__call__(scope, receive, send)


def test_every_sink_format_delivered_with_retries():
    hook, slack, pd = Flaky(2), Recorder(), Recorder()
    servers = [AppServer(app) for app in (hook, slack, pd)]
    sinks = {
        "hook": SinkConfig(type="webhook", url=f"{servers[0].url}/h"),
        "slack": SinkConfig(type="slack", url=f"{servers[1].url}/s"),
        "pd": SinkConfig(type="pagerduty", url=f"{servers[2].url}/v2/enqueue", routing_key="K"),
    }
    payload = {"status": "firing", "alert": "feature_drift", "severity": "warning", "route": "r",
               "variant": "v1", "feature": "x", "metric": "mean_change", "value": 0.07,
               "threshold": 0.05, "window": "10s", "started_at": "2026-01-01T00:00:00Z",
               "summary": "r/v1: feature 'x' drifted"}
    metrics = MonitorMetrics()

    async def run():
        d = Dispatcher(sinks, metrics, "http://127.0.0.1:8090")
        await d.start()
        d.notify(payload, list(sinks))
        d.notify({**payload, "status": "resolved", "ended_at": "2026-01-01T00:05:00Z"}, ["pd"])
        d.notify_retrain("r", RetrainConfig(url=f"{servers[1].url}/dispatch"), payload)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (len(hook.received) < 1 or len(pd.received) < 2
                                               or len(slack.received) < 2):
            await asyncio.sleep(0.05)
        await d.aclose()

    try:
        asyncio.run(run())
        assert [b for _, b in hook.received] == [payload]  # after two 500s, retried
        texts = [b for _, b in slack.received]
        assert {"text": ":rotating_light: [FIRING] r/v1: feature 'x' drifted"} in texts
        assert {"event_type": "driftgate-drift", "client_payload": payload} in texts
        trigger, resolve = sorted((b for _, b in pd.received), key=lambda b: b["event_action"] != "trigger")
        assert trigger["event_action"] == "trigger" and trigger["routing_key"] == "K"
        assert trigger["payload"]["severity"] == "warning" and trigger["payload"]["custom_details"] == payload
        assert resolve["event_action"] == "resolve" and resolve["dedup_key"] == trigger["dedup_key"]
        assert trigger["dedup_key"] == dedup_key(payload)
    finally:
        for s in servers:
            s.stop()


def test_firing_alerts_survive_a_restart_without_paging_again():
    rule = AlertRule(name="drift", condition="drift", **{"for": 0}, keep_firing_for=10)
    book = AlertBook()
    assert book.observe(obs(rule, True, 0.2, "std_change"), 0)[0] == "firing"
    saved = json.loads(json.dumps(book.to_json()))
    again = AlertBook()
    assert again.restore(saved, {"drift": rule}) == 1
    status, alert = again.observe(obs(rule, True, 0.25, "std_change"), 30)
    assert status == "active" and alert.payload("firing", 30)["started_at"] == iso(0)
    status, alert = again.observe(obs(rule, False, 0.01, "std_change"), 45)
    assert status == "resolved" and alert.payload(status, 45)["metric"] == "std_change"
    # a rule removed from the config takes its alerts with it, silently
    assert AlertBook().restore(saved, {}) == 0
