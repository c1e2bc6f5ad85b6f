"""Model-quality rules (`accuracy < 0.95 for 30m`) on an injected clock, through the evaluator
the monitor process runs, with labels joined the way /feedback joins them."""

import numpy as np
from prometheus_client import generate_latest

from gateway.config import parse_config
from gateway.experiments.book import RouteExperiment
from gateway.monitor.evaluator import Evaluator
from gateway.monitor.metrics import MonitorMetrics

CONFIG = """
upstreams: {a: {url: "http://127.0.0.1:1"}, b: {url: "http://127.0.0.1:2"}}
routes:
  - name: churn
    match: {path_prefix: /}
    variants: [{name: control, upstream: a}, {name: candidate, upstream: b}]
    monitor: {learn: {rows: 100}, feedback: {window: 10m, slice: 30s, min_labels: 200}}
alerts:
  rules:
    - {name: accuracy_low, condition: quality, metric: accuracy, below: 0.95, for: 30m,
       severity: critical}
"""


def label(exp: RouteExperiment, variant: str, n: int, accuracy: float, now: float, rng) -> None:
    truth = rng.integers(0, 2, n)
    correct = rng.random(n) < accuracy
    predicted = np.where(correct, truth, 1 - truth).astype(np.int32)
    exp.record_labels(variant, "label", truth.astype(float), predicted, predicted.astype(float),
                      np.full(n, np.nan), now)


def test_accuracy_rule_fires_after_30_minutes_below_and_resolves(tmp_path):
    cfg = parse_config(CONFIG)
    exp = RouteExperiment(cfg.routes[0], tmp_path)
    metrics = MonitorMetrics()
    evaluator = Evaluator(cfg, {}, metrics, None, {"churn": exp})
    rng = np.random.default_rng(0)
    t0 = 1_800_000_000.0

    def minute(m: int, acc_candidate: float, labels: int = 100) -> None:
        now = t0 + 60 * m
        label(exp, "control", labels, 0.97, now, rng)
        label(exp, "candidate", labels, acc_candidate, now, rng)
        evaluator.run(now)

    minute(0, 0.90, labels=150)  # 150 labels per variant: below min_labels, nothing pending
    assert evaluator.book.alerts == {}
    for m in range(1, 31):  # the candidate at 90% for 30 minutes
        minute(m, 0.90)
        assert not evaluator.book.firing(), m
    minute(31, 0.90)
    [alert] = evaluator.book.firing()
    payload = alert.payload("firing", t0)
    assert (payload["route"], payload["variant"], payload["metric"]) == ("churn", "candidate",
                                                                         "accuracy")
    assert payload["value"] < 0.95 and payload["threshold"] == 0.95
    assert "accuracy" in payload["summary"] and "below 0.95" in payload["summary"]
    text = generate_latest(metrics.registry).decode()
    assert 'driftgate_model_quality{metric="accuracy",route="churn",variant="candidate"}' in text
    assert 'driftgate_alerts_total{route="churn",rule="accuracy_low",status="firing"} 1.0' in text
    for m in range(32, 45):  # fixed: the 10-minute window recovers, the alert resolves
        minute(m, 0.99)
    assert not evaluator.book.firing()
    assert 'status="resolved"} 1.0' in generate_latest(metrics.registry).decode()


def test_experiment_state_survives_a_restart(tmp_path):
    cfg = parse_config(CONFIG)
    exp = RouteExperiment(cfg.routes[0], tmp_path)
    exp.record_requests("control", np.full(50, 0.02), np.zeros(50, bool))
    label(exp, "candidate", 300, 0.8, 1_800_000_000.0, np.random.default_rng(1))
    before = exp.report(1_800_000_000.0)
    exp.save()
    again = RouteExperiment(cfg.routes[0], tmp_path)
    assert again.load()
    after = again.report(1_800_000_000.0)
    assert after["variants"] == before["variants"]
    assert after["since"] == before["since"]


def test_a_rule_counts_the_labels_of_its_own_metric(tmp_path):
    """A route taking both class labels and regression values: an MAE rule waits for
    min_labels regression values, however many class labels have come."""
    cfg = parse_config(CONFIG.replace(
        "metric: accuracy, below: 0.95, for: 30m", "metric: mae, above: 1.0, for: 0s"))
    exp = RouteExperiment(cfg.routes[0], tmp_path)
    evaluator = Evaluator(cfg, {}, MonitorMetrics(), None, {"churn": exp})
    rng = np.random.default_rng(2)
    now = 1_800_000_000.0

    def values(n: int) -> None:  # predictions 3.0 off: MAE 3, far above the rule's 1.0
        truth = rng.normal(10, 1, n)
        exp.record_labels("candidate", "value", truth, np.zeros(n, np.int32), truth + 3.0,
                          np.full(n, np.nan), now)

    label(exp, "candidate", 500, 0.9, now, rng)
    values(50)
    evaluator.run(now)
    assert not evaluator.book.firing(), "50 values are below min_labels (200)"
    values(200)
    evaluator.run(now + 1)
    [alert] = evaluator.book.firing()
    assert alert.payload("firing", now)["metric"] == "mae"
