"""Properties that must hold for any data: merge == whole, save/load, window rollover."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stats.baseline import fit_baseline
from stats.schema import exact_quantile
from stats.state import StreamState, load_states, save_states
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
       st.integers(20_001, 60_000), st.sampled_from([0.001, 0.999, 0.01, 0.99, 0.0, 1.0]))
def test_tail_quantile_from_a_sample_bound_is_exactly_numpys(seed, kind, n, q):
    rng = np.random.default_rng(seed)
    arr = {"normal": lambda: rng.normal(0, 1, n), "lognormal": lambda: rng.lognormal(0, 2, n),
           "ties": lambda: rng.integers(0, 4, n).astype(float),
           "cauchy": lambda: rng.standard_cauchy(n)}[kind]()
    sample = arr[:: n // 20_000]
    assert exact_quantile(arr, q, sample) == np.quantile(arr, q)
