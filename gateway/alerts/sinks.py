"""Alert delivery: webhook, Slack, PagerDuty Events v2, Alertmanager API v2, retrain hooks.

The evaluator never waits for a delivery: it hands notifications to `Dispatcher.submit()`,
a bounded queue that one task on the monitor process's event loop drains with httpx, each post
with a timeout and retries with backoff. Deliveries are counted by sink and outcome.

Cadence while an alert fires, per sink (`Dispatcher.due`): Alertmanager gets it every
ALERTMANAGER_RESEND seconds with `endsAt` four re-sends ahead, as Prometheus does (its
`resolve_timeout` never ends a live alert; a gateway that dies lets it expire), and an explicit
`endsAt` = now when it resolves. Webhook, Slack and PagerDuty (by its dedup key) get a repeat
every rule's `repeat_interval`.
"""

from __future__ import annotations

import asyncio
import hashlib
from urllib.parse import urlencode

import httpx

from gateway.alerts.rules import iso
from gateway.config import AlertRule, RetrainConfig, SinkConfig
from gateway.logs import get_logger

QUEUE_SIZE = 1000
ALERTMANAGER_RESEND = 60.0   # Prometheus' --rules.alert.resend-delay default
VALID_RESENDS = 4            # endsAt = now + 4 re-send intervals, as Prometheus sets it

DESCRIPTIONS = {
    "drift": "The distribution of {what} '{feature}' on {route}/{variant} has moved away from "
             "its reference by more than sampling noise explains.",
    "prediction_drift": "The distribution of {what} '{feature}' on {route}/{variant} has moved "
                        "away from its reference by more than sampling noise explains.",
    "outliers": "More of {what} '{feature}' on {route}/{variant} falls outside the range seen in "
                "its reference (or in unseen categories) than the threshold allows.",
    "missing": "{what} '{feature}' on {route}/{variant} is missing more often than in its "
               "reference.",
    "joint_drift": "The numeric inputs of {route}/{variant} move together differently from "
                   "their reference (a correlation or a joint shape changed) while each may "
                   "look unchanged alone.",
    "metric": "{what} '{feature}' on {route}/{variant}: a measure is past the rule's threshold.",
    "quality": "Model quality of {route}/{variant} from labelled feedback is past the rule's "
               "threshold.",
}


def dedup_key(payload: dict) -> str:
    ident = "|".join(str(payload.get(k)) for k in ("route", "variant", "feature", "alert"))
    return "driftgate-" + hashlib.sha256(ident.encode()).hexdigest()[:32]


def format_for(sink: SinkConfig, payload: dict) -> tuple[str, object]:
    """(url, JSON body) of one notification in the sink's own format."""
    firing = payload["status"] == "firing"
    if sink.type == "slack":
        icon = ":rotating_light:" if firing else ":white_check_mark:"
        return sink.url, {"text": f"{icon} [{payload['status'].upper()}] {payload['summary']}"}
    if sink.type == "pagerduty":
        body = {"routing_key": sink.routing_key, "dedup_key": dedup_key(payload),
                "event_action": "trigger" if firing else "resolve"}
        if firing:
            severity = {"info": "info", "warning": "warning", "error": "error",
                        "critical": "critical"}[payload["severity"]]
            body["payload"] = {"summary": payload["summary"][:1024],
                               "source": f"driftgate/{payload['route']}/{payload['variant']}",
                               "severity": severity, "component": payload["feature"],
                               "custom_details": payload}
        return sink.url or "https://events.pagerduty.com/v2/enqueue", body
    if sink.type == "alertmanager":
        # Identity: these labels only, the same for the alert's whole life; what it measured
        # goes in annotations (a changing label would make Alertmanager see a new alert).
        labels = {k: payload[src] for k, src in (
            ("alertname", "alert"), ("route", "route"), ("variant", "variant"),
            ("feature", "feature"), ("severity", "severity"))}
        annotations = {"summary": payload["summary"], "description": payload["description"],
                       "metric": payload["metric"], "value": str(payload["value"]),
                       "threshold": str(payload["threshold"]), "window": payload["window"]}
        if payload.get("runbook_url"):
            annotations["runbook_url"] = payload["runbook_url"]
        alert = {"labels": labels, "annotations": annotations,
                 "startsAt": payload["started_at"], "generatorURL": payload["generator_url"],
                 "endsAt": payload["valid_until"] if firing else payload["ended_at"]}
        return sink.url.rstrip("/") + "/api/v2/alerts", [alert]
    return sink.url, payload


def retrain_body(cfg: RetrainConfig, payload: dict) -> dict:
    """A GitHub repository_dispatch style event: {event_type, client_payload}."""
    return {"event_type": cfg.event_type, "client_payload": payload}


class Dispatcher:
    def __init__(self, sinks: dict[str, SinkConfig], metrics, external_url: str,
                 runbook_url: str | None = None, evaluate_every: float = 5.0) -> None:
        self.sinks = sinks
        self.metrics = metrics
        self.external_url = external_url.rstrip("/")
        self.runbook_url = runbook_url
        # Alertmanager re-sends: at least once per evaluation, at most once a minute
        self.resend = max(ALERTMANAGER_RESEND, evaluate_every)
        self.log = get_logger()
        self._queue: asyncio.Queue | None = None
        self._deliveries: set[asyncio.Task] = set()  # held: the loop keeps only weak refs
        self._task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue(QUEUE_SIZE)
        self._client = httpx.AsyncClient()
        self._task = asyncio.create_task(self._run())

    def submit(self, sink_name: str, url: str, body: object, headers: dict, timeout: float,
               retries: int) -> None:
        """Queue one post (on the event loop, never waiting). A full queue drops and counts."""
        if self._queue is None:
            return
        self._enqueue((sink_name, url, body, headers, timeout, retries))

    def due(self, rule: AlertRule, status: str, sent: dict[str, float], now: float) -> list[str]:
        """The sinks to post to now: every one of the rule's for a new or resolved alert; for
        one still firing, those whose re-send interval has passed (`sent`: sink -> last post)."""
        names = rule.sinks if rule.sinks is not None else list(self.sinks)
        if status != "active":
            return names
        return [n for n in names if n in self.sinks and now - sent.get(n, 0.0) >= (
            self.resend if self.sinks[n].type == "alertmanager" else rule.repeat_interval)]

    def enrich(self, payload: dict, rule: AlertRule, what: str, now: float) -> dict:
        """Links, description and validity every sink's format reads."""
        names = {k: payload[k] for k in ("alert", "route", "variant", "feature")}
        query = urlencode({k: payload[k] for k in ("route", "variant", "feature")})
        payload["generator_url"] = f"{self.external_url}/monitoring?{query}"
        runbook = rule.runbook_url or self.runbook_url
        payload["runbook_url"] = runbook.format(**names) if runbook else None
        template = DESCRIPTIONS[rule.condition]
        payload["description"] = (template.format(what=what, **names) + " "
                                  + payload["summary"] + ".").strip()
        payload["valid_until"] = iso(now + VALID_RESENDS * self.resend)
        return payload

    def notify(self, payload: dict, sink_names: list[str]) -> None:
        for name in sink_names:
            sink = self.sinks.get(name)
            if sink is None:
                continue
            url, body = format_for(sink, payload)
            self.submit(name, url, body, sink.headers, sink.timeout, sink.retries)

    def notify_retrain(self, route: str, cfg: RetrainConfig, payload: dict) -> None:
        self.submit(f"retrain:{route}", cfg.url, retrain_body(cfg, payload), cfg.headers, 10.0, 3)

    def _enqueue(self, item: tuple) -> None:
        assert self._queue is not None
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.metrics.alert_delivery(item[0], "dropped").inc()

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            task = asyncio.create_task(self._deliver(*item))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, sink: str, url: str, body: object, headers: dict, timeout: float,
                       retries: int) -> None:
        assert self._client is not None
        delay = 0.5
        for attempt in range(retries + 1):
            try:
                r = await self._client.post(url, json=body, headers=headers, timeout=timeout)
                if r.status_code < 300:
                    self.metrics.alert_delivery(sink, "sent").inc()
                    return
                error = f"HTTP {r.status_code}: {r.text[:200]}"
                if 400 <= r.status_code < 500 and r.status_code != 429:
                    break  # the sink refuses this body: retrying will not help
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt < retries:
                await asyncio.sleep(delay)
                delay *= 2
        self.metrics.alert_delivery(sink, "failed").inc()
        self.log.warning("alert delivery failed", sink=sink, url=url, error=error)

    async def aclose(self) -> None:
        # Let queued notifications (e.g. resolutions at shutdown) go out, briefly.
        if self._queue is not None:
            deadline = asyncio.get_running_loop().time() + 2.0
            while not self._queue.empty() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
        if self._task is not None:
            self._task.cancel()
        if self._client is not None:
            await self._client.aclose()
