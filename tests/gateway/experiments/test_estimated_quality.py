"""Label-free quality (stats.cbpe) through the monitor's feedback desk and experiment book:
predictions in, estimates out before any label; labels then give the realized accuracy of the
same predictions, and a miscalibrated model is corrected once labels fit a calibration map."""

import numpy as np
import orjson

from gateway.config import parse_config
from gateway.experiments.book import RouteExperiment
from gateway.experiments.feedback import FeedbackDesk
from gateway.monitor.evaluator import Evaluator
from gateway.monitor.metrics import MonitorMetrics
from stats import cbpe

CONFIG = """
upstreams: {a: {url: "http://127.0.0.1:1"}}
routes:
  - name: churn
    match: {path_prefix: /}
    upstream: a
    monitor: {learn: {rows: 100}, feedback: {window: 10m, slice: 30s, calibration_labels: 1000}}
alerts:
  rules:
    - {name: accuracy_estimate_low, condition: quality, metric: estimated_accuracy, below: 0.8}
"""
T0 = 1_800_000_000.0


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


class Stack:
    def __init__(self, tmp_path):
        self.cfg = parse_config(CONFIG)
        self.exp = RouteExperiment(self.cfg.routes[0], tmp_path)
        self.metrics = MonitorMetrics()
        self.desk = FeedbackDesk(self.cfg.feedback, {"churn": self.exp}, self.metrics)
        self.evaluator = Evaluator(self.cfg, {}, self.metrics, None, {"churn": self.exp})
        self.n = 0

    def predict(self, probabilities: np.ndarray, at: float) -> list[bytes]:
        ids = []
        for p in probabilities:
            self.n += 1
            rid = f"r{self.n}".encode()
            self.desk.remember("churn", "a", rid, at, {"probability": [float(p)]}, 1)
            ids.append(rid)
        self.desk.flush()
        return ids

    def label(self, ids: list[bytes], labels: np.ndarray, at: float) -> None:
        items = [{"request_id": rid.decode(), "label": int(y)} for rid, y in zip(ids, labels)]
        for i in range(0, len(items), 500):
            status, body = self.desk.handle(orjson.dumps(items[i:i + 500]), at)
            assert status == 200 and body["accepted"] == len(items[i:i + 500]), body

    def estimate(self, at: float) -> dict:
        return self.exp.quality(at)["a"]["estimated"]


def test_estimate_follows_inputs_into_a_harder_region_before_labels(tmp_path):
    rng = np.random.default_rng(1)
    s = Stack(tmp_path)
    easy = sigmoid(1.5 * rng.normal(0, 3, 3000))  # a calibrated model, confident inputs
    ids = s.predict(easy, T0)
    s.label(ids, rng.random(3000) < easy, T0 + 60)
    assert s.estimate(T0 + 60)["calibrated"]
    # the inputs move where the model is unsure; the old predictions leave the window
    t1 = T0 + 1200
    hard = sigmoid(1.5 * rng.normal(0, 0.5, 4000))
    ids = s.predict(hard, t1)
    before = s.estimate(t1 + 1)
    expected = float(np.maximum(hard, 1 - hard).mean())
    assert before["rows"] == 4000 and before["labelled_share"] == 0
    assert "realized_accuracy" not in before
    assert abs(before["estimated_accuracy"] - expected) <= 0.03, (before, expected)
    assert expected < 0.75  # a harder region indeed (easy: ~0.93)
    # the label-free rule fired without a single label for these predictions
    s.evaluator.run(t1 + 1)
    s.evaluator.run(t1 + 7)
    assert [a.key[3] for a in s.evaluator.book.firing()] == ["accuracy_estimate_low"]
    # the labels come: the realized accuracy of the same predictions agrees
    truth = rng.random(4000) < hard
    s.label(ids, truth, t1 + 120)
    after = s.estimate(t1 + 121)
    realized = float(((hard >= 0.5) == truth).mean())
    assert after["labelled_share"] == 1.0 and abs(after["realized_accuracy"] - realized) < 1e-9
    assert abs(before["estimated_accuracy"] - realized) <= 0.03, (before, realized)
    # binary extras, near their realized values
    tp = float(((hard >= 0.5) & truth).sum())
    assert abs(after["estimated_precision"] - tp / (hard >= 0.5).sum()) <= 0.03
    assert abs(after["estimated_recall"] - tp / truth.sum()) <= 0.03
    assert 0.5 < after["estimated_auc"] < 0.8


def test_an_overconfident_model_is_corrected_once_labels_fit_a_calibration(tmp_path):
    rng = np.random.default_rng(2)
    s = Stack(tmp_path)
    x = rng.normal(0, 1, 3000)
    truth_p, said = sigmoid(1.5 * x), sigmoid(4.0 * x)  # says more than it knows
    ids = s.predict(said, T0)
    raw = s.estimate(T0 + 1)
    assert not raw["calibrated"]
    truth = rng.random(3000) < truth_p
    realized = float(((said >= 0.5) == truth).mean())
    assert raw["estimated_accuracy"] - realized > 0.05  # as given: too hopeful
    s.label(ids[:1000], truth[:1000], T0 + 30)  # the first 1,000 labels fit the map
    fitted = s.estimate(T0 + 31)
    assert fitted["calibrated"]
    assert abs(fitted["estimated_accuracy"] - realized) <= 0.03, (fitted, realized)


def test_platt_calibration_recovers_a_known_distortion():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, 20_000)
    said = 1 / (1 + np.exp(-4 * x))
    outcomes = rng.random(20_000) < 1 / (1 + np.exp(-(1.5 * x - 0.5)))
    a, b = cbpe.fit_calibration(said, outcomes)
    assert abs(a - 0.375) < 0.03 and abs(b + 0.5) < 0.06
    assert np.allclose(cbpe.calibrate(np.array([0.5]), None), [0.5])


def test_a_multi_class_probability_vector_is_estimated_from_its_top_class(tmp_path):
    rng = np.random.default_rng(5)
    s = Stack(tmp_path)
    logits = rng.normal(0, 1.2, (3000, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # calibrated
    ids = []
    for row in probs:
        s.n += 1
        rid = f"m{s.n}".encode()
        s.desk.remember("churn", "a", rid, T0, {f"prediction_{k}": [float(row[k])]
                                                for k in range(3)}, 1)
        ids.append(rid)
    s.desk.flush()
    before = s.estimate(T0 + 1)
    expected = float(probs.max(axis=1).mean())
    assert "estimated_auc" not in before and before["rows"] == 3000
    assert abs(before["estimated_accuracy"] - expected) <= 0.03, (before, expected)
    truth = np.array([rng.choice(3, p=p) for p in probs])
    s.label(ids, truth, T0 + 60)
    after = s.estimate(T0 + 61)
    realized = float((probs.argmax(axis=1) == truth).mean())
    assert abs(after["realized_accuracy"] - realized) < 1e-9 and after["calibrated"]
    assert abs(before["estimated_accuracy"] - realized) <= 0.03
