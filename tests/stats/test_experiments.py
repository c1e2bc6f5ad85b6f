"""stats.experiments and stats.quality against scipy and sklearn on the same data, and the
calibration of the tests by simulation."""

import numpy as np
import pytest
import scipy.stats as sps
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

from benchmarks.experiment_calibration import simulate
from stats.experiments import (
    ExperimentLayout,
    auc_standard_error,
    compare,
    fisher_exact,
    mann_whitney_binned,
    msprt_p_value,
    result,
    two_proportions,
    welch,
)
from stats.quality import LATENCY_EDGES, QualityLayout, auc_from_histograms, latency_bins
from stats.window import VectorWindow

rng = np.random.default_rng(11)


def test_welch_matches_scipy():
    a, b = rng.normal(10, 2, 400), rng.normal(10.4, 3, 650)
    effect, se, t, df, p = welch(a.mean(), a.var(ddof=1), a.size, b.mean(), b.var(ddof=1), b.size)
    ref = sps.ttest_ind(b, a, equal_var=False)
    assert t == pytest.approx(ref.statistic, rel=1e-9)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)
    assert effect == pytest.approx(b.mean() - a.mean())


def test_two_proportion_z_matches_scipy_chi_squared():
    for xa, na, xb, nb in ((400, 1000, 450, 1000), (830, 5000, 880, 5100), (17, 90, 31, 95)):
        _, _, z, p = two_proportions(xa, na, xb, nb)
        chi2, ref_p, _, _ = sps.chi2_contingency([[xa, na - xa], [xb, nb - xb]], correction=False)
        assert p == pytest.approx(ref_p, rel=1e-9) and z ** 2 == pytest.approx(chi2, rel=1e-9)


def test_small_counts_use_fisher_exact():
    layout = ExperimentLayout()
    a, b = layout.zeros(), layout.zeros()
    layout.add_requests(a, np.full(40, 0.01), np.r_[np.ones(1), np.zeros(39)])
    layout.add_requests(b, np.full(40, 0.01), np.r_[np.ones(6), np.zeros(34)])
    errors = next(c for c in compare(layout, a, b, "b") if c.metric == "error_rate")
    assert errors.method == "fisher exact"
    assert errors.p_value == pytest.approx(sps.fisher_exact([[1, 39], [6, 34]])[1])
    assert fisher_exact(1, 40, 6, 40) == errors.p_value


def test_mann_whitney_exact_on_discrete_data_and_close_on_binned_latencies():
    # integers are their own bins: identical to scipy's tie-corrected normal approximation
    a, b = rng.poisson(4, 700), rng.poisson(4.3, 500)
    ha, hb = np.bincount(a, minlength=30), np.bincount(b, minlength=30)
    u, _, p, _ = mann_whitney_binned(ha, hb)
    ref = sps.mannwhitneyu(b, a, method="asymptotic", use_continuity=False)
    assert u == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue, rel=1e-9)
    # latencies on the ~6% log bins: pairs in one bin count as ties
    la, lb = rng.lognormal(np.log(0.02), 0.3, 3000), rng.lognormal(np.log(0.0206), 0.3, 3000)
    bins = len(LATENCY_EDGES) + 1
    _, z, p, prob = mann_whitney_binned(np.bincount(latency_bins(la), minlength=bins),
                                        np.bincount(latency_bins(lb), minlength=bins))
    ref = sps.mannwhitneyu(lb, la, method="asymptotic")
    ref_z = sps.norm.isf(ref.pvalue / 2)
    assert abs(z - ref_z) < 0.25  # stated tolerance: |z| within 0.25 on 6% bins
    assert prob == pytest.approx(ref.statistic / (la.size * lb.size), abs=0.005)


def test_auc_and_classification_metrics_match_sklearn():
    y = (rng.random(6000) < 0.35).astype(int)
    score = 1 / (1 + np.exp(-(rng.normal(0, 1, y.size) + 1.3 * y)))
    pred = (score >= 0.5).astype(int)
    q = QualityLayout()
    tally = q.zeros()
    q.add_classification(tally, y[:3000], pred[:3000], score[:3000])
    q.add_classification(tally, y[3000:], pred[3000:], score[3000:])  # tallies are additive
    m = q.metrics(tally)
    assert m["auc"] == pytest.approx(roc_auc_score(y, score), abs=1e-3)  # 1,000 score bins
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    p, r, f, _ = precision_recall_fscore_support(y, pred, average="macro")
    assert (m["precision_macro"], m["recall_macro"], m["f1_macro"]) == pytest.approx((p, r, f))
    p1, r1, f1, _ = precision_recall_fscore_support(y, pred, average=None)
    assert (m["precision_1"], m["recall_1"], m["f1_1"]) == pytest.approx((p1[1], r1[1], f1[1]))
    # three classes, and a label outside 0..classes-1 lands in "other"
    t3, p3 = rng.integers(0, 3, 2000), rng.integers(0, 3, 2000)
    q3 = QualityLayout(classes=3)
    tally = q3.zeros()
    q3.add_classification(tally, np.r_[t3, 7], np.r_[p3, 7])
    m3 = q3.metrics(tally)
    assert m3["accuracy"] == pytest.approx(accuracy_score(np.r_[t3, 7], np.r_[p3, 7]))
    assert m3["recall_other"] == 1.0


def test_regression_and_reward_metrics_match_numpy():
    truth, pred = rng.normal(50, 10, 1000), rng.normal(50, 10, 1000)
    q = QualityLayout()
    tally = q.zeros()
    q.add_regression(tally, truth, pred)
    q.add_reward(tally, [1, 0, 0, 1, 1])
    m = q.metrics(tally)
    e = pred - truth
    assert m["mae"] == pytest.approx(np.abs(e).mean())
    assert m["rmse"] == pytest.approx(np.sqrt((e ** 2).mean()))
    assert m["bias"] == pytest.approx(e.mean())
    assert m["mean_reward"] == pytest.approx(0.6)


def test_auc_standard_error_matches_spread_of_simulated_aucs():
    aucs = []
    for _ in range(300):
        y = np.r_[np.ones(200), np.zeros(300)]
        s = rng.normal(0, 1, 500) + 1.0 * y
        aucs.append(roc_auc_score(y, s))
    se = float(auc_standard_error(np.mean(aucs), 200, 300))
    assert se == pytest.approx(np.std(aucs), rel=0.2)


def test_auc_from_histograms_counts_ties_half():
    assert auc_from_histograms([0, 1, 0], [0, 1, 0]) == 0.5
    assert auc_from_histograms([0, 0, 1], [1, 0, 0]) == 1.0


def test_fixed_test_holds_five_percent_and_sequential_stays_valid_when_peeking():
    aa = simulate(0.85, 0.85, experiments=2000, looks=20, batch=250, seed=1)
    assert 0.035 <= aa["fixed"] <= 0.065  # 2,000 experiments: +-3 standard errors of 5%
    assert aa["peeking"] > 0.12  # what the sequential test is for
    assert aa["sequential"] <= 0.05
    ab = simulate(0.85, 0.87, experiments=2000, looks=20, batch=250, seed=2)
    assert ab["fixed"] > 0.7 and ab["sequential"] > 0.3


def test_sequential_p_value_only_falls_and_verdict_reads_plainly():
    p = msprt_p_value(np.array([0.0, 0.01, 0.03]), np.array([0.01, 0.01, 0.01]), 0.02)
    assert p[0] == 1.0 and p[2] < p[1] <= 1.0
    layout = ExperimentLayout()
    a, b = layout.zeros(), layout.zeros()
    q = layout.quality
    n = 4000
    q.add_classification(layout.quality_part(a), np.ones(n), (rng.random(n) < 0.85).astype(int))
    q.add_classification(layout.quality_part(b), np.ones(n), (rng.random(n) < 0.90).astype(int))
    acc = next(c for c in compare(layout, a, b, "b") if c.metric == "accuracy")
    out = result(acc, sequential_p=0.001)
    assert out["better"] == "candidate" and out["significant"]
    assert out["verdict"].startswith("candidate better on accuracy by ")
    assert "pts [" in out["verdict"] and "significant" in out["verdict"]
    lo, hi = out["ci95"]
    assert 0 < lo < out["effect"] < hi


def test_vector_window_rolls_over_idle_gaps():
    w = VectorWindow(3, slices=4, slice_seconds=10.0, clock=lambda: 0.0)
    w.slice_for(5.0)[:] += 1
    w.slice_for(25.0)[:] += 2
    assert w.total(now=30.0).tolist() == [3, 3, 3]
    assert w.total(now=30.0, last=2).tolist() == [2, 2, 2]
    assert w.total(now=30.0, last=1).tolist() == [0, 0, 0]
    assert w.total(now=45.0).tolist() == [2, 2, 2]  # the first slice left the 40 s window
    assert w.total(now=3600.0).tolist() == [0, 0, 0]  # an idle hour: empty, not stale
