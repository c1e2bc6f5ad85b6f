"""Streaming state of one stream (say, one route x variant's inputs) on one schema.

Fixed size whatever the traffic: per feature a histogram on the schema's bins, exact moments
(count, mean, M2, min, max), NaN / inf / out-of-range counts, missing values by kind; per
stream the row count and HBOS outlier rows. States on the same schema merge exactly: counts
add, moments combine by Chan's formula, so the state of a whole stream equals the merge of the
states of its parts (workers, replicas, time slices).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from stats.kernels import empty_moments, ingest, merge_moments
from stats.layout import (
    CATEGORICAL,
    KIND_NAMES,
    M_M2,
    M_MAX,
    M_MEAN,
    M_MIN,
    M_N,
    N_ROW_COUNTERS,
    NUMERIC,
    R_EXTRA_VALUES,
    R_HBOS_OUTLIERS,
    R_RAGGED,
    R_ROWS,
)
from stats.schema import Schema
from stats.table import to_batch

FORMAT_VERSION = 1
_NO_SCORES = np.empty(0)


class StreamState:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        f, b = schema.n_features, schema.n_bins
        # One int64 buffer: per feature the histogram, then NaN and inf counts (the kernel bins
        # missing values like any other); the last row holds the stream counters.
        self._counts = np.zeros((f + 1, b + 2), dtype=np.int64)
        self.counts = self._counts[:f]
        self.rows = self._counts[f, :N_ROW_COUNTERS]
        self.moments = empty_moments(f)
        self.kinds = np.zeros((f, len(KIND_NAMES)), dtype=np.int64)

    # -- updating ------------------------------------------------------------------------------
    def update(self, data, scores_out: np.ndarray | None = None) -> None:
        """Add a batch: a numeric matrix (rows x features), a dict of columns or a list of rows.

        Bad values never raise: they are counted (see `missing_by_kind`, `rows`).
        """
        batch = to_batch(data, self.schema)
        if batch.matrix.shape[0] == 0:
            return
        s = self.schema
        ingest(batch.matrix, s.model, s.params, self._counts, self.moments,
               _NO_SCORES if scores_out is None else scores_out)
        self.kinds += batch.kinds
        self.rows[R_RAGGED] += batch.ragged_rows
        self.rows[R_EXTRA_VALUES] += batch.extra_columns

    def update_matrix(self, x: np.ndarray) -> None:
        """The fast path for a float64 C-contiguous (rows x features) matrix: one kernel call."""
        s = self.schema
        ingest(x, s.model, s.params, self._counts, self.moments, _NO_SCORES)

    def reset(self) -> None:
        self._counts[:] = 0
        self.moments[...] = empty_moments(self.schema.n_features)
        self.kinds[:] = 0

    # -- merging -------------------------------------------------------------------------------
    def merge(self, other: StreamState) -> StreamState:
        if other.schema is not self.schema and other.schema != self.schema:
            raise ValueError("states on different schemas cannot be merged")
        out = StreamState(self.schema)
        np.add(self._counts, other._counts, out=out._counts)
        out.moments[...] = merge_moments(self.moments, other.moments)
        np.add(self.kinds, other.kinds, out=out.kinds)
        return out

    __add__ = merge

    @classmethod
    def merged(cls, schema: Schema, states: list[StreamState]) -> StreamState:
        out = cls(schema)
        for st in states:
            out = out.merge(st)
        return out

    def copy(self) -> StreamState:
        out = StreamState(self.schema)
        out._counts[...] = self._counts
        out.moments[...] = self.moments
        out.kinds[...] = self.kinds
        return out

    # -- reading -------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return int(self.rows[R_ROWS])

    @property
    def histogram(self) -> np.ndarray:
        """Counts per bin (F x B), missing values excluded."""
        return self.counts[:, : self.schema.n_bins]

    @property
    def nan_count(self) -> np.ndarray:
        return self.counts[:, self.schema.n_bins]

    @property
    def inf_count(self) -> np.ndarray:
        return self.counts[:, self.schema.n_bins + 1]

    @property
    def n_values(self) -> np.ndarray:
        """Values offered per feature, missing ones included."""
        return self.counts.sum(axis=1).astype(np.float64)

    @property
    def n_present(self) -> np.ndarray:
        return self.histogram.sum(axis=1).astype(np.float64)

    @property
    def mean(self) -> np.ndarray:
        return np.where(self.moments[:, M_N] > 0, self.moments[:, M_MEAN], np.nan)

    @property
    def std(self) -> np.ndarray:
        n = self.moments[:, M_N]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 1, np.sqrt(self.moments[:, M_M2] / np.maximum(n - 1, 1)), np.nan)

    @property
    def minimum(self) -> np.ndarray:
        return self.moments[:, M_MIN]

    @property
    def maximum(self) -> np.ndarray:
        return self.moments[:, M_MAX]

    @property
    def missing(self) -> np.ndarray:
        return (self.nan_count + self.inf_count).astype(np.float64)

    def missing_by_kind(self) -> dict[str, dict[str, int]]:
        """{feature: {null, absent, wrong_type, nan, inf}}."""
        out = {}
        for i, name in enumerate(self.schema.names):
            kinds = {k: int(self.kinds[i, j]) for j, k in enumerate(KIND_NAMES)}
            kinds["nan"] = int(self.nan_count[i]) - sum(kinds.values())
            kinds["inf"] = int(self.inf_count[i])
            out[name] = kinds
        return out

    def summary(self) -> dict:
        """A JSON-friendly view: per feature count, mean, std, min, max, missing."""
        feats = {}
        for i, f in enumerate(self.schema.features):
            item: dict = {"kind": f.kind, "count": int(self.n_present[i]),
                          "missing": int(self.missing[i])}
            if f.kind == NUMERIC and self.moments[i, M_N] > 0:
                item.update(mean=float(self.mean[i]), std=_f(self.std[i]),
                            min=float(self.minimum[i]), max=float(self.maximum[i]))
            elif f.kind == CATEGORICAL:
                item["top"] = {c: int(self.counts[i, j]) for j, c in enumerate(f.categories[:10])}
                item["other"] = int(self.counts[i, len(f.categories)])
            feats[f.name] = item
        return {"rows": self.n_rows, "hbos_outlier_rows": int(self.rows[R_HBOS_OUTLIERS]),
                "ragged_rows": int(self.rows[R_RAGGED]), "features": feats}

    # -- persistence ---------------------------------------------------------------------------
    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}counts": self.counts, f"{prefix}moments": self.moments,
                f"{prefix}kinds": self.kinds, f"{prefix}rows": self.rows}

    @classmethod
    def from_arrays(cls, schema: Schema, arrays, prefix: str = "") -> StreamState:
        st = cls(schema)
        for name in ("counts", "moments", "kinds", "rows"):
            value = np.asarray(arrays[f"{prefix}{name}"])
            if value.shape != getattr(st, name).shape:
                raise ValueError(f"{prefix}{name}: shape {value.shape} does not fit the schema")
            getattr(st, name)[...] = value
        return st

    def save(self, path: str | Path) -> None:
        save_states(path, self.schema, {"state": self})

    @classmethod
    def load(cls, path: str | Path) -> StreamState:
        _, states = load_states(path)
        return states["state"]


def _f(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


def save_states(path: str | Path, schema: Schema, states: dict[str, StreamState],
                extra: dict[str, np.ndarray] | None = None) -> None:
    """One compressed npz: format version, schema (with HBOS calibration), named states and
    optional extra arrays (e.g. a window's slice steps). Written to a temporary file first and
    renamed, so a crash never leaves a half-written file."""
    arrays: dict[str, np.ndarray] = {
        "format_version": np.array(FORMAT_VERSION),
        "schema_json": np.array(schema.to_json()),
        "hbos_log_density": schema.hbos_log_density,
        "hbos_threshold": np.array(schema.hbos_threshold),
        "state_names": np.array(json.dumps(list(states))),
    }
    for name, st in states.items():
        arrays.update(st.to_arrays(f"state.{name}."))
    for name, value in (extra or {}).items():
        arrays[f"extra.{name}"] = np.asarray(value)
    write_npz(path, arrays)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A file written whole or not at all: a temporary file, flushed to disk, renamed over
    `path`, the folder flushed after. Neither a crash nor a power cut leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself
    finally:
        os.close(folder)


def write_npz(path: str | Path, arrays: dict[str, np.ndarray], compress: bool = True) -> None:
    """An npz written atomically (the state files of stats/ and of the monitor process)."""
    with atomic_file(path) as fh:
        (np.savez_compressed if compress else np.savez)(fh, **arrays)


def load_states(path: str | Path) -> tuple[Schema, dict[str, StreamState]]:
    schema, states, _ = load_bundle(path)
    return schema, states


def load_bundle(path: str | Path) -> tuple[Schema, dict[str, StreamState], dict[str, np.ndarray]]:
    """Schema, named states and extra arrays saved by save_states."""
    with np.load(path, allow_pickle=False) as data:
        version = int(data["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: state format {version}, this driftgate reads {FORMAT_VERSION}")
        schema = Schema.from_json(str(data["schema_json"]))
        schema.set_hbos(np.asarray(data["hbos_log_density"]), float(data["hbos_threshold"]))
        names = json.loads(str(data["state_names"]))
        states = {n: StreamState.from_arrays(schema, data, f"state.{n}.") for n in names}
        extra = {k.removeprefix("extra."): np.asarray(data[k]) for k in data.files
                 if k.startswith("extra.")}
    return schema, states, extra
