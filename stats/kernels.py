"""numba kernels: one pass over a (rows x features) batch updates every feature's state.

One call per batch (or per single row) does: bin lookup (branch-free binary search on fixed
edges), histogram counts, NaN / inf counts, expected-range outliers, the batch's moments merged
into the running ones (Chan et al.), and the per-row HBOS outlier score.
Measured by benchmarks/stats_ingest.py. nogil: the monitor
thread runs it while the event loop keeps serving.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stats.schema import (
    P_HBOS_THRESHOLD,
    P_HIGH,
    P_IS_CAT,
    P_LAST_EDGE,
    P_LOW,
    P_N_BINS,
    P_SHIFT,
    SEARCH_WIDTH,
)

# Columns of a state's `moments` array (F x M).
M_N, M_MEAN, M_M2, M_MIN, M_MAX, M_LOW, M_HIGH = range(7)
N_MOMENTS = 7
# Entries of a state's `rows` array.
R_ROWS, R_HBOS_OUTLIERS = range(2)


def empty_moments(n_features: int) -> np.ndarray:
    m = np.zeros((n_features, N_MOMENTS))
    m[:, M_MIN] = np.inf
    m[:, M_MAX] = -np.inf
    return m


# Rows of the kernel's per-call accumulators.
A_N, A_SUM, A_SQ, A_MIN, A_MAX, A_LOW, A_HIGH, A_SHIFT = range(N_MOMENTS + 1)
# Rows per block: bins of a block are found first (a tight, branch-free loop), then counted.
BLOCK = 256


@njit(nogil=True, cache=True, error_model="numpy")
def ingest(x, model, params, counts, moments, scores_out):
    """Update a state in place from the batch x (n x F float64).

    Six arguments on purpose: numba's dispatch costs ~50 ns per argument, which is most of a
    single-row update, so related arrays travel packed:
    model (F x SEARCH_WIDTH + B+2): inner bin edges padded with +inf, then -log baseline
      density per bin (HBOS; 0 in the NaN and inf columns);
    params (N_PARAMS x F): per-feature constants, one row per field;
    counts ((F+1) x B+2 int64): per feature the histogram, then NaN and inf counts; the last
      row holds the stream counters (rows, HBOS outlier rows, ...);
    moments (F x N_MOMENTS): the running moments;
    scores_out: row scores (length n), or length 0 not to keep them.
    Three passes per block, each simple enough to run fast: bin lookup (an unrolled,
    branch-free binary search), counts + HBOS scores, moments.
    """
    n, n_features = x.shape
    # model's edges sit at [f, 0:SEARCH_WIDTH], its densities at [f, SEARCH_WIDTH + b]
    # (indexing the C-contiguous array itself: slices would be strided views, 30% slower).
    nan_bin = counts.shape[1] - 2
    hbos_threshold = params[P_HBOS_THRESHOLD, 0]
    bins = np.empty((min(n, BLOCK), n_features), dtype=np.int64)
    # Accumulators, one row per quantity: the moments pass over features then vectorizes.
    acc = np.zeros((N_MOMENTS + 1, n_features))
    for f in range(n_features):
        # Sums are taken around the batch's first finite value (the baseline mean when there is
        # none): the sum of squares then never cancels catastrophically, constant data included.
        acc[A_SHIFT, f] = params[P_SHIFT, f]
        for i in range(n):
            v = x[i, f]
            if v - v == 0.0:
                acc[A_SHIFT, f] = v
                break
        acc[A_MIN, f] = np.inf
        acc[A_MAX, f] = -np.inf
    hbos_outliers = 0
    keep_scores = scores_out.shape[0] == n
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        for r in range(m):
            for f in range(n_features):
                v = x[start + r, f]
                if params[P_IS_CAT, f] > 0.0:
                    last = int(params[P_N_BINS, f]) - 1
                    b = int(v) if v - v == 0.0 else 0
                    if b < 0 or b > last:
                        b = last
                else:
                    # Unrolled for SEARCH_WIDTH = 64 inner edges: the count of edges <= v.
                    # (A loop with a runtime trip count runs 4x slower.)
                    pos = 32 * (model[f, 31] <= v)
                    pos += 16 * (model[f, pos + 15] <= v)
                    pos += 8 * (model[f, pos + 7] <= v)
                    pos += 4 * (model[f, pos + 3] <= v)
                    pos += 2 * (model[f, pos + 1] <= v)
                    pos += model[f, pos] <= v
                    pos += model[f, pos] <= v
                    b = pos + (v > params[P_LAST_EDGE, f])
                if v - v != 0.0:  # NaN, or inf (inf - inf is NaN)
                    b = nan_bin if v != v else nan_bin + 1
                bins[r, f] = b
        for r in range(m):
            score = 0.0
            for f in range(n_features):
                b = bins[r, f]
                counts[f, b] += 1
                score += model[f, SEARCH_WIDTH + b]
            hbos_outliers += score > hbos_threshold
            if keep_scores:
                scores_out[start + r] = score
        for r in range(m):
            for f in range(n_features):
                v = x[start + r, f]
                # NaN/inf and categorical values add zeros (a categorical's range is +-inf).
                ok = (v - v == 0.0) & (params[P_IS_CAT, f] == 0.0)
                d = v - acc[A_SHIFT, f] if ok else 0.0
                acc[A_N, f] += ok
                acc[A_SUM, f] += d
                acc[A_SQ, f] += d * d
                acc[A_MIN, f] = min(acc[A_MIN, f], v if ok else np.inf)
                acc[A_MAX, f] = max(acc[A_MAX, f], v if ok else -np.inf)
                acc[A_LOW, f] += ok & (v < params[P_LOW, f])
                acc[A_HIGH, f] += ok & (v > params[P_HIGH, f])
    counts[n_features, R_ROWS] += n
    counts[n_features, R_HBOS_OUTLIERS] += hbos_outliers
    for f in range(n_features):
        moments[f, M_LOW] += acc[A_LOW, f]
        moments[f, M_HIGH] += acc[A_HIGH, f]
        nb = acc[A_N, f]
        if nb == 0.0:
            continue
        mean_b = acc[A_SHIFT, f] + acc[A_SUM, f] / nb
        m2_b = max(acc[A_SQ, f] - acc[A_SUM, f] * acc[A_SUM, f] / nb, 0.0)
        na = moments[f, M_N]
        total = na + nb
        delta = mean_b - moments[f, M_MEAN]
        moments[f, M_MEAN] += delta * nb / total
        moments[f, M_M2] += m2_b + delta * delta * na * nb / total
        moments[f, M_N] = total
        moments[f, M_MIN] = min(moments[f, M_MIN], acc[A_MIN, f])
        moments[f, M_MAX] = max(moments[f, M_MAX], acc[A_MAX, f])


@njit(nogil=True, cache=True)
def merge_moments(a, b):
    """Moments of the union of two streams (Chan et al.): exact, order-free up to rounding."""
    out = a.copy()
    for f in range(a.shape[0]):
        na = a[f, M_N]
        nb = b[f, M_N]
        total = na + nb
        if nb > 0.0:
            delta = b[f, M_MEAN] - a[f, M_MEAN]
            out[f, M_MEAN] = a[f, M_MEAN] + delta * nb / total
            out[f, M_M2] = a[f, M_M2] + b[f, M_M2] + delta * delta * na * nb / total
            out[f, M_N] = total
            out[f, M_MIN] = min(a[f, M_MIN], b[f, M_MIN])
            out[f, M_MAX] = max(a[f, M_MAX], b[f, M_MAX])
        for k in (M_LOW, M_HIGH):
            out[f, k] = a[f, k] + b[f, k]
    return out
