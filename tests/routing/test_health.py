"""routing.health on an injected clock: ejection back-off, active thresholds, retry budget."""

from routing.health import HealthCheck, OutlierDetector, RetryBudget


def test_ejection_backoff_probe_and_recovery():
    d = OutlierDetector(consecutive_failures=5, base_ejection=10, max_ejection=300)
    for _ in range(4):
        assert not d.record(False, 0)
    assert d.available(0)
    assert d.record(False, 0)                 # 5th in a row: ejected for 10 s
    assert not d.available(9.9) and d.available(10)
    for _ in range(5):                        # still failing when probed: ejected 20 s
        d.record(False, 10)
    assert not d.available(29.9) and d.available(30)
    d.record(True, 30)                        # a success brings it back
    assert d.available(30) and d.failures == 0
    for k in range(40):                       # back-off is capped at max_ejection
        for _ in range(5):
            d.record(False, 1000 * k)
    assert d.ejected_until - 39_000 == 300


def test_success_resets_the_consecutive_count():
    d = OutlierDetector(consecutive_failures=3)
    for _ in range(10):
        d.record(False, 0)
        d.record(False, 0)
        d.record(True, 0)
    assert d.available(0)


def test_active_check_thresholds():
    h = HealthCheck(healthy_threshold=2, unhealthy_threshold=3)
    assert h.healthy
    assert [h.record(False) for _ in range(3)] == [False, False, True] and not h.healthy
    assert [h.record(True) for _ in range(2)] == [False, True] and h.healthy


def test_retry_budget_caps_retries_at_a_share_of_requests():
    b = RetryBudget(ratio=0.2, min_retries=3, window=10)
    granted = 0
    for i in range(1000):  # 100 req/s for 10 s, every request wanting a retry
        now = i / 100
        b.record_request(now)
        granted += b.try_retry(now)
    assert granted <= 0.2 * 1000 + 3 * 2 + 5
    assert granted >= 0.15 * 1000
    quiet = RetryBudget(ratio=0.2, min_retries=3)
    assert [quiet.try_retry(0) for _ in range(5)] == [True, True, True, False, False]
