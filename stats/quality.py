"""Model quality from ground truth, as additive tallies: confusion counts, score histograms,
error and reward moments.

A tally is one flat float64 vector (`QualityLayout`), so time slices, variants and replicas
add up by `+` and a window is a sum (stats.window.VectorWindow). Metrics are pure functions
of a tally:
- classification: accuracy, per-class and macro precision / recall / F1 from the confusion
  counts (labels coded 0..classes-1; anything else shares one "other" class);
- ROC AUC for binary tasks from the scores of positives and negatives on SCORE_BINS fine bins
  over [0, 1]: pairs in one bin count as ties, so the AUC is within ~1/SCORE_BINS of the
  exact one (tests compare with sklearn.metrics.roc_auc_score);
- regression: MAE, RMSE and mean error (bias = prediction - truth) from error moments;
- business outcome: mean reward (conversion rate for 0/1 outcomes) and its variance.
"""

from __future__ import annotations

import numpy as np

from stats.drift import hist_quantile

SCORE_BINS = 1000
LATENCY_EDGES = np.geomspace(1e-4, 100.0, 241)  # seconds: 0.1 ms .. 100 s, ~6% per bin


class QualityLayout:
    """Where each part of a tally lives in its vector."""

    def __init__(self, classes: int = 10, score_bins: int = SCORE_BINS) -> None:
        self.classes = classes
        self.score_bins = score_bins
        k = classes + 1  # + "other"
        sizes = {"confusion": k * k, "score_pos": score_bins, "score_neg": score_bins,
                 "error": 4, "reward": 3}  # error: n, sum, sum|e|, sum e^2; reward: n, sum, sum^2
        self.slices: dict[str, slice] = {}
        at = 0
        for name, n in sizes.items():
            self.slices[name] = slice(at, at + n)
            at += n
        self.size = at

    def zeros(self) -> np.ndarray:
        return np.zeros(self.size)

    def part(self, tally: np.ndarray, name: str) -> np.ndarray:
        return tally[self.slices[name]]

    def confusion(self, tally: np.ndarray) -> np.ndarray:
        k = self.classes + 1
        return self.part(tally, "confusion").reshape(k, k)  # rows: truth, columns: predicted

    # -- updates (vectorized over a batch of labelled predictions) -------------------------
    def class_index(self, labels: np.ndarray) -> np.ndarray:
        """Labels 0..classes-1 keep their index; everything else is "other"."""
        lab = np.asarray(labels, dtype=np.float64)
        ok = np.isfinite(lab) & (lab == np.round(lab)) & (lab >= 0) & (lab < self.classes)
        return np.where(ok, lab, self.classes).astype(np.int64)

    def add_classification(self, tally: np.ndarray, truth, predicted, scores=None) -> None:
        """`scores`: the predicted probability of class 1 (binary), NaN where unknown."""
        t, p = self.class_index(truth), self.class_index(predicted)
        k = self.classes + 1
        self.part(tally, "confusion")[:] += np.bincount(t * k + p, minlength=k * k)
        if scores is None:
            return
        s = np.asarray(scores, dtype=np.float64)
        ok = np.isfinite(s) & (t <= 1)
        bins = np.clip((s[ok] * self.score_bins).astype(np.int64), 0, self.score_bins - 1)
        positive = t[ok] == 1
        self.part(tally, "score_pos")[:] += np.bincount(bins[positive], minlength=self.score_bins)
        self.part(tally, "score_neg")[:] += np.bincount(bins[~positive], minlength=self.score_bins)

    def add_regression(self, tally: np.ndarray, truth, predicted) -> None:
        e = np.asarray(predicted, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
        e = e[np.isfinite(e)]
        self.part(tally, "error")[:] += (e.size, e.sum(), np.abs(e).sum(), (e * e).sum())

    def add_reward(self, tally: np.ndarray, rewards) -> None:
        r = np.asarray(rewards, dtype=np.float64)
        r = r[np.isfinite(r)]
        self.part(tally, "reward")[:] += (r.size, r.sum(), (r * r).sum())

    # -- metrics --------------------------------------------------------------------------
    def metrics(self, tally: np.ndarray) -> dict[str, float]:
        """Every metric the tally supports; NaN-free (absent when there is no data)."""
        out: dict[str, float] = {}
        cm = self.confusion(tally)
        n = cm.sum()
        if n > 0:
            out.update(classification_metrics(cm))
            pos, neg = self.part(tally, "score_pos"), self.part(tally, "score_neg")
            if pos.sum() > 0 and neg.sum() > 0:
                out["auc"] = auc_from_histograms(pos, neg)
        en, esum, eabs, esq = self.part(tally, "error")
        if en > 0:
            out.update(regression_labels=float(en), mae=eabs / en, rmse=float(np.sqrt(esq / en)),
                       bias=esum / en)
        rn, rsum, _ = self.part(tally, "reward")
        if rn > 0:
            out.update(rewards=float(rn), mean_reward=rsum / rn)
        return {k: float(v) for k, v in out.items()}

    def counts(self, tally: np.ndarray) -> dict[str, float]:
        """Sample sizes behind the metrics: labels, positives, negatives, regression, rewards."""
        cm = self.confusion(tally)
        return {"labels": float(cm.sum()), "positives": float(self.part(tally, "score_pos").sum()),
                "negatives": float(self.part(tally, "score_neg").sum()),
                "regression_labels": float(self.part(tally, "error")[0]),
                "rewards": float(self.part(tally, "reward")[0])}


REGRESSION_METRICS = frozenset({"mae", "rmse", "bias", "regression_labels"})
REWARD_METRICS = frozenset({"mean_reward", "rewards"})


def total_labels(counts: dict[str, float]) -> float:
    """Every label of any kind behind QualityLayout.counts (class labels, values, rewards)."""
    return counts["labels"] + counts["regression_labels"] + counts["rewards"]


def sample_size(metric: str, counts: dict[str, float]) -> float:
    """How many labels stand behind `metric`, from QualityLayout.counts: regression metrics
    count values, reward metrics rewards, every other metric classification labels."""
    if metric in REGRESSION_METRICS:
        return counts["regression_labels"]
    if metric in REWARD_METRICS:
        return counts["rewards"]
    return counts["labels"]


def classification_metrics(confusion: np.ndarray) -> dict[str, float]:
    """Accuracy, macro precision/recall/F1 (over classes that occur in truth or predictions)
    and, per class c, precision_c / recall_c / f1_c. Rows are truth, columns predicted."""
    cm = np.asarray(confusion, dtype=np.float64)
    n = cm.sum()
    tp = np.diag(cm)
    predicted, actual = cm.sum(0), cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (predicted + actual) > 0
    out = {"labels": n, "accuracy": tp.sum() / n if n else np.nan}
    if present.any():
        out.update(precision_macro=precision[present].mean(), recall_macro=recall[present].mean(),
                   f1_macro=f1[present].mean())
    last = cm.shape[0] - 1  # the "other" class is reported as "other"
    for c in np.flatnonzero(present):
        name = "other" if c == last else str(c)
        out.update({f"precision_{name}": precision[c], f"recall_{name}": recall[c],
                    f"f1_{name}": f1[c]})
    return out


def auc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + half the ties, from binned scores."""
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    below = np.cumsum(neg) - neg  # negatives in lower bins
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def latency_bins(seconds: np.ndarray) -> np.ndarray:
    """Bin index per duration on LATENCY_EDGES: 0 underflow, len(edges) overflow."""
    return np.searchsorted(LATENCY_EDGES, np.asarray(seconds, dtype=np.float64), side="right")


def histogram_quantiles(hist: np.ndarray, edges: np.ndarray, qs) -> list[float]:
    """Quantiles from a histogram with underflow/overflow bins, linear within a bin (the
    underflow reads as edges[0], the overflow as edges[-1]); NaN for an empty histogram."""
    hist = np.asarray(hist, dtype=np.float64)
    total = hist.sum()
    if total <= 0:
        return [float("nan")] * len(qs)
    shares = (hist / total)[None, :]
    lower = np.concatenate([edges[:1], edges])[None, :]
    upper = np.concatenate([edges, edges[-1:]])[None, :]
    cdf = np.cumsum(shares, axis=1)
    return [float(hist_quantile(shares, cdf, q, lower, upper)[0][0]) for q in qs]
