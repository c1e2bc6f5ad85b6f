"""Joint drift: what the numeric features do together, seen through K fixed directions.

Per-feature histograms cannot see two features whose correlation flips while each keeps its
distribution. Every row's standardized numeric vector z (reference mean and std) is projected
onto K unit directions drawn once, with a seed, when the reference is fit, and stored with it:
u = z @ W. A change in how features move together changes the distribution of some
projections (a correlation flip of f0 and f1 moves the spread of every direction that weighs
both), so each projection is one more "feature" of an ordinary stats/ state: histogram on
reference bins, moments, mergeable across slices, workers and replicas like every other state,
bounded by K. The verdicts are stats.drift's on the K projections, under its one false-flag
budget per evaluation. Rows with a missing numeric value are skipped (and counted by the
caller); categorical features are left out.

Which features moved: the directions' changes are regressed on each feature's weights (mean
moves) and each pair's weight products (covariance changes): see moved_features.
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
    schema: Schema

    @property
    def k(self) -> int:
        return self.directions.shape[1]

    def project(self, matrix: np.ndarray) -> tuple[np.ndarray, int]:
        """(projections of the complete rows (n x K), rows skipped for a missing value);
        `matrix` holds the spec's features in order (n x F)."""
        complete = np.isfinite(matrix).all(axis=1)
        rows = matrix[complete] if not complete.all() else matrix
        return standardize(rows, self.centre, self.scale) @ self.directions, \
            int((~complete).sum())

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"joint_names": np.array(self.names), "joint_centre": self.centre,
                "joint_scale": self.scale, "joint_directions": self.directions,
                "joint_schema": np.array(self.schema.to_json())}

    @classmethod
    def from_arrays(cls, arrays) -> JointSpec | None:
        if "joint_directions" not in arrays:
            return None
        return cls([str(n) for n in arrays["joint_names"]], np.asarray(arrays["joint_centre"]),
                   np.asarray(arrays["joint_scale"]), np.asarray(arrays["joint_directions"]),
                   Schema.from_json(str(arrays["joint_schema"])))


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
    projected = standardize(complete, centre, scale) @ directions
    schema, reference = fit_baseline(projected, [f"joint{d}" for d in range(k)])
    return JointSpec(list(names), centre, scale, directions, schema), reference


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
    """One window's joint judgement: score, whether some direction drifted, and the features
    that carry the moved directions, most first. The score is, over the directions and their
    measures, the largest min(effect / its threshold, evidence / its critical value): it
    passes 1 only where a move is both large enough and more than noise, as a drift flag
    needs (a centred projection's 5% "change" is noise on small windows: effect alone would
    read 2 on clean traffic)."""

    score: float
    threshold: float
    drifted: bool
    top_features: list[str]
    directions_drifted: int
    n_current: int


def direction_scores(report: DriftReport) -> np.ndarray:
    """Per direction, the largest min(effect ratio, evidence ratio) over its measures."""
    cfg = report.config
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = []
        for s in ("mean", "std", "median", "p95"):
            st = report.statistics[s]
            effect = np.abs(st["change"]) / report.stat_threshold
            evidence = np.abs(st["current"] - st["reference"]) / (report.z * st["std_error"])
            ratios.append(np.fmin(effect, evidence))
        en = report.n_reference * report.n_current / np.maximum(
            report.n_reference + report.n_current, 1.0)
        ks_critical = special.kolmogi(report.ks_alpha) / np.sqrt(np.maximum(en, 1.0))
        ratios.append(np.fmin(report.wasserstein / cfg.distance_threshold,
                              report.ks / ks_critical))
        scores = np.nan_to_num(np.max(ratios, axis=0), nan=0.0, posinf=0.0)
    return np.where(report.n_current >= cfg.min_samples, scores, 0.0)


def moved_features(spec: JointSpec, report: DriftReport) -> np.ndarray:
    """How much each feature explains what the directions show, per feature (F,).

    A projection u = z.w moves its mean by sum_j w_j dmu_j and its variance by
    sum_jk w_j w_k dC_jk. Regressing the K directions' changes on each feature's weights
    (mean) and on each pair's weight products (covariance: a correlation flip of f0 and f1
    changes every direction by 2 w_0 w_1 dC_01) estimates dmu_j and dC_jk one at a time; with
    directions drawn at random the other features' and pairs' estimates stay near zero.
    Standardized units: a feature's score is its largest mean move (in sd) or covariance
    change with any feature (itself included)."""
    w = spec.directions                                           # F x K
    stats = report.statistics
    with np.errstate(invalid="ignore"):
        d_mean = np.nan_to_num(stats["mean"]["current"] - stats["mean"]["reference"])
        d_var = np.nan_to_num(stats["std"]["current"] ** 2 - stats["std"]["reference"] ** 2)
    mean_move = np.abs(w @ d_mean) / (w * w).sum(axis=1)
    pairs = w[:, None, :] * w[None, :, :]                         # F x F x K
    cov_change = np.abs(pairs @ d_var) / np.maximum((pairs * pairs).sum(axis=2), 1e-12)
    return np.maximum(mean_move, cov_change.max(axis=1))


def judge(spec: JointSpec, report: DriftReport, top: int = 5) -> JointVerdict:
    """The joint verdict from stats.drift.evaluate on the projections."""
    per_direction = direction_scores(report)
    drifted = report.drifted
    named: list[str] = []
    if drifted.any():
        scores = moved_features(spec, report)
        named = [spec.names[j] for j in np.argsort(-scores, kind="stable")[:top]]
    return JointVerdict(float(per_direction.max(initial=0.0)), 1.0, bool(drifted.any()), named,
                        int(drifted.sum()), int(report.n_current.max(initial=0)))
