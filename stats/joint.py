"""Joint drift: what the numeric features do together, seen through K fixed directions.

Per-feature histograms cannot see two features whose correlation flips while each keeps its
distribution. Every row's standardized numeric vector z (reference mean and std, clipped) is
projected onto K unit directions drawn once, with a seed, when the reference is fit, and stored
with it: u = z @ W. A change in how features move together changes the spread of some
projections (a correlation flip of f0 and f1 moves the variance of every direction that weighs
both by 2 w0 w1 dC01). The K projections and the F standardized features themselves are the
columns of an ordinary stats/ state (histograms on reference bins, moments): mergeable across
slices, workers and replicas like every other state, bounded by K + F.

The verdict is about dependence only: what the features do alone is the per-feature rules'
job, and a joint alert beside every feature alert would be noise. So a projection's variance
is compared with the variance it would have if only the marginals had changed (each feature's
current spread, the reference's correlations R): var_expected = w'DRDw, D = current / reference
spread of each standardized feature; location changes are ignored. A direction flags when that
unexplained change passes `VARIANCE_THRESHOLD` and z standard errors, z from the same one
false-flag budget per evaluation (alpha / K). Rows with a missing numeric value are skipped
(and counted by the caller); categorical features are left out.

Which features moved: the directions' unexplained variance changes are regressed on each pair's
weight products (a covariance change of f0 and f1 moves direction d by 2 w0d w1d dC01).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from stats.baseline import fit_baseline
from stats.drift import DriftReport
from stats.layout import CATEGORICAL
from stats.schema import Schema
from stats.state import StreamState
from stats.table import to_batch

DEFAULT_DIRECTIONS = 32
SEED = 20261202
VARIANCE_THRESHOLD = 0.10   # a projection's variance off its expectation by 10% (sd ~5%)


# Standardized values are clipped here: a heavy tail (lognormal, exponential) otherwise makes
# every projection heavy-tailed too, and the spread tests, whose errors assume moderate
# kurtosis, raised joint alarms on clean traffic (benchmarks/false_alarms.py: ~20 a day on
# lognormal features). Clipping at 4 sd leaves normal data alone (6 values in 100,000).
CLIP_SD = 4.0


def standardize(rows: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.clip((rows - centre) / scale, -CLIP_SD, CLIP_SD)


@dataclass
class JointSpec:
    """How rows become projections: the features used, their reference centre and scale, the
    directions (F x K, unit columns), and the schema of the K projections."""

    names: list[str]
    centre: np.ndarray
    scale: np.ndarray
    directions: np.ndarray
    schema: Schema          # of the K projections, then the F standardized features
    correlation: np.ndarray  # F x F, of the standardized reference rows

    @property
    def k(self) -> int:
        return self.directions.shape[1]

    def project(self, matrix: np.ndarray) -> tuple[np.ndarray, int]:
        """(the state's columns for the complete rows: K projections then the F standardized
        features (n x (K+F)), rows skipped for a missing value); `matrix` holds the spec's
        features in order (n x F)."""
        complete = np.isfinite(matrix).all(axis=1)
        rows = matrix[complete] if not complete.all() else matrix
        z = standardize(rows, self.centre, self.scale)
        return np.ascontiguousarray(np.hstack([z @ self.directions, z])), int((~complete).sum())

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"joint_names": np.array(self.names), "joint_centre": self.centre,
                "joint_scale": self.scale, "joint_directions": self.directions,
                "joint_schema": np.array(self.schema.to_json()),
                "joint_correlation": self.correlation}

    @classmethod
    def from_arrays(cls, arrays) -> JointSpec | None:
        if "joint_correlation" not in arrays:  # none, or from a version without it
            return None
        return cls([str(n) for n in arrays["joint_names"]], np.asarray(arrays["joint_centre"]),
                   np.asarray(arrays["joint_scale"]), np.asarray(arrays["joint_directions"]),
                   Schema.from_json(str(arrays["joint_schema"])),
                   np.asarray(arrays["joint_correlation"]))


def fit_joint(matrix: np.ndarray, names: list[str], k: int = DEFAULT_DIRECTIONS,
              seed: int = SEED) -> tuple[JointSpec, StreamState] | None:
    """A joint spec and its reference state from reference rows of numeric features (n x F);
    None with fewer than two features or too few complete rows to learn from."""
    if matrix.shape[1] < 2:
        return None
    complete = matrix[np.isfinite(matrix).all(axis=1)]
    if complete.shape[0] < 100:
        return None
    centre = complete.mean(axis=0)
    scale = complete.std(axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((matrix.shape[1], k))
    directions /= np.linalg.norm(directions, axis=0, keepdims=True)
    z = standardize(complete, centre, scale)
    correlation = np.nan_to_num(np.corrcoef(z, rowvar=False))
    columns = np.hstack([z @ directions, z])
    schema, reference = fit_baseline(columns, [f"joint{d}" for d in range(k)]
                                     + [f"z:{n}" for n in names])
    return JointSpec(list(names), centre, scale, directions, schema, correlation), reference


def fit_joint_columns(columns, schema: Schema,
                      k: int = DEFAULT_DIRECTIONS) -> tuple[JointSpec, StreamState] | None:
    """fit_joint on the numeric features of reference columns laid out by `schema`."""
    numeric = [j for j, f in enumerate(schema.features) if f.kind != CATEGORICAL]
    if len(numeric) < 2:
        return None
    matrix = to_batch(columns, schema).matrix[:, numeric]
    return fit_joint(matrix, [schema.names[j] for j in numeric], k)


def joint_arrays(spec: JointSpec, reference: StreamState) -> dict[str, np.ndarray]:
    """What a state file keeps of a joint reference (extra arrays of stats.state.save_states)."""
    return {**spec.to_arrays(), **reference.to_arrays("joint.reference.")}


def joint_from_arrays(arrays) -> tuple[JointSpec, StreamState] | None:
    """A joint reference saved by joint_arrays; None from a file saved without one."""
    spec = JointSpec.from_arrays(arrays)
    if spec is None:
        return None
    return spec, StreamState.from_arrays(spec.schema, arrays, "joint.reference.")


@dataclass
class JointVerdict:
    """One window's joint judgement: score (the largest min(effect / threshold, evidence /
    critical value) over the directions: 1 is a flag), whether some direction's spread moved
    beyond what the marginals explain, and the features of the covariances that moved most."""

    score: float
    threshold: float
    drifted: bool
    top_features: list[str]
    directions_drifted: int
    n_current: int


def _unexplained(spec: JointSpec, report: DriftReport) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    """Per direction: the relative variance change the marginals do not explain, its standard
    error, and the unexplained variance change itself (standardized units)."""
    k = spec.k
    sd = report.statistics["std"]
    ref_sd, cur_sd, se_sd = sd["reference"], sd["current"], sd["std_error"]
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.nan_to_num(cur_sd[k:] / ref_sd[k:], nan=1.0)  # D: each feature alone
        w = spec.directions
        scaled = w * spread[:, None]
        expected = np.einsum("fk,fg,gk->k", scaled, spec.correlation, scaled)
        reference = np.einsum("fk,fg,gk->k", w, spec.correlation, w)
        ratio = expected / reference                    # what the marginals alone would do
        observed = (cur_sd[:k] / ref_sd[:k]) ** 2
        change = observed / ratio - 1.0
        se = 2.0 * se_sd[:k] / ref_sd[:k]               # of a variance ratio, from the sd's
        residual = cur_sd[:k] ** 2 - ref_sd[:k] ** 2 * ratio
    return np.nan_to_num(change), np.nan_to_num(se, nan=np.inf), np.nan_to_num(residual)


def moved_features(spec: JointSpec, residual: np.ndarray) -> np.ndarray:
    """Per feature, its largest estimated covariance change with another feature: the
    directions' unexplained variance changes regressed on each pair's weight products, one
    pair at a time (with directions drawn at random the other pairs' estimates stay near
    zero)."""
    w = spec.directions                                           # F x K
    pairs = w[:, None, :] * w[None, :, :]                         # F x F x K
    cov_change = np.abs(pairs @ residual) / np.maximum((pairs * pairs).sum(axis=2), 1e-12)
    np.fill_diagonal(cov_change, 0.0)  # a feature's own spread: the per-feature rules'
    return cov_change.max(axis=1)


def judge(spec: JointSpec, report: DriftReport, top: int = 5) -> JointVerdict:
    """The joint verdict from stats.drift.evaluate on the joint state's columns."""
    cfg = report.config
    k = spec.k
    z = float(special.ndtri(1 - cfg.alpha / k / 2))  # the evaluation's budget over K tests
    change, se, residual = _unexplained(spec, report)
    enough = report.n_current[:k] >= cfg.min_samples
    effect = np.abs(change) / VARIANCE_THRESHOLD
    evidence = np.abs(change) / (z * se)
    per_direction = np.where(enough, np.fmin(effect, evidence), 0.0)
    drifted = per_direction >= 1.0
    named: list[str] = []
    if drifted.any():
        scores = moved_features(spec, np.where(enough, residual, 0.0))
        named = [spec.names[j] for j in np.argsort(-scores, kind="stable")[:top]]
    return JointVerdict(float(per_direction.max(initial=0.0)), 1.0, bool(drifted.any()), named,
                        int(drifted.sum()), int(report.n_current[:k].max(initial=0)))
