"""One route's experiment (monitor process): per-variant tallies since start, quality windows,
and the A/B report of GET /experiments.

Tallies (stats.experiments.ExperimentLayout) count every captured request of the route:
status, latency; and every label joined to one of its predictions (gateway.experiments.feedback). The
report compares each candidate with the control using stats.experiments; the sequential
p-values keep their running minimum here, one look per evaluation round or report, and all of
it is saved to the state directory so a restart loses nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from gateway.config import RouteConfig
from stats import cbpe
from stats.experiments import ExperimentLayout, compare, msprt_p_value, result
from stats.quality import QualityLayout
from stats.state import write_npz
from stats.window import VectorWindow

FILE_VERSION = 1
ESTIMATE_MODES = ("binary", "top")


class RouteExperiment:
    def __init__(self, rc: RouteConfig, state_dir: Path) -> None:
        fb = rc.monitor.feedback if rc.monitor is not None else None
        self.name = rc.name
        self.variants = rc.variant_names
        self.control = rc.control_variant
        self.min_effect = dict(rc.experiment.min_effect)
        self.feedback = fb
        self.layout = ExperimentLayout(QualityLayout(classes=fb.classes if fb else 10))
        self.tallies = {v: self.layout.zeros() for v in self.variants}
        slices = max(1, round(fb.window / fb.slice)) if fb else 1
        self.windows = {v: VectorWindow(self.layout.quality.size, slices,
                                        fb.slice if fb else 60.0, clock=time.time)
                        for v in self.variants}
        # label-free estimates (stats.cbpe) by prediction time, and their calibration, per
        # (variant, mode): "binary" histograms P(class 1), "top" (multi-class) the predicted
        # class's probability
        self.estimates = {(v, mode): VectorWindow(cbpe.SIZE, slices, fb.slice if fb else 60.0,
                                                  clock=time.time)
                          for v in self.variants for mode in ESTIMATE_MODES}
        self.calibration: dict[tuple[str, str], np.ndarray] = {}  # -> Platt (a, b)
        self._to_calibrate: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
        self.sequential: dict[tuple[str, str], float] = {}  # (metric, candidate) -> running min
        self.started_at = time.time()
        self.path = state_dir / f"{rc.name}.experiment.npz"

    def reset(self) -> None:
        """Start the experiment over (e.g. after a new model version): tallies, quality
        windows and sequential tests back to zero."""
        for v in self.variants:
            self.tallies[v][:] = 0.0
            self.windows[v].data[:] = 0.0
        for window in self.estimates.values():
            window.data[:] = 0.0
        self.calibration.clear()
        self._to_calibrate.clear()
        self.sequential.clear()
        self.started_at = time.time()

    # -- updates --------------------------------------------------------------------------
    def record_requests(self, variant: str, durations: np.ndarray, errors: np.ndarray) -> None:
        tally = self.tallies.get(variant)
        if tally is not None:
            self.layout.add_requests(tally, durations, errors)

    def record_predictions(self, variant: str, at: float, scores: np.ndarray,
                           top: np.ndarray | None = None) -> None:
        """Predictions with P(class 1), or multi-class the probability of the predicted class
        (`top`), for the label-free estimates of their quality."""
        if variant not in self.tallies or self.feedback is None:
            return
        for mode, probability in (("binary", scores), ("top", top)):
            if probability is not None and np.isfinite(probability).any():
                cbpe.add_predictions(self.estimates[(variant, mode)].slice_for(at), probability)

    def record_labels(self, variant: str, kind: str, truth: np.ndarray, classes: np.ndarray,
                      values: np.ndarray, scores: np.ndarray, now: float,
                      predicted_at: np.ndarray | None = None,
                      confidence: np.ndarray | None = None) -> None:
        """Labels joined to predictions: kind is label (classification), value (regression)
        or reward (business outcome). `predicted_at`: when each prediction was made;
        `confidence`: multi-class, the probability the prediction gave its class."""
        tally = self.tallies.get(variant)
        if tally is None:
            return
        if kind == "label" and predicted_at is not None:
            correct = truth == classes
            self._realized((variant, "binary"), correct, scores, truth == 1, predicted_at)
            if confidence is not None:
                self._realized((variant, "top"), correct, confidence, correct, predicted_at)
        q = self.layout.quality
        for target in (self.layout.quality_part(tally), self.windows[variant].slice_for(now)):
            if kind == "label":
                q.add_classification(target, truth, classes, scores)
            elif kind == "value":
                q.add_regression(target, truth, values)
            else:
                q.add_reward(target, truth)

    def _realized(self, key: tuple[str, str], correct: np.ndarray, probability: np.ndarray,
                  outcome: np.ndarray, predicted_at: np.ndarray) -> None:
        """Labels of probability-carrying predictions: the realized accuracy beside the
        estimate (in the slice of their prediction time), and calibration pairs until fit
        (`outcome`: what `probability` is the probability of)."""
        has = np.isfinite(probability)
        if not has.any():
            return
        window = self.estimates[key]
        for t in np.unique(predicted_at[has]):
            target = window.slice_at(float(t))
            if target is not None:
                cbpe.add_outcomes(target, correct[has & (predicted_at == t)])
        if key in self.calibration or self.feedback is None:
            return
        pending = self._to_calibrate.setdefault(key, [])
        pending.append((probability[has].astype(np.float64), outcome[has]))
        if sum(len(x) for x, _ in pending) >= self.feedback.calibration_labels:
            x = np.concatenate([a for a, _ in pending])
            y = np.concatenate([b for _, b in pending])
            self.calibration[key] = cbpe.fit_calibration(x, y)
            del self._to_calibrate[key]

    def estimated(self, now: float) -> dict[str, dict]:
        """Per variant: the label-free estimates over the feedback window (stats.cbpe), from
        P(class 1) when its predictions carry it, else from the predicted class's probability."""
        if self.feedback is None:
            return {}
        out = {}
        for v in self.variants:
            binary = self.estimates[(v, "binary")].total(now)
            if binary[:cbpe.BINS].any():
                out[v] = cbpe.estimate(binary, self.feedback.threshold,
                                       self.calibration.get((v, "binary")))
            else:
                out[v] = cbpe.estimate_top(self.estimates[(v, "top")].total(now),
                                           self.calibration.get((v, "top")))
        return out

    # -- reading --------------------------------------------------------------------------
    def quality(self, now: float) -> dict[str, dict]:
        """Per variant: quality metrics over the feedback window, and their sample sizes."""
        q = self.layout.quality
        out = {}
        estimated = self.estimated(now)
        for v, w in self.windows.items():
            total = w.total(now)
            out[v] = {"metrics": q.metrics(total), "counts": q.counts(total),
                      "estimated": estimated.get(v, {})}
        return out

    def look(self) -> list[dict]:
        """Each candidate's tests against the control; one look for the sequential tests,
        whose running minimum p-values are kept here."""
        control = self.tallies[self.control]
        tests = []
        for name in self.variants:
            if name == self.control:
                continue
            for c in compare(self.layout, control, self.tallies[name], name, self.min_effect):
                key = (c.metric, name)
                seq = min(self.sequential.get(key, 1.0),
                          float(msprt_p_value(c.effect, c.se, c.min_effect)))
                self.sequential[key] = seq
                tests.append(result(c, seq))
        return tests

    def report(self, now: float | None = None) -> dict:
        """The experiment so far (a look, like `look`), with each variant's traffic and quality."""
        now = time.time() if now is None else now
        tests = self.look()
        variants = {}
        window = self.quality(now)
        for name in self.variants:
            view = self.layout.summary(self.tallies[name])
            view["quality_window"] = window[name]["metrics"]
            view["estimated_quality"] = window[name]["estimated"]
            variants[name] = view
        return {"route": self.name, "control": self.control, "since": self.started_at,
                "variants": variants, "tests": tests}

    # -- persistence ----------------------------------------------------------------------
    def save(self) -> None:
        arrays = {"version": np.array(FILE_VERSION), "started_at": np.array(self.started_at),
                  "variants": np.array(self.variants),
                  "tallies": np.stack([self.tallies[v] for v in self.variants]),
                  "seq_keys": np.array([f"{m}\t{c}" for m, c in self.sequential] or [""]),
                  "seq_values": np.array(list(self.sequential.values()) or [1.0])}
        for i, v in enumerate(self.variants):
            arrays[f"w{i}.data"], arrays[f"w{i}.steps"] = self.windows[v].data, self.windows[v].steps
            for mode in ESTIMATE_MODES:
                e = self.estimates[(v, mode)]
                arrays[f"e{i}.{mode}.data"], arrays[f"e{i}.{mode}.steps"] = e.data, e.steps
                if (v, mode) in self.calibration:
                    arrays[f"c{i}.{mode}.platt"] = self.calibration[(v, mode)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_npz(self.path, arrays)

    def load(self) -> bool:
        """Bring back a saved experiment with the same variants and layout; else start anew."""
        if not self.path.exists():
            return False
        with np.load(self.path) as z:
            if int(z["version"]) != FILE_VERSION or list(z["variants"]) != self.variants or \
                    z["tallies"].shape != (len(self.variants), self.layout.size):
                return False
            self.started_at = float(z["started_at"])
            for i, v in enumerate(self.variants):
                self.tallies[v] = z["tallies"][i].copy()
                w = self.windows[v]
                if z[f"w{i}.data"].shape == w.data.shape:
                    w.data[:], w.steps[:] = z[f"w{i}.data"], z[f"w{i}.steps"]
                for mode in ESTIMATE_MODES:
                    e, name = self.estimates[(v, mode)], f"e{i}.{mode}"
                    if f"{name}.data" in z.files and z[f"{name}.data"].shape == e.data.shape:
                        e.data[:], e.steps[:] = z[f"{name}.data"], z[f"{name}.steps"]
                    if f"c{i}.{mode}.platt" in z.files:
                        self.calibration[(v, mode)] = z[f"c{i}.{mode}.platt"].copy()
            for key, value in zip(z["seq_keys"], z["seq_values"]):
                if key:
                    metric, candidate = str(key).split("\t")
                    self.sequential[(metric, candidate)] = float(value)
        return True
