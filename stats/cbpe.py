"""Model quality before labels arrive: confidence-based performance estimation (CBPE).

A classifier that answers with probabilities says how often it expects to be right: a binary
prediction with P(class 1) = p, positive at p >= threshold, is right with probability p when
positive and 1 - p when negative, if p is calibrated. Summed over the predictions of a window
that gives the expected accuracy, precision, recall and AUC of those predictions - before any
of their labels arrive (NannyML's CBPE). Probabilities are used as given until the first
`calibration_labels` labelled predictions fit a calibration map (Platt scaling), from then on
through it.

State is a flat vector per time slice, so it lives in a stats.window.VectorWindow and merges by
addition: a histogram of P(class 1) in BINS bins (count and sum of scores per bin), and beside
it, by prediction time too, how many of those predictions got a label and how many were right
(the realized accuracy of the same predictions). The calibration is applied when estimating,
not when counting, so a map fit later applies to the whole window.
"""

from __future__ import annotations

import numpy as np

BINS = 100
SIZE = 2 * BINS + 2
_LABELLED, _CORRECT = 2 * BINS, 2 * BINS + 1


def add_predictions(vector: np.ndarray, scores: np.ndarray) -> None:
    """Predictions with P(class 1) - or, multi-class, the probability of the predicted class -
    into a slice vector (NaN ones are left out)."""
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        return
    scores = np.clip(scores, 0.0, 1.0)
    bins = np.minimum((scores * BINS).astype(np.int64), BINS - 1)
    vector[:BINS] += np.bincount(bins, minlength=BINS)
    vector[BINS:2 * BINS] += np.bincount(bins, weights=scores, minlength=BINS)


def add_outcomes(vector: np.ndarray, correct: np.ndarray) -> None:
    """Labels of predictions counted in this slice: how many, how many right."""
    vector[_LABELLED] += correct.size
    vector[_CORRECT] += int(np.count_nonzero(correct))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_calibration(scores: np.ndarray, outcomes: np.ndarray) -> np.ndarray:
    """Platt scaling on the score's logit: P(class 1) = sigmoid(a * logit(score) + b), fit by
    Newton's method on the log-likelihood; returns (a, b). Two parameters, so a map fit where
    a model is confident still holds where it is not (an isotonic map, tried first, followed
    the noise of the few labels in the middle of the range and over-estimated a harder region
    by 0.04)."""
    x = _logit(scores.astype(np.float64))
    y = outcomes.astype(np.float64)
    design = np.column_stack([x, np.ones_like(x)])

    def loglik(params: np.ndarray) -> float:
        z = design @ params
        return float((y * z - np.logaddexp(0.0, z)).sum())

    params = np.array([1.0, 0.0])
    current = loglik(params)
    for _ in range(100):
        p = 1 / (1 + np.exp(-(design @ params)))
        gradient = design.T @ (y - p)
        hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-6 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-6 and loglik(params + scale * step) < current:
            scale /= 2  # Newton can overshoot from a far start: step back until it gains
        params = params + scale * step
        gained, current = loglik(params) - current, loglik(params)
        if abs(gained) < 1e-9:
            break
    return params


def calibrate(scores: np.ndarray, calibration: np.ndarray | None) -> np.ndarray:
    if calibration is None:
        return scores
    a, b = calibration
    return 1 / (1 + np.exp(-(a * _logit(scores) + b)))


def estimate(vector: np.ndarray, threshold: float,
             calibration: np.ndarray | None) -> dict[str, float]:
    """Expected accuracy, precision, recall and AUC of the window's predictions; with the
    realized accuracy of those labelled so far and the labelled share. Empty: {}."""
    counts, sums = vector[:BINS], vector[BINS:2 * BINS]
    n = float(counts.sum())
    if n == 0:
        return {}
    used = counts > 0
    raw = np.where(used, sums / np.where(used, counts, 1.0), 0.0)  # mean score per bin
    p = np.where(used, calibrate(raw, calibration), 0.0)
    positive = raw >= threshold
    expected_right = np.where(positive, p, 1.0 - p) * counts
    expected_tp = float((p * counts)[positive].sum())
    predicted_pos = float(counts[positive].sum())
    expected_pos = float((p * counts).sum())
    out = {"estimated_accuracy": float(expected_right.sum() / n), "rows": n,
           "calibrated": calibration is not None}
    if predicted_pos:
        out["estimated_precision"] = expected_tp / predicted_pos
    if expected_pos:
        out["estimated_recall"] = expected_tp / expected_pos
    auc = _expected_auc(counts, p)
    if auc is not None:
        out["estimated_auc"] = auc
    labelled = vector[_LABELLED]
    out["labelled_share"] = float(labelled / n)
    if labelled:
        out["realized_accuracy"] = float(vector[_CORRECT] / labelled)
    return out


def estimate_top(vector: np.ndarray, calibration: np.ndarray | None) -> dict[str, float]:
    """Multi-class: the histogram holds each prediction's probability of its own class, so the
    expected accuracy is their (calibrated) mean; realized accuracy and labelled share beside."""
    counts, sums = vector[:BINS], vector[BINS:2 * BINS]
    n = float(counts.sum())
    if n == 0:
        return {}
    used = counts > 0
    raw = np.where(used, sums / np.where(used, counts, 1.0), 0.0)
    p = np.where(used, calibrate(raw, calibration), 0.0)
    out = {"estimated_accuracy": float((p * counts).sum() / n), "rows": n,
           "calibrated": calibration is not None, "labelled_share": float(vector[_LABELLED] / n)}
    if vector[_LABELLED]:
        out["realized_accuracy"] = float(vector[_CORRECT] / vector[_LABELLED])
    return out


def _expected_auc(counts: np.ndarray, p: np.ndarray) -> float | None:
    """P(a positive outranks a negative) with each prediction positive with probability p:
    pairs across bins by bin order, pairs inside a bin count half (ties)."""
    pos, neg = counts * p, counts * (1.0 - p)
    neg_below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    same_bin = pos * neg - counts * p * (1.0 - p)  # pairs of two different predictions
    numerator = float((pos * neg_below).sum() + 0.5 * same_bin.sum())
    denominator = float(pos.sum() * neg.sum() - (counts * p * (1.0 - p)).sum())
    return numerator / denominator if denominator > 0 else None
