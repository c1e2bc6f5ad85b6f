"""Alert delivery: webhook, Slack, PagerDuty Events v2, Alertmanager API v2, retrain hooks.

The evaluator never waits for a delivery: it hands notifications to `Dispatcher.submit()`,
a bounded queue that one task on the monitor process's event loop drains with httpx, each post
with a timeout and retries with backoff. Deliveries are counted by sink and outcome.
"""

from __future__ import annotations

import asyncio
import hashlib

import httpx

from gateway.config import RetrainConfig, SinkConfig
from gateway.logs import get_logger

QUEUE_SIZE = 1000


def dedup_key(payload: dict) -> str:
    ident = "|".join(str(payload.get(k)) for k in ("route", "variant", "feature", "alert"))
    return "driftgate-" + hashlib.sha256(ident.encode()).hexdigest()[:32]


def format_for(sink: SinkConfig, payload: dict, generator_url: str) -> tuple[str, object]:
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
        labels = {"alertname": payload["alert"], "severity": payload["severity"],
                  "route": payload["route"], "variant": payload["variant"],
                  "feature": payload["feature"], "metric": payload["metric"],
                  "source": "driftgate"}
        alert = {"labels": labels,
                 "annotations": {"summary": payload["summary"],
                                 "value": str(payload["value"]), "threshold": str(payload["threshold"]),
                                 "window": payload["window"]},
                 "startsAt": payload["started_at"], "generatorURL": generator_url}
        if not firing:
            alert["endsAt"] = payload["ended_at"]
        return sink.url.rstrip("/") + "/api/v2/alerts", [alert]
    return sink.url, payload


def retrain_body(cfg: RetrainConfig, payload: dict) -> dict:
    """A GitHub repository_dispatch style event: {event_type, client_payload}."""
    return {"event_type": cfg.event_type, "client_payload": payload}


class Dispatcher:
    def __init__(self, sinks: dict[str, SinkConfig], metrics, generator_url: str) -> None:
        self.sinks = sinks
        self.metrics = metrics
        self.generator_url = generator_url
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

    def notify(self, payload: dict, sink_names: list[str] | None) -> None:
        for name in sink_names if sink_names is not None else list(self.sinks):
            sink = self.sinks[name]
            url, body = format_for(sink, payload, self.generator_url)
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
