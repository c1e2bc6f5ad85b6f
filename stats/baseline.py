"""Fit a schema and its reference state from baseline data, with HBOS calibrated on it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stats.layout import R_HBOS_OUTLIERS
from stats.schema import Schema, columns_from
from stats.state import StreamState
from stats.table import to_batch

HBOS_SMOOTHING = 0.5  # pseudo-count per bin: unseen bins get a low but finite density


def hbos_log_density(schema: Schema, counts: np.ndarray) -> np.ndarray:
    """-log of each bin's baseline density (F x B): probability over bin width for numeric bins.

    The underflow and overflow bins, empty in the baseline, take the mean inner width, so a
    value beyond the baseline's range scores as rare as a pseudo-count allows.
    """
    n_bins, valid = schema.bins_per_feature, schema.bin_valid
    width = schema.n_bins
    c = np.where(valid, counts[:, :width], 0).astype(np.float64)
    p = (c + HBOS_SMOOTHING) / (c.sum(axis=1) + HBOS_SMOOTHING * n_bins)[:, None]
    e = schema.edge_matrix  # e0..ek, padded with ek: the padding adds zero widths
    inner = np.diff(e, axis=1)
    floor = np.maximum((e[:, -1] - e[:, 0]) * 1e-6, 1e-12)
    n_inner = np.maximum(n_bins - 2, 1)
    mean_width = np.maximum(np.where(n_bins > 2, inner.sum(axis=1) / n_inner, floor), floor)
    widths = np.ones((schema.n_features, width))
    widths[:, 1: 1 + inner.shape[1]] = np.maximum(inner, floor[:, None])
    widths[:, 0] = mean_width
    widths[np.arange(schema.n_features), n_bins - 1] = mean_width
    widths[schema.is_categorical] = 1.0
    out = np.zeros((schema.n_features, width + 2))
    out[:, :width] = np.where(valid, -np.log(p / widths), 0.0)
    return out


HBOS_CALIBRATION_ROWS = 10_000


def calibration_scores(schema: Schema, x: np.ndarray, n_rows: int = HBOS_CALIBRATION_ROWS,
                       runs: int = 20) -> np.ndarray:
    """HBOS scores of about n_rows baseline rows, taken in `runs` evenly spaced runs of
    consecutive rows: as spread over the baseline as single rows would be (an ordered baseline
    is not judged by its start), but read in place instead of gathered (a cache miss per row)."""
    probe = StreamState(schema)
    if x.shape[0] <= n_rows:
        scores = np.empty(x.shape[0])
        probe.update(x, scores_out=scores)
        return scores
    run = n_rows // runs
    starts = np.linspace(0, x.shape[0] - run, runs).astype(np.int64)
    scores = np.empty(run * runs)
    for i, start in enumerate(starts):
        probe.update(x[start: start + run], scores_out=scores[i * run: (i + 1) * run])
    return scores


def fit_baseline(data, names: Sequence[str] | None = None, hbos_quantile: float = 0.999,
                 **schema_options) -> tuple[Schema, StreamState]:
    """(schema, reference state) from baseline data.

    The HBOS threshold is the `hbos_quantile` row score of the baseline (of at most 10,000 rows
    spread over it, see calibration_scores), so about 0.1% of baseline rows count as multivariate
    outliers; the reference's HBOS outlier count is that sample's share times its rows.
    """
    if isinstance(data, (str, Path)):  # read a CSV once
        data, names = columns_from(data, names), None
    schema = Schema.from_baseline(data, names, **schema_options)
    numeric_matrix = (isinstance(data, np.ndarray) and data.dtype.kind in "fiu"
                      and not schema.is_categorical.any())
    batch = to_batch(data if numeric_matrix else columns_from(data, names), schema)
    reference = StreamState(schema)
    reference.update(batch)
    schema.set_hbos(hbos_log_density(schema, reference.counts), np.inf)
    scores = calibration_scores(schema, batch.matrix)
    threshold = float(np.quantile(scores, hbos_quantile)) if scores.size else np.inf
    schema.set_hbos(schema.hbos_log_density, threshold)
    if scores.size:
        reference.rows[R_HBOS_OUTLIERS] = round(float((scores > threshold).mean()) * reference.n_rows)
    return schema, reference
