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
        # label-free estimates (stats.cbpe), by prediction time, and their calibration
        self.estimates = {v: VectorWindow(cbpe.SIZE, slices, fb.slice if fb else 60.0,
                                          clock=time.time) for v in self.variants}
        self.calibration: dict[str, np.ndarray] = {}  # variant -> Platt (a, b)
        self._to_calibrate: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.sequential: dict[tuple[str, str], float] = {}  # (metric, candidate) -> running min
        self.started_at = time.time()
        self.path = state_dir / f"{rc.name}.experiment.npz"

    def reset(self) -> None:
        """Start the experiment over (e.g. after a new model version): tallies, quality
        windows and sequential tests back to zero."""
        for v in self.variants:
            self.tallies[v][:] = 0.0
            self.windows[v].data[:] = 0.0
            self.estimates[v].data[:] = 0.0
        self.calibration.clear()
        self._to_calibrate.clear()
        self.sequential.clear()
        self.started_at = time.time()

    # -- updates --------------------------------------------------------------------------
    def record_requests(self, variant: str, durations: np.ndarray, errors: np.ndarray) -> None:
        tally = self.tallies.get(variant)
        if tally is not None:
            self.layout.add_requests(tally, durations, errors)

    def record_predictions(self, variant: str, at: float, scores: np.ndarray) -> None:
        """Predictions with P(class 1), for the label-free estimates of their quality."""
        window = self.estimates.get(variant)
        if window is not None and self.feedback is not None:
            cbpe.add_predictions(window.slice_for(at), scores)

    def record_labels(self, variant: str, kind: str, truth: np.ndarray, classes: np.ndarray,
                      values: np.ndarray, scores: np.ndarray, now: float,
                      predicted_at: np.ndarray | None = None) -> None:
        """Labels joined to predictions: kind is label (classification), value (regression)
        or reward (business outcome). `predicted_at`: when each prediction was made."""
        tally = self.tallies.get(variant)
        if tally is None:
            return
        if kind == "label" and predicted_at is not None:
            self._realized(variant, truth, classes, scores, predicted_at)
        q = self.layout.quality
        for target in (self.layout.quality_part(tally), self.windows[variant].slice_for(now)):
            if kind == "label":
                q.add_classification(target, truth, classes, scores)
            elif kind == "value":
                q.add_regression(target, truth, values)
            else:
                q.add_reward(target, truth)

    def _realized(self, variant: str, truth: np.ndarray, classes: np.ndarray,
                  scores: np.ndarray, predicted_at: np.ndarray) -> None:
        """Labels of probability-carrying predictions: the realized accuracy beside the
        estimate (in the slice of their prediction time), and calibration data until fit."""
        has_score = np.isfinite(scores)
        if not has_score.any():
            return
        window = self.estimates[variant]
        correct = truth[has_score] == classes[has_score]
        for t in np.unique(predicted_at[has_score]):
            target = window.slice_at(float(t))
            if target is not None:
                cbpe.add_outcomes(target, correct[predicted_at[has_score] == t])
        if variant in self.calibration or self.feedback is None:
            return
        pending = self._to_calibrate.setdefault(variant, [])
        pending.append((scores[has_score].astype(np.float64), truth[has_score] == 1))
        if sum(len(x) for x, _ in pending) >= self.feedback.calibration_labels:
            x = np.concatenate([a for a, _ in pending])
            y = np.concatenate([b for _, b in pending])
            self.calibration[variant] = cbpe.fit_calibration(x, y)
            del self._to_calibrate[variant]

    def estimated(self, now: float) -> dict[str, dict]:
        """Per variant: the label-free estimates over the feedback window (stats.cbpe)."""
        if self.feedback is None:
            return {}
        return {v: cbpe.estimate(w.total(now), self.feedback.threshold, self.calibration.get(v))
                for v, w in self.estimates.items()}

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
            e = self.estimates[v]
            arrays[f"e{i}.data"], arrays[f"e{i}.steps"] = e.data, e.steps
            if v in self.calibration:
                arrays[f"c{i}.platt"] = self.calibration[v]
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
                e = self.estimates[v]
                if f"e{i}.data" in z.files and z[f"e{i}.data"].shape == e.data.shape:
                    e.data[:], e.steps[:] = z[f"e{i}.data"], z[f"e{i}.steps"]
                if f"c{i}.platt" in z.files:
                    self.calibration[v] = z[f"c{i}.platt"].copy()
            for key, value in zip(z["seq_keys"], z["seq_values"]):
                if key:
                    metric, candidate = str(key).split("\t")
                    self.sequential[(metric, candidate)] = float(value)
        return True
