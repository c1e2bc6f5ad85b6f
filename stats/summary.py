"""What a schema needs from baseline numeric columns, without sorting or copying them whole.

Per column: the count of finite values, min, max, the exact q and 1 - q quantiles (the
expected range) and a sorted sample (for bin edges, which need not be exact quantiles).
The exact tail quantiles come from one pass over the matrix that keeps only the values beyond
a bound the sample gives (a few hundred per column), then a partition of those: the same
numbers np.quantile gives, at a fraction of the cost of sorting every column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

EDGE_SAMPLE = 2_000  # rows the bin edges are taken from (evenly spaced; sorted)


def quantiles_of_sorted(s: np.ndarray, probs) -> np.ndarray:
    """np.quantile(s, probs) (method "linear", same rounding) of an ascending array."""
    pos = (s.size - 1) * np.asarray(probs, dtype=np.float64)
    k = np.floor(pos).astype(np.int64)
    a, b, t = s[k], s[np.minimum(k + 1, s.size - 1)], pos - k
    return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)  # numpy's lerp


@dataclass
class NumericSummary:
    n_finite: np.ndarray      # per column
    minimum: np.ndarray
    maximum: np.ndarray
    low_quantile: np.ndarray  # exact q quantile of the finite values
    high_quantile: np.ndarray  # exact 1 - q quantile
    samples: list[np.ndarray]  # per column: a sorted sample of the finite values

    @property
    def kurtosis(self) -> np.ndarray:
        """Pearson kurtosis (3 for a normal) of each column's sample; NaN without spread."""
        return np.array([_kurtosis(s) for s in self.samples])

    def edge_quantiles(self, j: int, probs: np.ndarray) -> np.ndarray:
        return quantiles_of_sorted(self.samples[j], probs)


@njit(nogil=True, cache=True)
def _kurtosis(values):
    n = values.size
    if n == 0:
        return np.nan
    mean = values.sum() / n
    m2 = m4 = 0.0
    for v in values:
        d2 = (v - mean) * (v - mean)
        m2 += d2
        m4 += d2 * d2
    return m4 * n / (m2 * m2) if m2 > 0.0 else np.nan


@njit(nogil=True, cache=True)
def _scan_tails(x, lo_bound, hi_bound, cap):
    """Values <= lo_bound and >= hi_bound per column (up to cap kept, all counted), and the
    count of non-finite values. Most rows have none of these: a branch-free test of the whole
    row (which vectorizes) lets them pass at the cost of one read per value."""
    n, k = x.shape
    low = np.empty((k, cap))
    high = np.empty((k, cap))
    n_low = np.zeros(k, np.int64)
    n_high = np.zeros(k, np.int64)
    n_bad = np.zeros(k, np.int64)
    for i in range(n):
        inside = True
        for j in range(k):
            v = x[i, j]
            inside &= (v > lo_bound[j]) & (v < hi_bound[j])  # NaN is not inside
        if inside:
            continue
        for j in range(k):
            v = x[i, j]
            if v - v != 0.0:
                n_bad[j] += 1
                continue
            if v <= lo_bound[j]:
                c = n_low[j]
                if c < cap:
                    low[j, c] = v
                n_low[j] = c + 1
            if v >= hi_bound[j]:
                c = n_high[j]
                if c < cap:
                    high[j, c] = v
                n_high[j] = c + 1
    return low, n_low, high, n_high, n_bad


def _tail_quantile(tail: np.ndarray, n: int, q: float, from_top: bool) -> float | None:
    """Exact q quantile of n values of which `tail` holds the smallest (or the largest); None
    when the tail does not reach the ranks needed."""
    pos = (n - 1) * q
    k = int(np.floor(pos))
    i = k - (n - tail.size if from_top else 0)
    if i < 0 or i + 1 >= tail.size:
        return None
    part = np.partition(tail, [i, i + 1])
    return float(quantiles_of_sorted(part[i: i + 2], [pos - k])[0])  # between ranks i, i + 1


def summarize(x: np.ndarray, q: float = 0.001, sample_rows: int = EDGE_SAMPLE) -> NumericSummary:
    """Summary of every column of a float64 (rows x columns) matrix, NaN/inf ignored."""
    n, k = x.shape
    step = max(1, n // sample_rows)
    rows = np.sort(x[::step].T, axis=1)  # NaN sort last, +-inf at the ends
    samples = [r[np.searchsorted(r, -np.inf, "right"): np.searchsorted(r, np.inf, "left")]
               for r in rows]
    if step == 1:  # the sample is the data
        sizes = np.array([s.size for s in samples])
        ends = np.array([quantiles_of_sorted(s, [0.0, 1.0, q, 1 - q]) if s.size
                         else np.full(4, np.nan) for s in samples]).T
        return NumericSummary(sizes, *ends, samples)
    # Bounds six binomial standard deviations (of the sample's count below the q quantile)
    # beyond it: a tail the sample misjudges is then one in a billion (it is still exact then,
    # by the long way below).
    margin = 6 * np.sqrt(min(q, 1 - q) / rows.shape[1]) + 5 / rows.shape[1]
    bounds = np.array([quantiles_of_sorted(s, [min(1.0, q + margin), max(0.0, 1 - q - margin)])
                       if s.size else [-np.inf, np.inf] for s in samples])
    lo_bound, hi_bound = np.ascontiguousarray(bounds[:, 0]), np.ascontiguousarray(bounds[:, 1])
    cap = int(n * (q + 3 * margin)) + 64
    low, n_low, high, n_high, n_bad = _scan_tails(x, lo_bound, hi_bound, cap)
    n_finite = n - n_bad
    out = np.full((4, k), np.nan)
    for j in range(k):
        if n_finite[j] == 0:
            continue
        lo_t, hi_t = low[j, : n_low[j]], high[j, : n_high[j]]
        found = None
        if 0 < n_low[j] <= cap and 0 < n_high[j] <= cap:
            found = (lo_t.min(), hi_t.max(), _tail_quantile(lo_t, n_finite[j], q, False),
                     _tail_quantile(hi_t, n_finite[j], 1 - q, True))
        if found is None or None in found:  # the sample misjudged a tail: the long way
            col = x[:, j][np.isfinite(x[:, j])]
            found = (col.min(), col.max(), np.quantile(col, q), np.quantile(col, 1 - q))
        out[:, j] = found
    return NumericSummary(n_finite, out[0], out[1], out[2], out[3], samples)
