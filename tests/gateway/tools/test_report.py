"""`driftgate report`'s tables."""

from gateway.tools.report import explain_test, format_experiment


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


def _test(effect, ci, p, significant, better, seq_p, seq_significant):
    return {"candidate": "candidate", "metric": "accuracy", "effect": effect, "ci95": ci,
            "p_value": p, "significant": significant, "better": better,
            "sequential": {"p_value": seq_p, "significant": seq_significant}}


def test_a_verdict_in_one_plain_sentence():
    exp = {"control": "control"}
    assert explain_test(exp, _test(-0.132, [-0.207, -0.058], 0.0001, True, "control", 0.307,
                                   False)) == (
        "candidate scores 13.2 points lower than control on accuracy (candidate is worse): the "
        "95% interval of candidate minus control is -20.7 to -5.8 points, a real difference "
        "(p<0.001); the sequential test, valid however often you look, is not yet sure "
        "(p=0.31): keep the experiment running before acting on it.")
    assert explain_test(exp, _test(0.004, [-0.01, 0.018], 0.56, False, None, 0.9, False)) == (
        "candidate and control do not differ on accuracy so far: the 95% interval of candidate "
        "minus control is -1.0 to +1.8 points, which includes 0 (p=0.56); the sequential test, "
        "valid however often you look, is not yet sure (p=0.9): keep the experiment running "
        "before acting on it.")


def test_estimated_quality_beside_the_realized_one():
    v = {**_variant(900), "estimated_quality": {
        "estimated_accuracy": 0.71234, "rows": 900.0, "calibrated": False,
        "labelled_share": 0.25, "realized_accuracy": 0.7}}
    text = format_experiment({"route": "churn", "control": "a", "variants": {"a": v},
                              "tests": []})
    assert ("  a: estimated accuracy 0.712 over the last 900 predictions (probabilities as "
            "given), realized 0.700 on the 25% labelled so far") in text.splitlines()
