"""Properties that must hold for any data: merge == whole, save/load, window rollover."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stats.baseline import fit_baseline
from stats.layout import P_GRID_LOG, P_GRID_SCALE
from stats.schema import FeatureSpec, Schema
from stats.state import StreamState, load_states, save_states
from stats.summary import summarize
from stats.window import SlidingWindow

rng = np.random.default_rng(5)
SCHEMA, _ = fit_baseline(np.column_stack([rng.normal(0, 1, 2000), rng.exponential(2, 2000)]),
                         names=["a", "b"])

values = st.one_of(st.floats(-50, 50), st.just(np.nan), st.just(np.inf), st.just(-np.inf))
batches = arrays(np.float64, st.tuples(st.integers(0, 300), st.just(2)), elements=values)


def assert_same(a: StreamState, b: StreamState) -> None:
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.kinds, b.kinds)
    # moments agree to float precision relative to the data's own scale
    finite = b.moments[np.isfinite(b.moments)]
    scale = 1.0 + (np.abs(finite).max() if finite.size else 0.0)
    np.testing.assert_allclose(a.moments, b.moments, rtol=1e-9, atol=1e-12 * scale ** 2)


@settings(max_examples=60, deadline=None)
@given(batches, st.integers(0, 300))
def test_merge_of_parts_equals_whole(batch, cut):
    cut = min(cut, len(batch))
    whole, left, right = (StreamState(SCHEMA) for _ in range(3))
    whole.update(batch)
    left.update(batch[:cut])
    right.update(batch[cut:])
    assert_same(left.merge(right), whole)
    assert_same(right + left, whole)


MIXED, _ = fit_baseline({"x": list(rng.normal(0, 1, 2000)), "plan": list(rng.choice(["a", "b"], 2000)),
                         "n": list(rng.lognormal(0, 2, 2000))})
codes = st.one_of(st.sampled_from([0.0, 1.0, 2.0, 7.0, -1.0]), st.just(np.nan), st.just(np.inf))
mixed_batches = arrays(np.float64, st.tuples(st.integers(5, 200), st.just(3)),
                       elements=st.one_of(values, codes))


@settings(max_examples=60, deadline=None)
@given(mixed_batches)
def test_a_batch_at_once_equals_its_rows_one_by_one(batch):
    """The block path (NaN/inf swapped for stand-ins, taken back after) and the row path agree
    on counts, moments and HBOS scores, categorical codes and all-missing columns included."""
    whole, by_row = StreamState(MIXED), StreamState(MIXED)
    scores = np.empty(len(batch))
    whole.update(batch, scores_out=scores)
    row_scores = np.empty(1)
    for i in range(len(batch)):
        by_row.update(batch[i: i + 1], scores_out=row_scores)
        assert scores[i] == pytest.approx(row_scores[0], rel=1e-12, abs=1e-12)
    assert_same(whole, by_row)


@settings(max_examples=25, deadline=None)
@given(batches)
def test_save_load_round_trip(tmp_path_factory, batch):
    state = StreamState(SCHEMA)
    state.update(batch)
    path = tmp_path_factory.mktemp("s") / "state.npz"
    save_states(path, SCHEMA, {"current": state, "empty": StreamState(SCHEMA)})
    schema, loaded = load_states(path)
    assert schema == SCHEMA
    np.testing.assert_array_equal(schema.hbos_log_density, SCHEMA.hbos_log_density)
    assert schema.hbos_threshold == SCHEMA.hbos_threshold
    assert_same(loaded["current"], state)
    assert loaded["empty"].n_rows == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 400), st.integers(1, 20)), min_size=1, max_size=30))
def test_window_counts_exactly_the_rows_of_its_live_slices(events):
    """Whatever the gaps, the window holds the rows of the last `slices` time steps, no others."""
    window = SlidingWindow(SCHEMA, slices=6, slice_seconds=5.0)
    t = 0.0
    log = []
    for gap, n in events:
        t += gap
        window.update(np.zeros((n, 2)), now=t)
        log.append((t, n))
    step = int(t // 5.0)
    expected = sum(n for when, n in log if step - 6 < int(when // 5.0) <= step)
    assert window.state(now=t).n_rows == expected
    last2 = sum(n for when, n in log if step - 2 < int(when // 5.0) <= step)
    assert window.state(now=t, last=2).n_rows == last2
    # an idle hour later the window is empty, not stale
    assert window.state(now=t + 3600).n_rows == 0
    assert window.live_slices(now=t + 3600) == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["normal", "lognormal", "ties", "cauchy"]),
       st.integers(1, 60_000), st.sampled_from([0.001, 0.01, 0.2, 0.0]))
def test_summary_tail_quantiles_min_max_are_exactly_numpys(seed, kind, n, q):
    """From one pass that keeps only the tails a sample points at, with NaN and inf mixed in."""
    rng = np.random.default_rng(seed)
    draw = {"normal": lambda: rng.normal(0, 1, n), "lognormal": lambda: rng.lognormal(0, 2, n),
            "ties": lambda: rng.integers(0, 4, n).astype(float),
            "cauchy": lambda: rng.standard_cauchy(n)}
    x = np.column_stack([draw[kind](), draw[kind]()])
    x[rng.random(x.shape) < 0.01] = np.nan
    x[rng.random(x.shape) < 0.001] = -np.inf
    summary = summarize(x, q)
    for j in range(2):
        col = x[:, j][np.isfinite(x[:, j])]
        assert summary.n_finite[j] == col.size
        if col.size == 0:
            continue
        assert summary.low_quantile[j] == np.quantile(col, q)
        assert summary.high_quantile[j] == np.quantile(col, 1 - q)
        assert (summary.minimum[j], summary.maximum[j]) == (col.min(), col.max())


def reference_bins(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The documented layout in plain numpy: underflow, [e0,e1) .. [e(k-1), ek], overflow."""
    return np.searchsorted(edges[:-1], x, side="right") + (x > edges[-1])


edge_sets = st.lists(st.floats(-1e6, 1e6, allow_subnormal=False), min_size=2, max_size=40,
                     unique=True).map(sorted)


@settings(max_examples=80, deadline=None)
@given(edge_sets, st.integers(0, 2**32 - 1), st.sampled_from([1, 3, 4, 5, 700]))
def test_bins_match_numpy_for_any_edges_on_both_lookup_paths(edges, seed, n_rows):
    """Grid lookup (even edges), log-spaced grid (a heavy right tail), binary search (crowded
    edges), row path (<= 4 rows) and block path (more) all put every value where
    np.searchsorted does, edges, their float neighbours and negatives included."""
    rng = np.random.default_rng(seed)
    e = np.asarray(edges)
    c = abs(e[0]) + 1000  # 25 edges within 0.025 of c: crowded on linear and log cells alike
    crowded = np.concatenate([e[:1], c + np.cumsum(np.full(25, 1e-3)), c + np.array([100, 200, 1e7])])
    scale = abs(e[0]) + 1e-3  # a heavy right tail: geometric edges from a positive start
    skewed = scale * np.geomspace(1, 10 ** rng.uniform(3, 8), 30)
    schema = Schema([FeatureSpec("even", edges=list(np.linspace(e[0], e[-1], len(e)))),
                     FeatureSpec("given", edges=list(e)),
                     FeatureSpec("crowded", edges=list(crowded)),
                     FeatureSpec("skewed", edges=list(skewed))])
    assert schema.params[P_GRID_SCALE, 0] > 0 and schema.params[P_GRID_SCALE, 2] == 0
    assert schema.params[P_GRID_LOG, 3] == 1  # the log-spaced grid
    pools = [np.asarray(f.edges) for f in schema.features]
    x = np.empty((n_rows, len(pools)))
    for j, pool in enumerate(pools):
        picks = rng.choice(pool, n_rows)
        span = pool[-1] - pool[0] + 1.0
        x[:, j] = np.select([rng.random(n_rows) < 0.3, rng.random(n_rows) < 0.5],
                            [picks, np.nextafter(picks, rng.choice([-np.inf, np.inf], n_rows))],
                            rng.uniform(pool[0] - span / 10, pool[-1] + span / 10, n_rows))
    flip = rng.random(x.shape) < 0.05
    x[flip] = -x[flip]  # negatives too, which the log grid must put below its first cell
    x[rng.random(x.shape) < 0.05] = np.nan
    x[rng.random(x.shape) < 0.03] = np.inf
    x[rng.random(x.shape) < 0.03] = -np.inf
    state = StreamState(schema)
    state.update(x)
    for j, pool in enumerate(pools):
        finite = x[np.isfinite(x[:, j]), j]
        expected = np.bincount(reference_bins(pool, finite), minlength=pool.size + 1)
        np.testing.assert_array_equal(state.histogram[j, : pool.size + 1], expected)
        assert state.nan_count[j] == np.isnan(x[:, j]).sum()
        assert state.inf_count[j] == np.isinf(x[:, j]).sum()
