"""Turn what payloads carry (rows, objects, columns) into the float matrix the kernels take.

Never raises on bad values: None, absent keys, strings in numeric features and ragged rows
become NaN and are counted by kind; categorical values become their bin code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stats.layout import K_ABSENT, K_NULL, K_TYPE
from stats.schema import Schema
from stats.values import ABSENT, float_column


@dataclass
class Batch:
    matrix: np.ndarray   # (n x F) float64, NaN where missing
    kinds: np.ndarray    # (F x 3) int64: null, absent, wrong type
    ragged_rows: int     # rows whose length differs from the schema's width
    extra_columns: int   # values under names the schema does not know


def _categorical_column(values: Sequence, codes: dict[str, int], other: int,
                        kinds_row: np.ndarray) -> np.ndarray:
    try:  # the common case, known strings: one dict lookup per value, nothing else
        out = np.array([codes.get(v, -1) for v in values], dtype=np.float64)
    except TypeError:  # an unhashable value somewhere: the careful path for all
        out = np.full(len(values), -1.0)
    for i in np.flatnonzero(out < 0):
        out[i] = _categorical_value(values[i], codes, other, kinds_row)
    return out


def _categorical_value(v, codes: dict[str, int], other: int, kinds_row: np.ndarray) -> float:
    if v is None or (isinstance(v, float) and v != v):
        kinds_row[K_NULL] += 1
        return np.nan
    if v is ABSENT:
        kinds_row[K_ABSENT] += 1
        return np.nan
    if isinstance(v, (list, dict)):
        kinds_row[K_TYPE] += 1
        return np.nan
    return codes.get(v if isinstance(v, str) else str(v), other)


def _column(values: Sequence, schema: Schema, j: int, kinds: np.ndarray) -> np.ndarray:
    codes = schema.category_codes[j]
    if codes is None:
        return float_column(values, kinds[j])
    return _categorical_column(values, codes, len(codes), kinds[j])


def from_columns(columns: Mapping[str, Sequence], schema: Schema) -> Batch:
    """Columns by feature name; absent features count as absent for every row."""
    kinds = np.zeros((schema.n_features, 3), dtype=np.int64)
    lengths = {len(v) for v in columns.values() if isinstance(v, (list, tuple, np.ndarray))}
    n = max(lengths) if lengths else 0
    matrix = np.full((n, schema.n_features), np.nan)
    extra = 0
    for name, values in columns.items():
        j = schema.index.get(name)
        if j is None:
            extra += len(values) if isinstance(values, (list, tuple, np.ndarray)) else 1
            continue
        if not isinstance(values, (list, tuple, np.ndarray)):
            kinds[j, K_TYPE] += n
            continue
        col = _column(values, schema, j, kinds)
        matrix[: col.size, j] = col
        kinds[j, K_ABSENT] += n - col.size
    for name, j in schema.index.items():
        if name not in columns:
            kinds[j, K_ABSENT] += n
    return Batch(matrix, kinds, 0, extra)


def from_rows(rows: Sequence, schema: Schema) -> Batch:
    """Rows as lists (positional, schema order) or objects (by feature name)."""
    n, width = len(rows), schema.n_features
    if n == 0:
        return Batch(np.empty((0, width)), np.zeros((width, 3), dtype=np.int64), 0, 0)
    kinds = np.zeros((width, 3), dtype=np.int64)
    if all(isinstance(r, Mapping) for r in rows):
        extra = sum(1 for r in rows for k in r if k not in schema.index)
        matrix = np.empty((n, width))
        for j, name in enumerate(schema.names):
            matrix[:, j] = _column([r.get(name, ABSENT) for r in rows], schema, j, kinds)
        return Batch(matrix, kinds, 0, extra)
    ragged = 0
    extra = 0
    fixed = []
    for r in rows:
        if not isinstance(r, (list, tuple)):
            r = [r] if width == 1 else []
        if len(r) != width:
            ragged += 1
            if len(r) > width:
                extra += len(r) - width
                r = r[:width]
            else:
                r = list(r) + [ABSENT] * (width - len(r))
        fixed.append(r)
    matrix = None
    if not ragged and not any(c is not None for c in schema.category_codes):
        try:  # the common case, all numbers: one C-level conversion
            matrix = np.asarray(fixed, dtype=np.float64).reshape(n, width)
        except (TypeError, ValueError):
            matrix = None
    if matrix is None:
        matrix = np.empty((n, width))
        redo = range(width)
    else:  # numpy turns None into NaN silently: attribute NaN columns value by value
        redo = np.flatnonzero(np.isnan(matrix).any(axis=0))
    for j in redo:
        matrix[:, j] = _column([r[j] for r in fixed], schema, j, kinds)
    return Batch(matrix, kinds, ragged, extra)


def to_batch(data, schema: Schema) -> Batch:
    """A Batch from a numeric matrix, a dict of columns, or a list of rows."""
    if isinstance(data, Batch):
        return data
    if isinstance(data, np.ndarray) and data.dtype.kind in "fiub":
        matrix = np.ascontiguousarray(data, dtype=np.float64)
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        if matrix.shape[1] != schema.n_features:
            fixed = np.full((matrix.shape[0], schema.n_features), np.nan)
            w = min(matrix.shape[1], schema.n_features)
            fixed[:, :w] = matrix[:, :w]
            kinds = np.zeros((schema.n_features, 3), dtype=np.int64)
            kinds[w:, K_ABSENT] += matrix.shape[0]
            return Batch(fixed, kinds, matrix.shape[0], max(0, matrix.shape[1] - w) * matrix.shape[0])
        return Batch(matrix, np.zeros((schema.n_features, 3), dtype=np.int64), 0, 0)
    if isinstance(data, np.ndarray):
        data = data.tolist()
    if isinstance(data, Mapping):
        return from_columns(data, schema)
    return from_rows(list(data), schema)
