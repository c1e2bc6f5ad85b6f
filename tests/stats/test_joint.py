"""stats.joint: a correlation flip no single histogram shows, seen through fixed directions;
clean windows stay quiet; the state merges and skips incomplete rows."""

import numpy as np

from stats.drift import evaluate
from stats.joint import fit_joint, joint_arrays, joint_from_arrays, judge
from stats.state import StreamState

F = 20
NAMES = [f"f{j}" for j in range(F)]


def rows(rng, n: int, rho: float) -> np.ndarray:
    """20 normal features on different scales; f0 and f1 correlated `rho`."""
    x = rng.standard_normal((n, F))
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho * rho) * x[:, 1]
    return x * np.arange(1, F + 1) + 50


def window(spec, x) -> StreamState:
    state = StreamState(spec.schema)
    projected, _ = spec.project(x)
    state.update(projected)
    return state


def test_a_correlation_flip_is_joint_drift_naming_the_pair_first():
    rng = np.random.default_rng(1)
    spec, reference = fit_joint(rows(rng, 10_000, 0.8), NAMES)
    current = rows(rng, 2_500, -0.8)  # 10 s at 250 rows/s
    verdict = judge(spec, evaluate(reference, window(spec, current)))
    assert verdict.drifted and verdict.score > 1
    assert set(verdict.top_features[:2]) == {"f0", "f1"}, verdict.top_features
    # each feature alone looks the same: the per-feature means and spreads did not move
    before = rows(rng, 2_500, 0.8)
    assert abs(current[:, 1].std() / before[:, 1].std() - 1) < 0.05


def test_what_one_feature_does_alone_is_not_joint_drift():
    """A mean shift or a spread change of one feature is the per-feature rules' to report:
    the projections' spread is judged against what the marginals alone explain."""
    rng = np.random.default_rng(5)
    spec, reference = fit_joint(rows(rng, 10_000, 0.8), NAMES)
    changes = [(5, lambda v: v * 1.06),                 # +6%: mean and spread alike
               (5, lambda v: 50 + (v - 50) * 1.3),      # spread +30%
               (0, lambda v: v + 5.0)]                  # f0 (correlated with f1) moves
    for column, change in changes:
        x = rows(rng, 20_000, 0.8)
        x[:, column] = change(x[:, column])
        verdict = judge(spec, evaluate(reference, window(spec, x)))
        assert not verdict.drifted, (column, verdict)


def test_clean_windows_raise_at_most_one_joint_flag_in_a_thousand():
    rng = np.random.default_rng(2)
    spec, reference = fit_joint(rows(rng, 10_000, 0.8), NAMES)
    flagged = sum(judge(spec, evaluate(reference, window(spec, rows(rng, 2_500, 0.8)))).drifted
                  for _ in range(1000))
    assert flagged <= 1


def test_rows_with_a_missing_value_are_skipped_and_counted_and_states_merge():
    rng = np.random.default_rng(3)
    spec, _ = fit_joint(rows(rng, 5_000, 0.8), NAMES)
    x = rows(rng, 1_000, 0.8)
    x[::10, 3] = np.nan
    projected, skipped = spec.project(x)
    assert skipped == 100 and projected.shape == (900, spec.k + F)
    whole = window(spec, x[~np.isnan(x).any(axis=1)])
    halves = window(spec, x[:500]).merge(window(spec, x[500:]))
    assert np.array_equal(whole.counts, halves.counts)
    assert np.allclose(whole.moments, halves.moments)


def test_the_joint_reference_round_trips_through_arrays():
    rng = np.random.default_rng(4)
    spec, reference = fit_joint(rows(rng, 5_000, 0.8), NAMES)
    back, ref_back = joint_from_arrays(joint_arrays(spec, reference))
    assert back.names == spec.names and np.array_equal(back.directions, spec.directions)
    assert np.array_equal(ref_back.counts, reference.counts)
    assert joint_from_arrays({}) is None  # a file from before joint drift
    assert fit_joint(rows(rng, 5_000, 0.8)[:, :1], NAMES[:1]) is None  # one feature: nothing
