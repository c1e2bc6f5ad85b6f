"""Feature specs taken from baseline (reference) data: fixed bins, expected ranges, categories.

Every histogram in `stats` lives on a schema's bins, so histograms from any window, worker or
replica built on the same schema add up exactly.

Bin layout per feature (padded to the schema's widest feature):
- numeric with k inner bins from baseline quantiles (edges e0..ek):
  0 = underflow (x < e0), 1..k = [e(i-1), e(i)) with the last one closed, k+1 = overflow (x > ek)
- categorical with C categories: 0..C-1 the baseline's top categories, C = every other value
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from stats.kernels import fill_bin_grids
from stats.layout import (
    CATEGORICAL,
    GRID_CELLS,
    MAX_NUMERIC_BINS,
    N_PARAMS,
    NUMERIC,
    P_HBOS_THRESHOLD,
    P_HIGH,
    P_IS_CAT,
    P_LAST_EDGE,
    P_LOW,
    P_N_BINS,
    P_N_INNER_EDGES,
    SEARCH_WIDTH,
)
from stats.summary import summarize
from stats.values import float_column

TAIL_QUANTILES = (0.001, 0.01, 0.025, 0.975, 0.99, 0.999)


@dataclass
class FeatureSpec:
    name: str
    kind: str = NUMERIC
    edges: list[float] = field(default_factory=list)       # numeric: e0..ek
    categories: list[str] = field(default_factory=list)    # categorical: top K
    low: float = -np.inf                                    # expected range (numeric)
    high: float = np.inf
    center: float = 0.0                                     # baseline (sample) mean, informational
    # Kurtosis of the baseline sample: the std's sampling error grows with it, and binned
    # data understate it badly for heavy tails. None: the reference histogram's is used.
    kurtosis: float | None = None
    # Per-feature thresholds; None takes the DriftConfig default.
    stat_threshold: float | None = None
    outlier_threshold: float | None = None

    @property
    def n_bins(self) -> int:
        if self.kind == CATEGORICAL:
            return len(self.categories) + 1
        return len(self.edges) + 1  # (k inner) + underflow + overflow, k = len(edges) - 1


def _column_is_categorical(values: Sequence) -> bool:
    """Strings (or booleans) that are not numbers make a column categorical."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuf":
        return False
    try:  # all numbers (or numeric strings, None): one C-level pass says numeric
        np.asarray(values, dtype=np.float64)
        return any(isinstance(v, (bool, np.bool_)) for v in values[:1000])
    except (TypeError, ValueError):
        pass
    for v in values:
        if isinstance(v, (bool, np.bool_)):
            return True
        if isinstance(v, str):
            try:
                float(v)
            except ValueError:
                return True
    return False


def columns_from(data, names: Sequence[str] | None = None) -> dict[str, list | np.ndarray]:
    """Columns of a table given as a numpy array, dict of columns, list of rows, or CSV path."""
    if isinstance(data, (str, Path)):
        with open(data, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = reader.fieldnames or []
        return {name: [r.get(name) for r in rows] for name in header}
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise ValueError(f"expected a 2-D array, got shape {data.shape}")
        names = list(names) if names is not None else [f"f{i}" for i in range(data.shape[1])]
        if len(names) != data.shape[1]:
            raise ValueError(f"{len(names)} names for {data.shape[1]} columns")
        return {name: data[:, i] for i, name in enumerate(names)}
    if isinstance(data, Mapping):
        return {str(k): v for k, v in data.items()}
    rows = list(data)
    if not rows:
        raise ValueError("baseline has no rows")
    if isinstance(rows[0], Mapping):
        keys: dict[str, None] = {}
        for r in rows:
            keys.update(dict.fromkeys(r))
        return {k: [r.get(k) for r in rows] for k in keys}
    width = max(len(r) for r in rows)
    names = list(names) if names is not None else [f"f{i}" for i in range(width)]
    return {name: [r[i] if i < len(r) else None for r in rows] for i, name in enumerate(names)}


@lru_cache(maxsize=16)
def edge_probabilities(n_bins: int) -> np.ndarray:
    """Probabilities of a numeric feature's inner edges: n_bins equal steps, plus the tail
    quantiles when there are enough bins for them to matter."""
    probs = np.linspace(0, 1, n_bins + 1)
    if n_bins >= 4:
        probs = np.union1d(probs, TAIL_QUANTILES)
    inner = probs[1:-1]
    inner.flags.writeable = False  # shared by every caller
    return inner


def numeric_specs(matrix: np.ndarray, names: Sequence[str], options: Sequence[Mapping],
                  n_bins: int = 20, range_quantile: float = 0.001) -> list[FeatureSpec]:
    """Specs of numeric features from their baseline columns (rows x features, NaN missing).

    Bin edges at quantiles of a sample (any fixed edges work; quantiles keep bins informative),
    plus a few in the tails: a tail bin from q95 to the maximum is too wide to place a p95
    inside it. The outer edges and the expected range (q0.001 / q0.999 by default) are exact,
    from every value.
    """
    summary = summarize(np.ascontiguousarray(matrix, dtype=np.float64), range_quantile)
    kurtosis = summary.kurtosis
    specs = []
    for j, name in enumerate(names):
        if summary.n_finite[j] == 0:
            raise ValueError(f"feature {name!r}: no finite baseline values")
        o = options[j]
        inner = summary.edge_quantiles(j, edge_probabilities(o.get("bins", n_bins)))
        edges = np.unique(np.concatenate([[summary.minimum[j]], inner, [summary.maximum[j]]]))
        if edges.size < 2:
            edges = np.array([edges[0], edges[0]])  # a constant feature: one closed bin [v, v]
        low = summary.low_quantile[j] if o.get("min") is None else o["min"]
        high = summary.high_quantile[j] if o.get("max") is None else o["max"]
        specs.append(FeatureSpec(name, NUMERIC, edges=[float(e) for e in edges], low=float(low),
                                 high=float(high), center=float(summary.samples[j].mean()),
                                 kurtosis=None if np.isnan(kurtosis[j]) else float(kurtosis[j])))
    return specs


def categorical_spec(name: str, values, top_k: int = 50) -> FeatureSpec:
    counts = Counter(str(v) for v in values if v is not None and not (isinstance(v, float) and np.isnan(v)))
    return FeatureSpec(name, CATEGORICAL, categories=[c for c, _ in counts.most_common(top_k)])


class Schema:
    """The features of one model input (or output), with arrays laid out for the kernels."""

    def __init__(self, features: Sequence[FeatureSpec]) -> None:
        if not features:
            raise ValueError("a schema needs at least one feature")
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in {names}")
        self.features = list(features)
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}
        self.n_features = len(features)
        self.n_bins = max(2, max(f.n_bins for f in features))  # >= 2: see StreamState.counts
        # Inner edges e0..e(k-1) padded with +inf to the kernel's fixed search width.
        for f in features:
            if f.kind == NUMERIC and not 2 <= len(f.edges) <= MAX_NUMERIC_BINS + 1:
                raise ValueError(f"feature {f.name!r}: {len(f.edges) - 1} bins, "
                                 f"allowed 1..{MAX_NUMERIC_BINS}")
        # The kernel's model array: search edges, the HBOS table (see set_hbos), the bin grid.
        hbos_end = SEARCH_WIDTH + self.n_bins + 2
        self.model = np.zeros((self.n_features, hbos_end + GRID_CELLS // 8))
        self.search_edges = self.model[:, :SEARCH_WIDTH]
        self.search_edges[:] = np.inf
        # One row per field (N_PARAMS x F): the kernel's loops over features read rows.
        self.params = np.zeros((N_PARAMS, self.n_features))
        # All edges e0..ek per numeric feature, padded with the last edge (for bin bounds).
        self.edge_matrix = np.zeros((self.n_features, max(self.n_bins - 1, 1)))
        self.category_codes: list[dict[str, int] | None] = []
        for i, f in enumerate(features):
            p = self.params[:, i]
            p[P_N_BINS] = f.n_bins
            if f.kind == CATEGORICAL:
                p[P_IS_CAT] = 1.0
                p[P_LOW], p[P_HIGH] = -np.inf, np.inf
                self.category_codes.append({c: j for j, c in enumerate(f.categories)})
            else:
                edges = np.asarray(f.edges, dtype=np.float64)
                self.search_edges[i, : edges.size - 1] = edges[:-1]
                self.edge_matrix[i, : edges.size] = edges
                self.edge_matrix[i, edges.size:] = edges[-1]
                p[P_N_INNER_EDGES] = edges.size - 1
                p[P_LAST_EDGE] = edges[-1]
                p[P_LOW], p[P_HIGH] = f.low, f.high
                self.category_codes.append(None)
        self.is_categorical = self.params[P_IS_CAT] > 0
        self.bins_per_feature = self.params[P_N_BINS].astype(np.int64)
        self.bin_valid = np.arange(self.n_bins)[None, :] < self.bins_per_feature[:, None]
        # Per-feature threshold overrides, NaN where the evaluation's default applies.
        self.stat_thresholds = np.array([np.nan if f.stat_threshold is None else f.stat_threshold
                                         for f in features])
        self.kurtosis = np.array([np.nan if f.kurtosis is None else f.kurtosis for f in features])
        self.outlier_thresholds = np.array([
            np.nan if f.outlier_threshold is None else f.outlier_threshold for f in features])
        # HBOS: -log baseline density per bin, and the score above which a row is an outlier.
        # Uncalibrated until stats.baseline.fit_baseline sets them: no row is an outlier.
        # Two extra columns, always 0: the NaN and inf "bins" add nothing to a row's score.
        # Views into the kernel's arrays, updated in place by set_hbos.
        self.hbos_log_density = self.model[:, SEARCH_WIDTH:hbos_end]
        self.params[P_HBOS_THRESHOLD] = np.inf
        fill_bin_grids(self.model, self.params, self.edge_matrix)

    @property
    def hbos_threshold(self) -> float:
        return float(self.params[P_HBOS_THRESHOLD, 0])

    def set_hbos(self, log_density: np.ndarray, threshold: float) -> None:
        if log_density.shape != (self.n_features, self.n_bins + 2):
            raise ValueError(f"HBOS table shape {log_density.shape} does not fit the schema")
        self.hbos_log_density[...] = log_density
        self.params[P_HBOS_THRESHOLD] = threshold

    @classmethod
    def from_baseline(cls, data, names: Sequence[str] | None = None, n_bins: int = 20,
                      top_k: int = 50, categorical: Iterable[str] = (),
                      overrides: Mapping[str, Mapping] | None = None,
                      range_quantile: float = 0.001) -> Schema:
        """Specs from baseline data: numeric bins at quantiles, categories by frequency.

        `overrides` per feature: {"min": .., "max": .., "categorical": bool, "bins": int,
        "stat_threshold": .., "outlier_threshold": ..}.
        """
        columns = columns_from(data, names)
        overrides = overrides or {}
        forced = set(categorical)
        specs: dict[str, FeatureSpec] = {}
        numeric: list[str] = []
        for name, values in columns.items():
            o = overrides.get(name, {})
            if o.get("categorical", name in forced or _column_is_categorical(values)):
                specs[name] = categorical_spec(name, values, top_k)
            else:
                numeric.append(name)
        if numeric:
            if isinstance(data, np.ndarray) and data.dtype.kind in "fiu" \
                    and len(numeric) == len(columns):
                matrix = data  # all numeric: summarized in place, no copy
            else:  # the same conversion live batches get
                matrix = np.column_stack([float_column(columns[n]) for n in numeric])
            options = [overrides.get(n, {}) for n in numeric]
            specs.update(zip(numeric, numeric_specs(matrix, numeric, options, n_bins,
                                                    range_quantile)))
        for name, spec in specs.items():
            spec.stat_threshold = overrides.get(name, {}).get("stat_threshold")
            spec.outlier_threshold = overrides.get(name, {}).get("outlier_threshold")
        return cls([specs[name] for name in columns])

    def bin_bounds(self, vmin: np.ndarray, vmax: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper value of every numeric bin (F x B); the tails end at vmin / vmax.

        Categorical rows are meaningless here (zeros); callers mask them.
        """
        e = self.edge_matrix
        rows = np.arange(self.n_features)
        first = e[:, 0]
        last = e[rows, np.maximum(self.bins_per_feature - 2, 0)]
        lo_tail = np.where(np.isfinite(vmin), np.minimum(vmin, first), first)
        hi_tail = np.where(np.isfinite(vmax), np.maximum(vmax, last), last)
        lower = np.concatenate([lo_tail[:, None], e], axis=1)
        upper = np.concatenate([e, hi_tail[:, None]], axis=1)
        overflow = np.maximum(self.bins_per_feature - 1, 0)
        upper[rows, overflow] = hi_tail
        lower = np.where(self.is_categorical[:, None], 0.0, lower[:, : self.n_bins])
        upper = np.where(self.is_categorical[:, None], 0.0, upper[:, : self.n_bins])
        return lower, upper

    def to_json(self) -> str:
        return json.dumps([asdict(f) for f in self.features],
                          default=lambda v: float(v))

    @classmethod
    def from_json(cls, text: str) -> Schema:
        return cls([FeatureSpec(**d) for d in json.loads(text)])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        kinds = Counter(f.kind for f in self.features)
        return f"Schema({self.n_features} features: {dict(kinds)}, {self.n_bins} bins)"
