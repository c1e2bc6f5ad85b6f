"""A/B statistics from streaming state: is the candidate different from the control, and sure?

Every test is a pure function of tallies (counts, moments, histograms) and works on numpy
arrays elementwise, so a simulation of thousands of experiments is one call.

- proportions (error rate, accuracy, conversion): two-proportion z-test, pooled for the
  p-value and unpooled (Wald) for the 95% interval; Fisher's exact test when an expected
  cell count is below 5;
- means (latency, absolute error, reward): Welch's t-test from (n, mean, variance);
- distributions (latency): Mann-Whitney U from two histograms on shared bins, pairs in one
  bin counted as ties (normal approximation with tie correction);
- ROC AUC: difference of two independent AUCs with Hanley & McNeil's (1982) standard error,
  a bootstrap-free approximation to DeLong's for independent samples;
- always-valid sequential p-values: the mixture SPRT of Johari et al. (2017) with a normal
  mixing distribution N(0, tau^2) on the effect (tau = the minimum effect of interest). Its
  running minimum may be watched after every batch without inflating false positives.
Each comparison reports the effect with its 95% interval, p-value, the sequential p-value,
and how many more samples per variant a test needs to detect the minimum effect at 80% power.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from stats.quality import LATENCY_EDGES, QualityLayout, histogram_quantiles, latency_bins

ALPHA = 0.05
POWER = 0.8
Z_ALPHA = float(sps.norm.ppf(1 - ALPHA / 2))
Z_POWER = float(sps.norm.ppf(POWER))


# -- tests (elementwise on arrays) -------------------------------------------------------
def two_proportions(x_a, n_a, x_b, n_b):
    """(effect p_b - p_a, unpooled standard error, z, two-sided p) for x successes of n."""
    x_a, n_a, x_b, n_b = (np.asarray(v, dtype=np.float64) for v in (x_a, n_a, x_b, n_b))
    with np.errstate(invalid="ignore", divide="ignore"):
        p_a, p_b = x_a / n_a, x_b / n_b
        pooled = (x_a + x_b) / (n_a + n_b)
        se_pooled = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
        z = (p_b - p_a) / se_pooled
        se = np.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    p = np.where(se_pooled > 0, 2 * sps.norm.sf(np.abs(z)), 1.0)
    return p_b - p_a, se, z, p


def fisher_exact(x_a: int, n_a: int, x_b: int, n_b: int) -> float:
    return float(sps.fisher_exact([[x_a, n_a - x_a], [x_b, n_b - x_b]])[1])


def needs_exact(x_a, n_a, x_b, n_b) -> bool:
    """Whether an expected count of the 2x2 table is under 5 (the z-test's rule of thumb)."""
    total = n_a + n_b
    if total <= 0:
        return False
    s = x_a + x_b
    expected = [n * k / total for n in (n_a, n_b) for k in (s, total - s)]
    return min(expected) < 5


def welch(mean_a, var_a, n_a, mean_b, var_b, n_b):
    """(effect mean_b - mean_a, standard error, t, Welch-Satterthwaite df, two-sided p)."""
    mean_a, var_a, n_a, mean_b, var_b, n_b = (np.asarray(v, dtype=np.float64) for v in (
        mean_a, var_a, n_a, mean_b, var_b, n_b))
    with np.errstate(invalid="ignore", divide="ignore"):
        va, vb = var_a / n_a, var_b / n_b
        se = np.sqrt(va + vb)
        t = (mean_b - mean_a) / se
        df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    p = np.where(se > 0, 2 * sps.t.sf(np.abs(t), df), 1.0)
    return mean_b - mean_a, se, t, df, p


def mann_whitney_binned(hist_a, hist_b):
    """(U of b over a, z, two-sided p, P(b > a) + ties/2) from counts on shared bins."""
    a, b = np.asarray(hist_a, dtype=np.float64), np.asarray(hist_b, dtype=np.float64)
    n_a, n_b = a.sum(), b.sum()
    if n_a == 0 or n_b == 0:
        return np.nan, np.nan, 1.0, np.nan
    below_a = np.cumsum(a) - a
    u = float((b * (below_a + 0.5 * a)).sum())  # pairs where b is larger, ties halved
    n = n_a + n_b
    ties = a + b
    var = n_a * n_b / 12 * ((n + 1) - (ties ** 3 - ties).sum() / (n * (n - 1)))
    mu = n_a * n_b / 2
    z = (u - mu) / np.sqrt(var) if var > 0 else 0.0
    return u, float(z), float(2 * sps.norm.sf(abs(z))), u / (n_a * n_b)


def auc_standard_error(auc, n_pos, n_neg):
    """Hanley & McNeil's standard error of an AUC from n_pos positives and n_neg negatives."""
    auc, n_pos, n_neg = (np.asarray(v, dtype=np.float64) for v in (auc, n_pos, n_neg))
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc ** 2)
               + (n_neg - 1) * (q2 - auc ** 2)) / (n_pos * n_neg)
    return np.sqrt(np.maximum(var, 0.0))


def msprt_p_value(effect, se, tau):
    """1 / mixture likelihood ratio for H0 effect = 0, estimate ~ N(effect, se^2), mixing
    N(0, tau^2); capped at 1. The always-valid p-value is the running minimum of this."""
    effect, se, tau = (np.asarray(v, dtype=np.float64) for v in (effect, se, tau))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        s2, t2 = se ** 2, tau ** 2
        log_lr = 0.5 * np.log(s2 / (s2 + t2)) + t2 * effect ** 2 / (2 * s2 * (s2 + t2))
        p = np.exp(-log_lr)
    return np.where(np.isfinite(p) & (se > 0), np.minimum(p, 1.0), 1.0)


def needed_per_arm(var_a, var_b, delta):
    """Samples per variant for a two-sided 5% test to detect `delta` with 80% power."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.ceil((Z_ALPHA + Z_POWER) ** 2 * (var_a + var_b) / np.asarray(delta) ** 2)


# -- tallies of one variant of an experiment ---------------------------------------------
class ExperimentLayout:
    """One flat vector per variant: requests, errors, latency moments and histogram, then
    a stats.quality tally. Additive like every other state here."""

    def __init__(self, quality: QualityLayout | None = None) -> None:
        self.quality = quality or QualityLayout()
        self.latency_bins = len(LATENCY_EDGES) + 1
        self.q0 = 5 + self.latency_bins  # requests, errors, lat n, lat sum, lat sum^2, hist
        self.size = self.q0 + self.quality.size

    def zeros(self) -> np.ndarray:
        return np.zeros(self.size)

    def add_requests(self, tally: np.ndarray, durations: np.ndarray, errors: np.ndarray) -> None:
        d = np.asarray(durations, dtype=np.float64)
        tally[:5] += (d.size, np.count_nonzero(errors), d.size, d.sum(), (d * d).sum())
        tally[5:self.q0] += np.bincount(latency_bins(d), minlength=self.latency_bins)

    def quality_part(self, tally: np.ndarray) -> np.ndarray:
        return tally[self.q0:]

    def latency_histogram(self, tally: np.ndarray) -> np.ndarray:
        return tally[5:self.q0]

    def summary(self, tally: np.ndarray) -> dict:
        requests, errors, n, s, ss = tally[:5]
        out: dict = {"requests": int(requests),
                     "errors": int(errors), "error_rate": errors / requests if requests else None}
        if n:
            p50, p95, p99 = histogram_quantiles(self.latency_histogram(tally), LATENCY_EDGES,
                                                (0.5, 0.95, 0.99))
            out["latency_ms"] = {"mean": 1000 * s / n, "p50": 1000 * p50, "p95": 1000 * p95,
                                 "p99": 1000 * p99}
        q = self.quality_part(tally)
        out["quality"] = self.quality.metrics(q)
        out["labels"] = self.quality.counts(q)
        return out


DEFAULT_MIN_EFFECT = {  # absolute for proportions and AUC; relative to the control otherwise
    "error_rate": 0.01, "accuracy": 0.02, "auc": 0.02, "conversion_rate": 0.01,
    "latency": 0.10, "mae": 0.05, "mean_reward": 0.05,
}
RELATIVE = {"latency", "mae", "mean_reward"}
HIGHER_IS_BETTER = {"accuracy": True, "auc": True, "conversion_rate": True, "mean_reward": True,
                    "error_rate": False, "latency": False, "mae": False}
MIN_SAMPLES = 30  # per variant, before a test is run at all


@dataclass
class Comparison:
    metric: str
    candidate: str
    control_value: float
    candidate_value: float
    n: tuple[int, int]
    effect: float
    se: float
    p_value: float
    method: str
    min_effect: float
    var: tuple[float, float]  # per-observation variances, for the sample size
    extra: dict = field(default_factory=dict)


def compare(layout: ExperimentLayout, control: np.ndarray, candidate: np.ndarray,
            candidate_name: str, min_effect: dict[str, float] | None = None) -> list[Comparison]:
    """Every test the two tallies have data for (at least MIN_SAMPLES on each side)."""
    eff = {**DEFAULT_MIN_EFFECT, **(min_effect or {})}
    out: list[Comparison] = []

    def proportion(metric: str, x_a, n_a, x_b, n_b, method: str = "two-proportion z") -> None:
        if min(n_a, n_b) < MIN_SAMPLES:
            return
        effect, se, _, p = two_proportions(x_a, n_a, x_b, n_b)
        if needs_exact(x_a, n_a, x_b, n_b):
            p, method = fisher_exact(int(x_a), int(n_a), int(x_b), int(n_b)), "fisher exact"
        pa, pb = x_a / n_a, x_b / n_b
        # the sample size plans for at least a min-effect rate: 0 errors so far is no promise
        va, vb = (max(v, eff[metric]) * (1 - max(v, eff[metric])) for v in (pa, pb))
        out.append(Comparison(metric, candidate_name, pa, pb, (int(n_a), int(n_b)), float(effect),
                              float(se), float(p), method, eff[metric], (va, vb)))

    def means(metric: str, n_a, s_a, ss_a, n_b, s_b, ss_b, scale: float = 1.0, extra=None) -> None:
        if min(n_a, n_b) < MIN_SAMPLES:
            return
        ma, mb = s_a / n_a, s_b / n_b
        va = max(0.0, (ss_a - n_a * ma * ma) / (n_a - 1))
        vb = max(0.0, (ss_b - n_b * mb * mb) / (n_b - 1))
        effect, se, _, _, p = welch(ma, va, n_a, mb, vb, n_b)
        delta = eff[metric] * abs(ma) if metric in RELATIVE else eff[metric]
        out.append(Comparison(metric, candidate_name, ma * scale, mb * scale, (int(n_a), int(n_b)),
                              float(effect) * scale, float(se) * scale, float(p), "welch t",
                              delta * scale, (va * scale ** 2, vb * scale ** 2), extra or {}))

    a, b = control, candidate
    proportion("error_rate", a[1], a[0], b[1], b[0])
    u, _, p_mw, prob = mann_whitney_binned(layout.latency_histogram(a), layout.latency_histogram(b))
    means("latency", a[2], a[3], a[4], b[2], b[3], b[4], scale=1000.0, extra={
        "mann_whitney": {"p_value": p_mw, "prob_candidate_slower": prob}})
    q = layout.quality
    qa, qb = layout.quality_part(a), layout.quality_part(b)
    cma, cmb = q.confusion(qa), q.confusion(qb)
    proportion("accuracy", np.trace(cma), cma.sum(), np.trace(cmb), cmb.sum())
    ca, cb = q.counts(qa), q.counts(qb)
    if min(ca["positives"], ca["negatives"], cb["positives"], cb["negatives"]) >= MIN_SAMPLES / 2:
        auc_a, auc_b = q.metrics(qa)["auc"], q.metrics(qb)["auc"]
        se_a = float(auc_standard_error(auc_a, ca["positives"], ca["negatives"]))
        se_b = float(auc_standard_error(auc_b, cb["positives"], cb["negatives"]))
        se = float(np.hypot(se_a, se_b))
        p = float(2 * sps.norm.sf(abs(auc_b - auc_a) / se)) if se > 0 else 1.0
        n_a, n_b = int(ca["positives"] + ca["negatives"]), int(cb["positives"] + cb["negatives"])
        out.append(Comparison("auc", candidate_name, auc_a, auc_b, (n_a, n_b), auc_b - auc_a, se, p,
                              "hanley-mcneil z", eff["auc"], (se_a ** 2 * n_a, se_b ** 2 * n_b)))
    ea, eb = q.part(qa, "error"), q.part(qb, "error")
    means("mae", ea[0], ea[2], ea[3], eb[0], eb[2], eb[3])
    ra, rb = q.part(qa, "reward"), q.part(qb, "reward")
    if ra[1] == ra[2] and rb[1] == rb[2]:  # every reward 0 or 1: a conversion rate
        proportion("conversion_rate", ra[1], ra[0], rb[1], rb[0])
    else:
        means("mean_reward", ra[0], ra[1], ra[2], rb[0], rb[1], rb[2])
    return out


def _units(metric: str, value: float, sign: str = "") -> str:
    """`value` in the metric's units: points for rates, ms for latency; `sign` "+" signs it."""
    v = value if sign else abs(value)
    if metric in ("error_rate", "accuracy", "conversion_rate", "auc"):
        return f"{v * 100:{sign}.1f} pts"
    if metric == "latency":
        return f"{v:{sign}.3g} ms"
    return f"{v:{sign}.3g}"


def result(c: Comparison, sequential_p: float) -> dict:
    """The report's shape of one comparison, with its plain-words verdict. `sequential_p`
    is the running minimum of the mSPRT p-value the caller keeps between looks."""
    lo, hi = c.effect - Z_ALPHA * c.se, c.effect + Z_ALPHA * c.se
    significant = bool(c.p_value < ALPHA)
    higher = HIGHER_IS_BETTER[c.metric]
    better = None
    if significant and c.effect != 0:
        better = "candidate" if (c.effect > 0) == higher else "control"
    needed = float(needed_per_arm(c.var[0], c.var[1], c.min_effect)) if c.min_effect > 0 else 0.0
    more = max(0, int(needed) - min(c.n)) if np.isfinite(needed) else None
    p_text = f"p={c.p_value:.2g}" if c.p_value >= 0.001 else "p<0.001"
    if better is not None:
        if c.metric in ("error_rate", "accuracy", "conversion_rate", "auc"):
            ci = f"[{lo * 100:+.1f}, {hi * 100:+.1f}]"
        else:
            ci = f"[{lo:+.3g}, {hi:+.3g}]" + (" ms" if c.metric == "latency" else "")
        verdict = (f"{better} better on {c.metric} by {_units(c.metric, c.effect)} {ci}, "
                   f"significant, {p_text}")
    else:
        verdict = (f"no significant difference on {c.metric} ({p_text}, candidate "
                   f"{_units(c.metric, c.effect, '+')})")
        if more:
            verdict += f"; ~{more} more per variant to detect {_units(c.metric, c.min_effect)}"
    return {
        "metric": c.metric, "candidate": c.candidate, "method": c.method,
        "control_value": c.control_value, "candidate_value": c.candidate_value,
        "n": {"control": c.n[0], "candidate": c.n[1]},
        "effect": c.effect, "ci95": [lo, hi], "p_value": c.p_value, "significant": significant,
        "better": better, "higher_is_better": higher,
        "sequential": {"method": "mSPRT, normal mixture", "tau": c.min_effect,
                       "p_value": sequential_p, "significant": bool(sequential_p < ALPHA)},
        "min_effect": c.min_effect, "samples_needed_per_variant": None if more is None else
        int(needed), "more_samples_needed": more, "verdict": verdict, **c.extra,
    }
