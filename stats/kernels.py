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

from stats.schema import (  # noqa: F401  (SEARCH_WIDTH: the search below is unrolled for it)
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


# Rows of the per-batch scratch array (S x F) the kernel accumulates into before merging.
S_N, S_SUM, S_SQ, S_MIN, S_MAX, S_LOW, S_HIGH = range(7)
N_SCRATCH = 7
# Rows per block: bins of a block are found first (a tight, branch-free loop), then counted.
BLOCK = 256


@njit(nogil=True, cache=True, error_model="numpy")
def ingest(x, search_edges, params, counts, moments, rows, log_density, hbos_threshold,
           scores_out, scratch, bins):
    """Update counts, moments and rows in place from the batch x (n x F float64).

    counts (F x B+2 int64): the histogram, then NaN and inf counts in the last two columns.
    log_density (F x B+2): -log of each bin's baseline density (HBOS; 0 for NaN/inf columns);
    row scores go to `scores_out` (length n, or length 0 to skip storing them).
    scratch (N_SCRATCH x F) and bins (BLOCK x F int64) are reused buffers, so a single-row
    update allocates nothing. Three passes per block, each simple enough to run fast:
    bin lookup (unrolled branch-free binary search), counts + HBOS scores, moments.
    """
    n, n_features = x.shape
    nan_bin = counts.shape[1] - 2
    for f in range(n_features):
        scratch[S_N, f] = 0.0
        scratch[S_SUM, f] = 0.0
        scratch[S_SQ, f] = 0.0
        scratch[S_MIN, f] = np.inf
        scratch[S_MAX, f] = -np.inf
        scratch[S_LOW, f] = 0.0
        scratch[S_HIGH, f] = 0.0
    hbos_outliers = 0
    keep_scores = scores_out.shape[0] == n
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        for r in range(m):
            for f in range(n_features):
                v = x[start + r, f]
                if params[f, P_IS_CAT] > 0.0:
                    last = int(params[f, P_N_BINS]) - 1
                    b = int(v) if v - v == 0.0 else 0
                    if b < 0 or b > last:
                        b = last
                else:
                    # Unrolled for SEARCH_WIDTH = 64 inner edges: the count of edges <= v.
                    # (A loop with a runtime trip count runs 4x slower.)
                    pos = 32 * (search_edges[f, 31] <= v)
                    pos += 16 * (search_edges[f, pos + 15] <= v)
                    pos += 8 * (search_edges[f, pos + 7] <= v)
                    pos += 4 * (search_edges[f, pos + 3] <= v)
                    pos += 2 * (search_edges[f, pos + 1] <= v)
                    pos += search_edges[f, pos] <= v
                    pos += search_edges[f, pos] <= v
                    b = pos + (v > params[f, P_LAST_EDGE])
                if v - v != 0.0:  # NaN, or inf (inf - inf is NaN)
                    b = nan_bin if v != v else nan_bin + 1
                bins[r, f] = b
        for r in range(m):
            score = 0.0
            for f in range(n_features):
                b = bins[r, f]
                counts[f, b] += 1
                score += log_density[f, b]
            hbos_outliers += score > hbos_threshold
            if keep_scores:
                scores_out[start + r] = score
        for r in range(m):
            for f in range(n_features):
                v = x[start + r, f]
                # Branch-free so the loop over features vectorizes; NaN/inf and categorical
                # values add zeros (low/high of a categorical feature are -inf/+inf).
                ok = v - v == 0.0 and params[f, P_IS_CAT] == 0.0
                d = v - params[f, P_SHIFT] if ok else 0.0
                scratch[S_N, f] += ok
                scratch[S_SUM, f] += d
                scratch[S_SQ, f] += d * d
                scratch[S_MIN, f] = min(scratch[S_MIN, f], v if ok else np.inf)
                scratch[S_MAX, f] = max(scratch[S_MAX, f], v if ok else -np.inf)
                scratch[S_LOW, f] += ok and v < params[f, P_LOW]
                scratch[S_HIGH, f] += ok and v > params[f, P_HIGH]
    rows[R_ROWS] += n
    rows[R_HBOS_OUTLIERS] += hbos_outliers
    for f in range(n_features):
        moments[f, M_LOW] += scratch[S_LOW, f]
        moments[f, M_HIGH] += scratch[S_HIGH, f]
        nb = scratch[S_N, f]
        if nb == 0.0:
            continue
        mean_b = params[f, P_SHIFT] + scratch[S_SUM, f] / nb
        m2_b = max(scratch[S_SQ, f] - scratch[S_SUM, f] * scratch[S_SUM, f] / nb, 0.0)
        na = moments[f, M_N]
        total = na + nb
        delta = mean_b - moments[f, M_MEAN]
        moments[f, M_MEAN] += delta * nb / total
        moments[f, M_M2] += m2_b + delta * delta * na * nb / total
        moments[f, M_N] = total
        moments[f, M_MIN] = min(moments[f, M_MIN], scratch[S_MIN, f])
        moments[f, M_MAX] = max(moments[f, M_MAX], scratch[S_MAX, f])


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
