"""Alert lifecycle on an injected clock, and every sink format posted to real local servers."""

import asyncio
import time

from gateway.alerts.rules import AlertBook, Observation
from gateway.alerts.sinks import Dispatcher, dedup_key
from gateway.config import AlertRule, RetrainConfig, SinkConfig
from gateway.monitor.metrics import MonitorMetrics
from tests.servers import AppServer, Recorder, _send


def obs(rule, active, value=0.2):
    return Observation("r", "v1", "x", rule, active, "wasserstein", value, 0.1, "10s", "x drifted")


def test_for_repeat_and_resolve_on_the_injected_clock():
    rule = AlertRule(name="drift", condition="drift", **{"for": 30}, repeat_interval=300)
    book = AlertBook()
    assert book.observe(obs(rule, True), 0) == []          # pending
    assert book.observe(obs(rule, True), 29) == []
    [(status, alert)] = book.observe(obs(rule, True), 30)   # held for 30 s: fires
    assert status == "firing" and alert.payload("firing", 30)["started_at"].endswith("Z")
    assert book.observe(obs(rule, True), 100) == []        # no repeat before repeat_interval
    assert [s for s, _ in book.observe(obs(rule, True), 330)] == ["firing"]
    [(status, alert)] = book.observe(obs(rule, False, 0.01), 340)
    payload = alert.payload(status, 340)
    assert status == "resolved" and "ended_at" in payload
    assert book.alerts == {}
    # a condition that clears while pending never fires nor resolves
    assert book.observe(obs(rule, True), 400) == []
    assert book.observe(obs(rule, False), 410) == []


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
        d = Dispatcher(sinks, metrics, "http://127.0.0.1:8090/monitoring")
        await d.start()
        d.notify(payload, None)
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
