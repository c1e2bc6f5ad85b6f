"""Drift, outlier and data-quality verdicts for every feature at once, from two states.

All arithmetic is on (features x bins) arrays: no Python loop per feature. The default rule
(see DriftConfig and the README's "Monitoring statistics" section for measured error rates):

numeric feature drifts when, with at least `min_samples` current values,
  - a key statistic (mean, std, median, p95) moved by >= `stat_threshold` (5%) of the reference
    value (of the reference std when the value is within one std of zero) AND the move exceeds
    z standard errors of the difference, so sampling noise on small windows cannot cross it; or
  - with at least `distance_min_samples` (1,000) current values: Wasserstein-1 / reference
    std >= `distance_threshold` (0.1) AND the binned KS test rejects.
categorical feature drifts when, with at least `min_samples` current values, a category's share
  moved by >= `stat_threshold` (5 points) AND by more than z standard errors of the difference
  of two proportions; or (with `distance_min_samples` values) the Jensen-Shannon distance
  (base 2) >= `distance_threshold` AND chi-squared rejects. (A rise of unseen categories is the
  integrity rule's, below.)
Every test of one evaluation shares `alpha`, the chance that clean data flags anything at all:
each of the T tests (five per numeric feature, one per category and one for the distance of a
categorical one) is judged at alpha / T
(Bonferroni), so z is 5.0 for 20 numeric features and grows slowly with more. A monitor judges
this every few seconds all day: alpha is set for about one false flag per day's evaluations
before the alert rules' persistence (see gateway.alerts.rules and benchmarks/false_alarms.py).
data integrity is flagged when the share of values outside the expected range (unseen
  categories for categorical features) or the rise of the missing share exceeds its threshold
  (1 percentage point) with a `rate_z` one-sided Wilson bound.
PSI is reported, not used for the verdict: at 20 quantile bins it misses 0.2-sd mean shifts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
from numba import njit
from scipy import special

from stats.layout import CATEGORICAL, M_HIGH, M_LOW, R_HBOS_OUTLIERS, R_ROWS
from stats.state import StreamState

KEY_STATISTICS = ("mean", "std", "median", "p95")


@dataclass(frozen=True)
class DriftConfig:
    stat_threshold: float = 0.05
    distance_threshold: float = 0.1
    alpha: float = 5e-5             # per evaluation of all the features' tests (see above)
    z: float | None = None          # None: from alpha and the number of tests
    outlier_threshold: float = 0.01
    missing_threshold: float = 0.01
    rate_z: float = 3.0
    min_samples: int = 200
    # The distribution rule needs more: Wasserstein-1 of a few hundred values of a heavy-tailed
    # feature passes 0.1 sd on noise alone now and then; the key statistics guard themselves.
    distance_min_samples: int = 1000
    # The std's z guard assumes its sampling error is near normal; with heavy tails a few
    # extreme values decide a window's std (lognormal sigma 1.5: 65% of windows of 3,000
    # identical rows "moved" at 4 sd). The std rule waits for this many values per unit of
    # (kurtosis - 1): 200 for a normal feature, ~6,000 for lognormal sigma 1.
    std_values_per_kurtosis: float = 100.0
    # ... and the reference this many: its own std is uncertain by sqrt((kurtosis - 1) / 4n),
    # at most 1.6% here, and a sample's kurtosis understates a heavy tail's two- or threefold:
    # with less, a reference's own error passed for drift all day long (benchmarks/
    # false_alarms.py: lognormal sigma 0.8, 10,000 rows, 500 per unit: 4 false alerts a day).
    # A normal feature needs 2,000 reference rows; lognormal sigma 0.8 ~25,000.
    std_reference_values_per_kurtosis: float = 1000.0
    psi_epsilon: float = 1e-4


def wilson_lower(successes: np.ndarray, n: np.ndarray, z: float) -> np.ndarray:
    """One-sided lower confidence bound of a binomial share (0 where n is 0)."""
    n = np.asarray(n, dtype=np.float64)
    safe = np.maximum(n, 1.0)
    p = np.asarray(successes, dtype=np.float64) / safe
    z2 = z * z
    centre = p + z2 / (2 * safe)
    margin = z * np.sqrt(p * (1 - p) / safe + z2 / (4 * safe * safe))
    return np.where(n > 0, np.maximum(0.0, (centre - margin) / (1 + z2 / safe)), 0.0)


# Columns of compare_histograms' per-feature results.
C_N_REF, C_N_CUR, C_PSI, C_JS, C_KS, C_W1, C_CHI2, C_CHI2_DOF = range(8)


@njit(nogil=True, cache=True, error_model="numpy")
def compare_histograms(ref, cur, n_bins, centres, psi_eps):
    """Reference vs current histograms (F x B counts, feature f on its first n_bins[f] bins),
    one pass per feature instead of a dozen (F x B) numpy temporaries.

    Returns (results F x 8: columns C_*, shares p, shares q, CDF of p, CDF of q):
    - PSI on shares floored at psi_eps;
    - Jensen-Shannon distance, base 2 (0 identical .. 1 disjoint);
    - KS statistic: the largest gap of the binned CDFs. Binning can only hide differences inside
      a bin, so it is a lower bound of the exact two-sample statistic, off by at most the
      largest bin share of either sample;
    - Wasserstein-1 on bin positions: sum of CDF gaps times the distance between bin centres;
    - chi-squared test of homogeneity on the 2 x bins table of bins used by either (no
      continuity correction) and its degrees of freedom.
    """
    n_features, width = ref.shape
    res = np.zeros((n_features, 8))
    p = np.zeros((n_features, width))
    q = np.zeros((n_features, width))
    cdf_p = np.zeros((n_features, width))
    cdf_q = np.zeros((n_features, width))
    for f in range(n_features):
        nb = n_bins[f]
        n_r = 0.0
        n_c = 0.0
        for j in range(nb):
            n_r += ref[f, j]
            n_c += cur[f, j]
        inv_r = 1.0 / max(n_r, 1.0)
        inv_c = 1.0 / max(n_c, 1.0)
        total = max(n_r + n_c, 1.0)
        psi_v = kl_p = kl_q = ks = w1 = chi2 = 0.0
        used = 0
        run_p = run_q = 0.0
        for j in range(nb):
            a = ref[f, j] * inv_r
            b = cur[f, j] * inv_c
            p[f, j] = a
            q[f, j] = b
            pe = max(a, psi_eps)
            qe = max(b, psi_eps)
            psi_v += (qe - pe) * np.log(qe / pe)
            m = (a + b) / 2
            if a > 0.0:
                kl_p += a * np.log2(a / m)
            if b > 0.0:
                kl_q += b * np.log2(b / m)
            run_p += a
            run_q += b
            cdf_p[f, j] = run_p
            cdf_q[f, j] = run_q
            gap = abs(run_p - run_q)
            ks = max(ks, gap)
            if j + 1 < nb:
                w1 += gap * (centres[f, j + 1] - centres[f, j])
            col = ref[f, j] + cur[f, j]
            if col > 0:
                used += 1
                e_r = n_r * col / total
                e_c = n_c * col / total
                chi2 += (ref[f, j] - e_r) ** 2 / e_r + (cur[f, j] - e_c) ** 2 / e_c
        for j in range(nb, width):  # bins past the feature's own: the CDFs are complete
            cdf_p[f, j] = run_p
            cdf_q[f, j] = run_q
        res[f, C_N_REF] = n_r
        res[f, C_N_CUR] = n_c
        res[f, C_PSI] = psi_v
        res[f, C_JS] = np.sqrt(max((kl_p + kl_q) / 2, 0.0))
        res[f, C_KS] = ks
        res[f, C_W1] = w1
        res[f, C_CHI2] = chi2
        res[f, C_CHI2_DOF] = max(used - 1, 1)
    return res, p, q, cdf_p, cdf_q


def ks_pvalue(d: np.ndarray, n_p: np.ndarray, n_q: np.ndarray) -> np.ndarray:
    """Asymptotic p-value of two-sample KS statistics (Kolmogorov distribution)."""
    en = n_p * n_q / np.maximum(n_p + n_q, 1.0)
    return special.kolmogorov(np.sqrt(en) * d)


@njit(nogil=True, cache=True, error_model="numpy")
def hist_quantile(shares, cdf, prob, lower, upper):
    """Quantile per row from a histogram's bin shares and their cumulative sum, linear inside
    the bin; also the density there (inf for a zero-width bin)."""
    n_rows, width = shares.shape
    value = np.empty(n_rows)
    density = np.empty(n_rows)
    for f in range(n_rows):
        idx = 0
        while idx < width - 1 and not cdf[f, idx] >= prob - 1e-12:
            idx += 1
        if not cdf[f, idx] >= prob - 1e-12:
            idx = 0  # no bin reaches prob (an empty histogram): the first, as argmax would
        before = cdf[f, idx - 1] if idx > 0 else 0.0
        share = shares[f, idx]
        frac = (prob - before) / share if share > 0 else 0.5
        frac = min(max(frac, 0.0), 1.0)
        w = upper[f, idx] - lower[f, idx]
        value[f] = lower[f, idx] + frac * w
        density[f] = share / w if w > 0 else np.inf
    return value, density


@dataclass
class DriftReport:
    """Per-feature arrays (length F) plus stream-level outlier rows; `features()` for JSON."""

    names: list[str]
    kinds: list[str]
    n_reference: np.ndarray
    n_current: np.ndarray
    psi: np.ndarray
    js: np.ndarray
    wasserstein: np.ndarray
    ks: np.ndarray
    ks_pvalue: np.ndarray
    chi2: np.ndarray
    chi2_pvalue: np.ndarray
    statistics: dict[str, dict[str, np.ndarray]]
    share_change: np.ndarray    # categorical: the largest move of a category's share (signed)
    share_moved: np.ndarray
    stat_drift: np.ndarray
    distance_drift: np.ndarray
    drifted: np.ndarray
    missing_rate: np.ndarray
    missing_rate_reference: np.ndarray
    missing_flag: np.ndarray
    outlier_rate: np.ndarray
    outlier_rate_reference: np.ndarray
    outlier_flag: np.ndarray
    stat_threshold: np.ndarray
    outlier_threshold: np.ndarray
    z: float
    ks_alpha: float
    chi2_alpha: float
    row_outlier_rate: float
    row_outlier_flag: bool
    config: DriftConfig

    @property
    def drifted_features(self) -> list[str]:
        return [n for n, d in zip(self.names, self.drifted) if d]

    @property
    def integrity_features(self) -> list[str]:
        return [n for n, m, o in zip(self.names, self.missing_flag, self.outlier_flag) if m or o]

    def reasons(self, i: int) -> list[str]:
        out = [f"{s} moved" for s in KEY_STATISTICS if self.statistics[s]["moved"][i]]
        if self.share_moved[i]:
            out.append("category shares moved")
        if self.distance_drift[i]:
            out.append("wasserstein" if self.kinds[i] != CATEGORICAL else "jensen_shannon")
        if self.outlier_flag[i]:
            out.append("outliers" if self.kinds[i] != CATEGORICAL else "unseen categories")
        if self.missing_flag[i]:
            out.append("missing values")
        return out

    def features(self) -> list[dict]:
        """Per feature, every measure as JSON-ready values (None for not-a-number)."""
        cfg = self.config
        # every array to a Python list once: per-element float() on numpy scalars dominated
        # the evaluator's round (it builds this for /monitoring every few seconds)
        col = {k: _nums(getattr(self, k)) for k in (
            "psi", "js", "missing_rate", "missing_rate_reference", "outlier_rate",
            "outlier_rate_reference", "outlier_threshold", "wasserstein", "ks", "ks_pvalue",
            "chi2", "chi2_pvalue", "stat_threshold", "share_change")}
        flags = {k: getattr(self, k).tolist() for k in (
            "drifted", "missing_flag", "outlier_flag", "distance_drift", "share_moved")}
        stats = {s: {k: _nums(v) if v.dtype.kind == "f" else v.tolist()
                     for k, v in self.statistics[s].items()} for s in KEY_STATISTICS}
        n_ref, n_cur = self.n_reference.astype(int).tolist(), self.n_current.astype(int).tolist()
        out = []
        for i, name in enumerate(self.names):
            numeric = self.kinds[i] != CATEGORICAL
            item = {
                "feature": name, "kind": self.kinds[i], "drifted": flags["drifted"][i],
                "integrity": flags["missing_flag"][i] or flags["outlier_flag"][i],
                "reasons": self.reasons(i),
                "n_reference": n_ref[i], "n_current": n_cur[i],
                "psi": col["psi"][i],
                "jensen_shannon": {"value": col["js"][i], "threshold": cfg.distance_threshold,
                                   "flagged": flags["distance_drift"][i] and not numeric},
                "missing_rate": {"value": col["missing_rate"][i],
                                 "reference": col["missing_rate_reference"][i],
                                 "threshold": cfg.missing_threshold,
                                 "flagged": flags["missing_flag"][i]},
                "outlier_rate": {"value": col["outlier_rate"][i],
                                 "reference": col["outlier_rate_reference"][i],
                                 "threshold": col["outlier_threshold"][i],
                                 "flagged": flags["outlier_flag"][i]},
            }
            if numeric:
                item["wasserstein"] = {"value": col["wasserstein"][i],
                                       "threshold": cfg.distance_threshold,
                                       "flagged": flags["distance_drift"][i]}
                item["ks"] = {"value": col["ks"][i], "p_value": col["ks_pvalue"][i],
                              "alpha": self.ks_alpha}
                item["statistics"] = {
                    s: {k: v[i] for k, v in stats[s].items()} | {
                        "threshold": col["stat_threshold"][i], "z": self.z}
                    for s in KEY_STATISTICS}
            else:
                item["chi2"] = {"value": col["chi2"][i], "p_value": col["chi2_pvalue"][i],
                                "alpha": self.chi2_alpha}
                item["share_change"] = {"value": col["share_change"][i],
                                        "threshold": col["stat_threshold"][i], "z": self.z,
                                        "flagged": flags["share_moved"][i]}
            out.append(item)
        return out

    def to_dict(self) -> dict:
        return {"drifted": self.drifted_features, "integrity": self.integrity_features,
                "row_outlier_rate": self.row_outlier_rate, "row_outliers_flagged": self.row_outlier_flag,
                "config": asdict(self.config), "features": self.features()}


def _nums(values: np.ndarray) -> list[float | None]:
    return [v if v - v == 0.0 else None for v in values.astype(np.float64).tolist()]


class _Binned(NamedTuple):
    """Both histograms as evaluate()'s parts read them."""

    p: np.ndarray         # reference bin shares (F x B)
    q: np.ndarray         # current bin shares
    cdf_p: np.ndarray
    cdf_q: np.ndarray
    lower: np.ndarray     # reference bin bounds (tails end at the reference min / max)
    upper: np.ndarray
    centres: np.ndarray
    n_r: np.ndarray       # values per feature, reference and current
    n_c: np.ndarray
    enough: np.ndarray    # current has cfg.min_samples values


def evaluate(reference: StreamState, current: StreamState,
             config: DriftConfig | None = None) -> DriftReport:
    cfg = config or DriftConfig()
    schema = reference.schema
    if current.schema is not schema and current.schema != schema:
        raise ValueError("reference and current states are on different schemas")
    is_cat = schema.is_categorical
    numeric = ~is_cat
    # Wasserstein-1 on bin positions (centres; the tails end at the reference min/max).
    lower, upper = schema.bin_bounds(reference.minimum, reference.maximum)
    centres = (lower + upper) / 2
    cmp, p, q, cdf_p, cdf_q = compare_histograms(reference.histogram, current.histogram,
                                                 schema.bins_per_feature, centres,
                                                 cfg.psi_epsilon)
    n_r, n_c = cmp[:, C_N_REF], cmp[:, C_N_CUR]
    binned = _Binned(p, q, cdf_p, cdf_q, lower, upper, centres, n_r, n_c, n_c >= cfg.min_samples)
    psi_v, js_v, ks_v = cmp[:, C_PSI], cmp[:, C_JS], cmp[:, C_KS]
    ks_p = ks_pvalue(ks_v, n_r, n_c)
    sd_r = reference.std
    spread = np.where(np.isfinite(sd_r) & (sd_r > 0), sd_r, 1.0)
    w1 = cmp[:, C_W1] / spread
    chi_v = cmp[:, C_CHI2]
    chi_p = special.chdtrc(cmp[:, C_CHI2_DOF], chi_v)  # chi2.sf without scipy.stats' overhead

    stat_thr = np.where(np.isnan(schema.stat_thresholds), cfg.stat_threshold, schema.stat_thresholds)
    n_categories = np.where(is_cat, schema.bins_per_feature - 1, 0)
    n_tests = max(int(numeric.sum()) * (len(KEY_STATISTICS) + 1)
                  + int(is_cat.sum()) + int(n_categories.sum()), 1)
    test_alpha = cfg.alpha / n_tests
    z = cfg.z if cfg.z is not None else float(special.ndtri(1 - test_alpha / 2))
    statistics = _key_statistics(reference, current, binned, stat_thr, cfg, z)
    share_change, share_moved = _category_shares(binned, n_categories, stat_thr, z)
    stat_drift = share_moved.copy()
    for s in statistics.values():
        stat_drift |= s["moved"]

    ks_alpha = chi_alpha = test_alpha
    distance_drift = (n_c >= cfg.distance_min_samples) & np.where(
        numeric, (w1 >= cfg.distance_threshold) & (ks_p < ks_alpha),
        (js_v >= cfg.distance_threshold) & (chi_p < chi_alpha))
    return DriftReport(
        names=list(schema.names), kinds=[f.kind for f in schema.features],
        n_reference=n_r, n_current=n_c, psi=psi_v, js=js_v, wasserstein=np.where(numeric, w1, np.nan),
        ks=np.where(numeric, ks_v, np.nan), ks_pvalue=np.where(numeric, ks_p, np.nan),
        chi2=np.where(is_cat, chi_v, np.nan), chi2_pvalue=np.where(is_cat, chi_p, np.nan),
        statistics=statistics, stat_drift=stat_drift, distance_drift=distance_drift,
        share_change=share_change, share_moved=share_moved,
        drifted=stat_drift | distance_drift, stat_threshold=stat_thr, z=z,
        ks_alpha=ks_alpha, chi2_alpha=chi_alpha, config=cfg,
        **_integrity(reference, current, binned, cfg))


def _reference_kurtosis(reference: StreamState, b: _Binned) -> np.ndarray:
    """Kurtosis of the reference (its histogram's, or the baseline sample's if larger): the
    sampling error of a standard deviation grows with it, sd * sqrt((kurtosis - 1) / 4n);
    3 for a normal feature."""
    schema = reference.schema
    with np.errstate(invalid="ignore", divide="ignore"):
        dev = np.where(schema.bin_valid, b.centres - reference.mean[:, None], 0.0)
        weighted = b.p * (dev * dev)  # (not dev ** 4: numpy's power is 30x slower)
        m2 = weighted.sum(axis=1)
        kurt = np.where(m2 > 0, (weighted * (dev * dev)).sum(axis=1) / (m2 * m2), 3.0)
        kurt = np.fmax(kurt, schema.kurtosis)  # the baseline sample's, where the spec has it
        return np.clip(np.nan_to_num(kurt, nan=3.0), 3.0, None)


def _key_statistics(reference: StreamState, current: StreamState, b: _Binned,
                    stat_thr: np.ndarray, cfg: DriftConfig,
                    z: float) -> dict[str, dict[str, np.ndarray]]:
    """Mean, std, median and p95 of each side with the standard error of their difference;
    `moved` where the change passes both the threshold and the sampling error."""
    numeric = ~reference.schema.is_categorical
    cur_lower, cur_upper = reference.schema.bin_bounds(current.minimum, current.maximum)
    sd_r, sd_c = reference.std, current.std
    n_r, n_c = np.maximum(b.n_r, 1), np.maximum(b.n_c, 1)
    kurt = _reference_kurtosis(reference, b)
    statistics: dict[str, dict[str, np.ndarray]] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {
            "mean": (reference.mean, current.mean, np.sqrt(sd_r ** 2 / n_r + sd_c ** 2 / n_c)),
            "std": (sd_r, sd_c, np.sqrt((kurt - 1) / 4 * (sd_r ** 2 / n_r + sd_c ** 2 / n_c))),
        }
        for name, prob in (("median", 0.5), ("p95", 0.95)):
            ref_q, _ = hist_quantile(b.p, b.cdf_p, prob, b.lower, b.upper)
            cur_q, _ = hist_quantile(b.q, b.cdf_q, prob, cur_lower, cur_upper)
            # A sample quantile's standard error is sqrt(p(1-p)/n) / density at the quantile;
            # the density comes from the reference's quantiles either side (Siddiqui's
            # estimator), not from the one bin the quantile falls in: a quantile on a bin edge
            # would take the denser bin's density and understate the error (heavy tails
            # alarmed in ~20% of identically distributed windows that way).
            h = min(0.05, (1 - prob) / 2)
            below, _ = hist_quantile(b.p, b.cdf_p, prob - h, b.lower, b.upper)
            above, _ = hist_quantile(b.p, b.cdf_p, prob + h, b.lower, b.upper)
            sparsity = (above - below) / (2 * h)
            se = np.sqrt(prob * (1 - prob)) * sparsity * np.sqrt(1 / n_r + 1 / n_c)
            values[name] = (ref_q, cur_q, se)
        for name, (ref_s, cur_s, se) in values.items():
            base = sd_r if name == "std" else np.where(np.abs(ref_s) >= sd_r, np.abs(ref_s), sd_r)
            base = np.where(np.isfinite(base) & (base > 0), base, 1.0)
            diff = cur_s - ref_s
            change = diff / base
            moved = (numeric & b.enough & np.isfinite(change) & (np.abs(change) >= stat_thr)
                     & (np.abs(diff) >= z * np.where(np.isnan(se), np.inf, se)))
            if name == "std":
                moved &= b.n_c >= cfg.std_values_per_kurtosis * (kurt - 1)
                moved &= b.n_r >= cfg.std_reference_values_per_kurtosis * (kurt - 1)
            statistics[name] = {"reference": ref_s, "current": cur_s, "change": change,
                                "std_error": se, "moved": moved}
    return statistics


def _category_shares(b: _Binned, n_categories: np.ndarray, stat_thr: np.ndarray,
                     z: float) -> tuple[np.ndarray, np.ndarray]:
    """Per categorical feature: the largest move of a known category's share (signed; NaN for
    numeric features) and whether some category moved by the threshold and by z standard
    errors of a difference of two proportions."""
    known = np.arange(b.p.shape[1])[None, :] < n_categories[:, None]  # not "(other)"
    diff = np.where(known, b.q - b.p, 0.0)
    n_r, n_c = np.maximum(b.n_r, 1)[:, None], np.maximum(b.n_c, 1)[:, None]
    se = np.sqrt(b.p * (1 - b.p) / n_r + b.q * (1 - b.q) / n_c)
    significant = known & (np.abs(diff) >= stat_thr[:, None]) & (np.abs(diff) >= z * se)
    moved = (n_categories > 0) & b.enough & significant.any(axis=1)
    largest = np.take_along_axis(diff, np.abs(diff).argmax(axis=1)[:, None], axis=1)[:, 0]
    return np.where(n_categories > 0, largest, np.nan), moved


def _integrity(reference: StreamState, current: StreamState, b: _Binned,
               cfg: DriftConfig) -> dict:
    """Missing values, values outside the expected range / unseen categories, HBOS rows."""
    schema = reference.schema
    is_cat = schema.is_categorical
    nv_r, nv_c = reference.n_values, current.n_values
    miss_r = reference.missing / np.maximum(nv_r, 1)
    miss_c = current.missing / np.maximum(nv_c, 1)
    missing_flag = (nv_c >= cfg.min_samples) & (
        wilson_lower(current.missing, nv_c, cfg.rate_z) > miss_r + cfg.missing_threshold)
    n_cats = schema.bins_per_feature - 1
    rows_idx = np.arange(len(is_cat))
    unseen_r = np.where(is_cat, reference.histogram[rows_idx, np.maximum(n_cats, 0)], 0.0)
    unseen_c = np.where(is_cat, current.histogram[rows_idx, np.maximum(n_cats, 0)], 0.0)
    out_r = np.where(is_cat, unseen_r, reference.moments[:, M_LOW] + reference.moments[:, M_HIGH])
    out_c = np.where(is_cat, unseen_c, current.moments[:, M_LOW] + current.moments[:, M_HIGH])
    out_rate_r = out_r / np.maximum(b.n_r, 1)
    out_rate_c = out_c / np.maximum(b.n_c, 1)
    out_thr = np.where(np.isnan(schema.outlier_thresholds), cfg.outlier_threshold,
                       schema.outlier_thresholds)
    # Numeric: the share outside the expected range itself; categorical: the rise of unseen ones.
    out_base = np.where(is_cat, out_rate_r, 0.0)
    outlier_flag = b.enough & (wilson_lower(out_c, b.n_c, cfg.rate_z) > out_base + out_thr)
    rows_c = float(current.rows[R_ROWS])
    hbos_c = float(current.rows[R_HBOS_OUTLIERS])
    row_flag = bool(rows_c >= cfg.min_samples and wilson_lower(
        np.array([hbos_c]), np.array([rows_c]), cfg.rate_z)[0] > cfg.outlier_threshold)
    return {"missing_rate": miss_c, "missing_rate_reference": miss_r, "missing_flag": missing_flag,
            "outlier_rate": out_rate_c, "outlier_rate_reference": out_rate_r,
            "outlier_flag": outlier_flag, "outlier_threshold": out_thr,
            "row_outlier_rate": hbos_c / rows_c if rows_c else 0.0, "row_outlier_flag": row_flag}
