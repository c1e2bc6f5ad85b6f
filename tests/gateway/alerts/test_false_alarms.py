"""False alarms and detection delay of the default rules, on the real evaluator with an injected
clock (benchmarks/false_alarms.py): a simulated day of clean traffic per feature family in a
minute or so of CPU, and the drifts the README promises within 30 s."""

import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from benchmarks.false_alarms import DRIFTS, FAMILIES, detection_delay, false_alarms

ROWS_PER_SECOND = 400  # 100 req/s of 4-row requests


def _clean_day(family: str) -> list[dict]:
    return false_alarms([family], 24.0, ROWS_PER_SECOND, seed=7)[family]


@pytest.mark.slow
def test_at_most_one_false_alert_per_simulated_day_per_family():
    with ProcessPoolExecutor(max_workers=min(len(FAMILIES), os.cpu_count() or 1)) as pool:
        fired = dict(zip(FAMILIES, pool.map(_clean_day, FAMILIES)))
    too_many = {family: [(p["alert"], p["feature"], p["metric"], p["value"]) for p in alerts]
                for family, alerts in fired.items() if len(alerts) > 1}
    assert not too_many, f"more than one false alert in 24 simulated hours: {too_many}"


@pytest.mark.parametrize("drift,family", [
    ("mean +6%", "normal"), ("std +10%", "normal"), ("2% outliers", "lognormal"),
    ("3% missing", "poisson"), ("category share +10 pts", "categorical")])
def test_a_promised_drift_alerts_within_30_seconds(drift, family):
    [spec] = [d for d in DRIFTS if d.name == drift]
    delays = [detection_delay(spec, family, ROWS_PER_SECOND, seed) for seed in (3, 4)]
    assert all(d is not None and d <= 30 for d in delays), delays
