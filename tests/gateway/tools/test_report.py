"""`driftgate report`'s tables."""

from gateway.tools.report import format_experiment


def _variant(requests: int) -> dict:
    return {"requests": requests, "error_rate": 0.0, "latency_ms": {"p50": 1.0},
            "labels": {"labels": 0, "regression_labels": 0, "rewards": 0}, "quality": {}}


def test_a_route_without_a_split_promises_no_tests():
    one = {"route": "churn", "control": "churn-v1", "variants": {"churn-v1": _variant(50)},
           "tests": []}
    assert format_experiment(one).splitlines()[-1] == (
        "  one variant: nothing to compare (an experiment needs a route with `variants`)")
    two = {**one, "variants": {"a": _variant(5), "b": _variant(5)}}
    assert format_experiment(two).splitlines()[-1] == (
        "  no tests yet: each needs 30 requests or labels per variant")
