"""routing.Canary on an injected clock: a healthy walk to 100%, an erroring rollback."""

import pytest

from routing.canary import SLO, Canary


def feed(c: Canary, n: int, ok: bool = True, latency: float = 0.01) -> None:
    for _ in range(n):
        c.record(ok, latency)


def test_healthy_candidate_walks_to_100():
    c = Canary("candidate", [5, 25, 50, 100], 300, SLO(0.01, 200, 200), now=0)
    seen = [c.percent]
    t = 0
    while c.state == "stepping" and t < 10_000:
        feed(c, 250)
        t += 60
        if c.evaluate(t) == "advance":
            seen.append(c.percent)
    assert seen == [5, 25, 50, 100] and c.state == "done"
    assert t == 900  # three intervals of 300 s


def test_no_step_without_enough_traffic():
    c = Canary("candidate", [5, 100], 10, SLO(min_requests=200), now=0)
    feed(c, 199)
    assert c.evaluate(1000) is None and c.percent == 5


def test_errors_roll_back_at_the_first_evaluation_and_stay_there():
    c = Canary("candidate", [5, 25, 100], 300, SLO(0.01, 200, 100), now=0)
    feed(c, 95)
    feed(c, 5, ok=False)                      # 5% errors > 1%
    assert c.evaluate(1) == "rollback" and c.percent == 0 and "error rate" in c.reason
    feed(c, 1000)
    assert c.evaluate(10_000) is None and c.percent == 0


def test_slow_candidate_rolls_back_on_p99():
    c = Canary("candidate", [50, 100], 300, SLO(1.0, 200, 100), now=0)
    feed(c, 97, latency=0.01)
    feed(c, 3, latency=0.9)
    assert c.evaluate(1) == "rollback" and "p99" in c.reason


def test_bad_steps_rejected():
    with pytest.raises(ValueError):
        Canary("c", [5, 150], 1, SLO(), 0)


def feed_control(c: Canary, n: int, errors: int = 0) -> None:
    for i in range(n):
        c.record_control(i >= errors)


def test_significant_no_worse_waits_for_evidence_then_advances():
    c = Canary("candidate", [10, 100], 60, SLO(0.05, 200, 200), now=0,
               promote_when="significant_no_worse", control="control", margin=0.01)
    feed(c, 300)
    feed(c, 3, ok=False)            # 1% errors, inside the SLO
    feed_control(c, 300, errors=3)  # the control: 1% too
    # 300 each cannot show the gap is below 1 point: the step waits
    assert c.evaluate(61) is None and c.percent == 10
    _, _, upper = c.error_rate_gap()
    assert upper >= 0.01
    feed(c, 3000)
    feed(c, 30, ok=False)
    feed_control(c, 3000, errors=30)
    assert c.evaluate(120) == "advance" and c.percent == 100
    assert c.describe()["promote_when"] == "significant_no_worse"


def test_significant_no_worse_rolls_back_a_candidate_worse_than_the_control():
    c = Canary("candidate", [10, 100], 60, SLO(0.05, 200, 200), now=0,
               promote_when="significant_no_worse", control="control")
    feed(c, 970)
    feed(c, 30, ok=False)             # 3% errors: inside the 5% SLO ...
    feed_control(c, 1000, errors=5)   # ... but the control has 0.5%
    assert c.evaluate(61) == "rollback" and c.percent == 0
    assert "significantly worse" in c.reason and "control" in c.reason


def test_plain_slo_rule_ignores_the_control():
    c = Canary("candidate", [10, 100], 60, SLO(0.05, 200, 200), now=0)
    feed(c, 970)
    feed(c, 30, ok=False)
    feed_control(c, 1000, errors=5)
    assert c.evaluate(61) == "advance"


def test_the_canary_gap_is_stats_two_proportion_difference():
    """routing/ keeps a scalar copy of the unpooled two-proportion difference (the proxy process
    must not import stats/): both give the same numbers."""
    import numpy as np

    from routing.canary import proportion_gap
    from stats.experiments import two_proportions

    for x_a, n_a, x_b, n_b in [(3, 1000, 9, 1000), (0, 200, 5, 300), (50, 50, 0, 10), (7, 9, 7, 9)]:
        effect, se = proportion_gap(x_a, n_a, x_b, n_b)
        ref_effect, ref_se, _, _ = two_proportions(x_a, n_a, x_b, n_b)
        assert np.isclose(effect, ref_effect, rtol=0, atol=1e-15)
        assert np.isclose(se, ref_se, rtol=1e-12, atol=0)


def test_workers_counts_summed_in_one_deciding_canary_that_they_then_follow():
    """Two workers record; the supervisor's canary sums their tallies and decides once; the
    workers follow, and a tally from the step before is not counted in the next one."""
    slo = SLO(max_error_rate=0.05, max_p99_latency_ms=500, min_requests=100)
    decider, w1, w2 = (Canary("v2", [10, 50, 100], 60, slo, now=0) for _ in range(3))
    for worker, n in ((w1, 60), (w2, 60)):  # 120 in all: enough only together
        for _ in range(n):
            worker.record(True, 0.01)
    stale = w1.take_tally()
    decider.add_tally(stale)
    assert decider.evaluate(61) is None  # 60 requests: not enough yet
    decider.add_tally(w2.take_tally())
    assert decider.evaluate(61) == "advance" and decider.percent == 50
    for worker in (w1, w2):
        worker.follow(decider.position(), 61)
        assert worker.percent == 50 and worker.requests == 0
    decider.add_tally(stale)  # late counts of step 0: ignored
    assert decider.requests == 0
    w1.record(False, 0.01)
    decider.add_tally(w1.take_tally())
    assert (decider.requests, decider.errors) == (1, 1)
