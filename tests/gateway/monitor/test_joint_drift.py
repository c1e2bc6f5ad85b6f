"""Joint drift through the monitor's real evaluator on an injected clock
(benchmarks.false_alarms.Simulation): ~100 req/s of 1-4-row requests, 20 normal features, f0
and f1 correlated +0.8 in the reference."""

import numpy as np
import pytest

from benchmarks.false_alarms import DRIFTS, Drift, Simulation

ROWS_PER_SECOND = 250  # 100 req/s x 2.5 rows


def _run_drift(drift: Drift, seed: int, seconds: float = 60.0, extra_yaml: str = ""):
    sim = Simulation(["correlated"], ROWS_PER_SECOND, seed, extra_yaml)
    try:
        sim.run(600)  # windows full of clean traffic
        assert [p for p in sim.recorder.sent if p["status"] == "firing"] == []
        sim.drift = (drift, sim.now)
        started = sim.now
        sim.run(seconds)
        return [(p, _at(p) - started) for p in sim.recorder.sent if p["status"] == "firing"
                and not p["repeat"]]
    finally:
        sim.close()


def _at(payload: dict) -> float:
    import datetime as dt
    return dt.datetime.fromisoformat(payload["started_at"].replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("seed", [1, 2])
def test_a_correlation_flip_alerts_joint_drift_naming_the_pair_and_no_feature(seed):
    [flip] = [d for d in DRIFTS if d.rule == "joint_drift"]
    fired = _run_drift(flip, seed)
    joint = [(p, t) for p, t in fired if p["alert"] == "joint_drift"]
    assert joint, "no joint_drift alert within 60 s"
    payload, delay = joint[0]
    assert delay <= 30, delay
    assert payload["feature"] == "(joint)" and payload["features"][0] in ("f0", "f1"), payload
    assert "f0" in payload["summary"] or "f1" in payload["summary"]
    assert not [p for p, _ in fired if p["feature"] in ("f0", "f1")], fired


def test_a_mean_shift_of_another_feature_still_alerts_that_feature():
    def shift_f5(rng, x, family):
        x = x.copy()
        x[:, 5] *= 1.06
        return x

    fired = _run_drift(Drift("f5 mean +6%", ("correlated",), shift_f5, "feature_drift",
                             joint=True, feature="f5"), seed=3)
    assert any(p["alert"] == "feature_drift" and p["feature"] == "f5" and t <= 30
               for p, t in fired), fired


@pytest.mark.slow
def test_an_hour_of_clean_traffic_evaluated_every_second_raises_nothing():
    sim = Simulation(["correlated"], ROWS_PER_SECOND, seed=4,
                     extra_yaml="alerts: {evaluate_every: 1s}")
    try:
        sim.run(600)
        sim.recorder.sent.clear()
        sim.run(3600)
        assert [p for p in sim.recorder.sent if p["status"] == "firing"] == []
    finally:
        sim.close()


def test_monitoring_view_reports_the_joint_verdict():
    sim = Simulation(["correlated"], ROWS_PER_SECOND, seed=5)
    try:
        sim.run(60)
        view = sim.evaluator.snapshot()["routes"]["correlated"]["variants"]["default"]["inputs"]
        joint = view["joint"]
        assert joint["drifted"] is False and joint["threshold"] == 1.0
        assert 0 <= joint["score"] < 1 and joint["directions"] == 32
        assert set(joint["windows"]) == {"short", "long"}
        assert np.isfinite(joint["windows"]["long"]["rows"])
    finally:
        sim.close()
