"""Payload values as float64 columns: the one conversion the schema fit and the batches share."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stats.layout import K_ABSENT, K_NULL, K_TYPE, N_KINDS


class _AbsentType:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _AbsentType()  # a key a row lacks (not a null it carries)


def float_column(values: Sequence, kinds_row: np.ndarray | None = None) -> np.ndarray:
    """Values as float64, NaN where missing or not a number (counted in `kinds_row`)."""
    if kinds_row is None:
        kinds_row = np.zeros(N_KINDS, dtype=np.int64)
    try:
        arr = np.asarray(values, dtype=np.float64)
        # numpy turns None into NaN silently: look closer only when a NaN shows up
        if arr.ndim == 1 and not np.isnan(arr).any():
            return arr
    except (TypeError, ValueError):
        pass
    out = np.empty(len(values))
    for i, v in enumerate(values):
        if v is None:
            kinds_row[K_NULL] += 1
            out[i] = np.nan
        elif v is ABSENT:
            kinds_row[K_ABSENT] += 1
            out[i] = np.nan
        elif isinstance(v, bool):
            out[i] = float(v)
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out[i] = v
        elif isinstance(v, str):
            try:
                out[i] = float(v)
            except ValueError:
                kinds_row[K_TYPE] += 1
                out[i] = np.nan
        else:
            kinds_row[K_TYPE] += 1
            out[i] = np.nan
    return out
