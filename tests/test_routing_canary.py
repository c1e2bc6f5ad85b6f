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
