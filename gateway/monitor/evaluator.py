"""The evaluator: on a fixed cadence, every route x variant x side against its reference.

Each round judges two windows per variant: the long one (default 5 m) and a short one (the
last 30 s of slices). A fresh shift is diluted in the long window but plain in the short one,
so a condition counts when either window flags it; the `stats/` sampling-error guards keep
the short window from crying wolf on small samples. Results go to Prometheus gauges, the
/monitoring snapshot and the alert rules.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from gateway.alerts.rules import DEFAULT_RULES, AlertBook, Measure, Observation
from gateway.config import AlertRule, GatewayConfig
from gateway.experiments.book import RouteExperiment
from gateway.logs import get_logger
from gateway.monitor.core import RouteMonitor, SideModel
from gateway.state_files import write_atomic
from stats import DriftReport, evaluate
from stats.joint import judge
from stats.layout import CATEGORICAL
from stats.quality import sample_size, total_labels

GAUGE_METRICS = ("psi", "jensen_shannon", "wasserstein", "ks", "mean_change", "std_change",
                 "median_change", "p95_change", "share_change", "drifted")

QUALITY_GAUGES = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "auc", "mae", "rmse",
                  "bias", "mean_reward", "labels", "estimated_accuracy", "estimated_precision",
                  "estimated_recall", "estimated_auc", "realized_accuracy", "labelled_share")


def _metric_values(report: DriftReport, i: int) -> dict[str, float]:
    values = {"psi": report.psi[i], "jensen_shannon": report.js[i],
              "wasserstein": report.wasserstein[i], "ks": report.ks[i],
              "share_change": report.share_change[i], "drifted": float(report.drifted[i]),
              "outlier_rate": report.outlier_rate[i], "missing_rate": report.missing_rate[i]}
    for stat in ("mean", "std", "median", "p95"):
        values[f"{stat}_change"] = report.statistics[stat]["change"][i]
    return {k: float(v) for k, v in values.items()}


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


class Evaluator:
    def __init__(self, cfg: GatewayConfig, monitors: dict[str, RouteMonitor], metrics,
                 dispatcher, experiments: dict[str, RouteExperiment] | None = None) -> None:
        self.cfg = cfg
        self.monitors = monitors
        self.experiments = experiments or {}
        self.metrics = metrics
        self.dispatcher = dispatcher
        self.rules: tuple[AlertRule, ...] = tuple(cfg.alerts.rules) or DEFAULT_RULES
        self.book = AlertBook()
        self.log = get_logger()
        self._snapshot: dict = {}
        self._gauge_cache: dict[tuple[str, str, str, str, str], list] = {}
        self.changed = False  # an alert fired or resolved since the last save

    def snapshot(self) -> dict:
        return self._snapshot

    def save(self, path: Path) -> None:
        """The firing alerts (`alerts.json` in state_dir), so a restart does not page again."""
        write_atomic(path, orjson.dumps({"alerts": self.book.to_json()}))
        self.changed = False

    def load(self, path: Path) -> bool:
        data = orjson.loads(path.read_bytes())
        restored = self.book.restore(data["alerts"], {r.name: r for r in self.rules})
        if restored:
            self.log.info("firing alerts restored", alerts=restored)
        return True

    def run(self, now: float) -> None:
        routes: dict = {}
        for mon in self.monitors.values():
            route_view: dict = {"protocol": mon.protocol, "variants": {}, "sides": {}}
            for side, _, model in mon.models():
                done, target = model.learning_progress
                route_view["sides"][side] = {"reference_ready": model.ready,
                                             "reference_rows": done, "learn_rows": target}
                if model.warning:
                    route_view["sides"][side]["warning"] = model.warning
                if model.ready:
                    self.metrics.monitor_reference_rows(mon.name, side).set(model.reference.n_rows)
                    for variant, window in list(model.windows.items()):
                        view = self._judge(mon, side, model, variant, window, now)
                        if model.joint is not None and variant in model.joint_windows:
                            view["joint"] = self._judge_joint(mon, model, variant, now)
                        route_view["variants"].setdefault(variant, {})[side] = view
            routes[mon.name] = route_view
        for exp in self.experiments.values():
            if exp.feedback is None:
                continue
            quality = exp.quality(now)
            routes.setdefault(exp.name, {"variants": {}})["quality"] = quality
            self._publish_quality(exp.name, quality)
            self._quality_alerts(exp, quality, now)
            if len(exp.variants) > 1:
                exp.look()  # one look for the sequential tests each round
        firing = [a.payload("firing", now) for a in self.book.firing()]
        self._snapshot = {"evaluated_at": now, "routes": routes, "alerts": firing}

    def _judge(self, mon: RouteMonitor, side: str, model: SideModel, variant: str, window,
               now: float) -> dict:
        cfg = mon.cfg
        short_slices = max(1, round(cfg.short_window / cfg.slice))
        long_state = window.state(now)
        short_state = window.state(now, last=short_slices)
        reports = {"long": evaluate(model.reference, long_state),
                   "short": evaluate(model.reference, short_state)}
        # every measure of every feature, per window: read by the gauges and by each rule
        values = {w: [_metric_values(r, i) for i in range(len(r.names))]
                  for w, r in reports.items()}
        self._publish(mon.name, variant, side, values, reports["long"].names)
        self._alerts(mon, side, variant, reports, values, now)
        long_r, short_r = reports["long"], reports["short"]
        features = long_r.features()
        short_features = short_r.features()
        hist = {}
        schema = model.schema
        for i, f in enumerate(schema.features):
            features[i]["short_window"] = {k: short_features[i][k] for k in
                                           ("drifted", "integrity", "reasons", "n_current")}
            nb = f.n_bins
            hist[f.name] = {
                "bins": f.categories + ["(other)"] if f.kind == CATEGORICAL else f.edges,
                "layout": "categories then other" if f.kind == CATEGORICAL else
                          "underflow, one bin per pair of edges, overflow",
                "reference": model.reference.histogram[i, :nb].tolist(),
                "current": long_state.histogram[i, :nb].tolist(),
                "short": short_state.histogram[i, :nb].tolist(),
            }
        return {"window_seconds": cfg.window, "window_rows": long_state.n_rows,
                "short_window_seconds": short_slices * cfg.slice,
                "short_window_rows": short_state.n_rows,
                "row_outlier_rate": long_r.row_outlier_rate,
                "drifted": sorted(set(long_r.drifted_features) | set(short_r.drifted_features)),
                "integrity": sorted(set(long_r.integrity_features) | set(short_r.integrity_features)),
                "features": features, "histograms": hist}

    def _judge_joint(self, mon: RouteMonitor, model: SideModel, variant: str,
                     now: float) -> dict:
        """Joint drift of the inputs (stats.joint) in both windows: gauges, the joint_drift
        rule, and the /monitoring view (score, threshold, drifted, features moving together)."""
        window = model.joint_windows[variant]
        short_slices = max(1, round(mon.cfg.short_window / mon.cfg.slice))
        spec, reference = model.joint, model.joint_reference
        assert spec is not None and reference is not None
        verdicts = {w: judge(spec, evaluate(reference, state)) for w, state in (
            ("short", window.state(now, last=short_slices)), ("long", window.state(now)))}
        for w, v in verdicts.items():
            for measure, value in (("score", v.score), ("threshold", v.threshold),
                                   ("drifted", float(v.drifted))):
                self.metrics.joint_drift.labels(mon.name, variant, measure, w).set(value)
        seconds = {"short": mon.cfg.short_window, "long": mon.cfg.window}
        shown = next((w for w in ("short", "long") if verdicts[w].drifted), None)
        shown = shown or max(verdicts, key=lambda w: verdicts[w].score)
        v = verdicts[shown]
        for rule in self.rules:
            if rule.condition != "joint_drift" or (rule.routes is not None
                                                   and mon.name not in rule.routes):
                continue
            named = f" ({', '.join(v.top_features)} first)" if v.top_features else ""
            measures = {"joint_score": Measure(max(x.score for x in verdicts.values()), 1.0,
                                               f"{seconds[shown]:g}s")}
            obs = Observation(mon.name, variant, "(joint)", rule, v.drifted, "joint_score",
                              v.score, 1.0, f"{seconds[shown]:g}s",
                              f"{mon.name}/{variant}: inputs drifting together{named}",
                              measures, features=v.top_features)
            self._notify(mon.name, rule, obs, now, mon.cfg.retrain, "features")
        return {"score": v.score, "threshold": v.threshold, "drifted": v.drifted,
                "features": v.top_features, "window": shown, "directions": spec.k,
                "windows": {w: {"score": x.score, "drifted": x.drifted,
                                "directions_drifted": x.directions_drifted,
                                "rows": x.n_current, "features": x.top_features}
                            for w, x in verdicts.items()}}

    def _publish(self, route: str, variant: str, side: str,
                 values_by_window: dict[str, list[dict[str, float]]], names: list[str]) -> None:
        for window, per_feature in values_by_window.items():
            for feature, values in zip(names, per_feature):
                for gauge, metric in self._gauges(route, variant, side, feature, window):
                    gauge.set(values[metric])

    def _gauges(self, route: str, variant: str, side: str, feature: str, window: str) -> list:
        """(gauge child, measure) pairs of one feature x window, looked up once: labels() costs
        more than set(), and a round sets hundreds (bounded: a route's features x windows)."""
        key = (route, variant, side, feature, window)
        pairs = self._gauge_cache.get(key)
        if pairs is None:
            m = self.metrics
            family = m.feature_drift if side == "inputs" else m.prediction_drift
            pairs = [(family.labels(route, variant, feature, metric, window), metric)
                     for metric in GAUGE_METRICS]
            if side == "inputs":
                pairs.append((m.feature_outliers.labels(route, variant, feature, window),
                              "outlier_rate"))
                pairs.append((m.feature_missing.labels(route, variant, feature, window),
                              "missing_rate"))
            self._gauge_cache[key] = pairs
        return pairs

    def _publish_quality(self, route: str, quality: dict[str, dict]) -> None:
        for variant, view in quality.items():
            values = {**view["metrics"], "labels": total_labels(view["counts"]),
                      **view.get("estimated", {})}
            for metric in QUALITY_GAUGES:
                if metric in values:
                    self.metrics.model_quality.labels(route, variant, metric).set(values[metric])

    def _quality_alerts(self, exp: RouteExperiment, quality: dict[str, dict], now: float) -> None:
        """Rules on feedback metrics (`condition: quality`), once a window has min_labels."""
        fb = exp.feedback
        for rule in self.rules:
            if rule.condition != "quality" or (rule.routes is not None and exp.name not in rule.routes):
                continue
            metric = rule.metric or ""
            for variant, view in quality.items():
                if metric.startswith("estimated_"):  # label-free: waits for predictions
                    estimated = view.get("estimated", {})
                    value = estimated.get(metric)
                    enough = estimated.get("rows", 0) >= fb.min_rows
                else:
                    value = view["metrics"].get(metric)
                    enough = sample_size(metric, view["counts"]) >= fb.min_labels
                active = value is not None and enough and (
                    (rule.below is not None and value < rule.below)
                    or (rule.above is not None and value > rule.above))
                threshold = rule.below if rule.below is not None else rule.above
                bad = "below" if rule.below is not None else "above"
                window = f"{fb.window:g}s of feedback"
                measure = Measure(value if enough else None, threshold, window, bad)
                obs = Observation(exp.name, variant, metric, rule, active, metric, value, threshold,
                                  window, f"{exp.name}/{variant}: model quality",
                                  {metric: measure}, bad)
                self._notify(exp.name, rule, obs, now, retrain=None)

    def _notify(self, route: str, rule: AlertRule, obs: Observation, now: float,
                retrain, what: str = "feature") -> None:
        change = self.book.observe(obs, now)
        if change is None:
            return
        status, alert = change
        if status != "active":
            self.changed = True  # worth saving now: see gateway.monitor.service
            self.metrics.alerts_total(route, rule.name, status).inc()
            self.log.info("alert", status=status, alert=rule.name, route=obs.route,
                          variant=obs.variant, feature=obs.feature, metric=alert.last.metric,
                          value=alert.last.value)
        if self.dispatcher is None:
            return
        sinks = self.dispatcher.due(rule, status, alert.sent, now)
        if not sinks and not (status == "firing" and retrain is not None):
            return
        payload = alert.payload("firing" if status == "active" else status, now,
                                repeat=status == "active")
        payload = self.dispatcher.enrich(payload, rule, what, now)
        for name in sinks:
            alert.sent[name] = now
        self.dispatcher.notify(payload, sinks)
        if (retrain is not None and status == "firing"
                and rule.condition in ("drift", "prediction_drift")):
            self.dispatcher.notify_retrain(route, retrain, payload)

    def _alerts(self, mon: RouteMonitor, side: str, variant: str,
                reports: dict[str, DriftReport], values: dict[str, list[dict[str, float]]],
                now: float) -> None:
        long_r = reports["long"]
        for rule in self.rules:
            if rule.routes is not None and mon.name not in rule.routes:
                continue
            applies = {"drift": side == "inputs", "outliers": side == "inputs",
                       "missing": side == "inputs", "prediction_drift": side == "outputs",
                       "metric": True, "quality": False, "joint_drift": False}[rule.condition]
            if not applies:
                continue
            for i, feature in enumerate(long_r.names):
                obs = self._observe(mon, side, variant, feature, i, rule, reports, values)
                self._notify(mon.name, rule, obs, now, mon.cfg.retrain,
                             "prediction" if side == "outputs" else "feature")

    def _observe(self, mon: RouteMonitor, side: str, variant: str, feature: str, i: int,
                 rule: AlertRule, reports: dict[str, DriftReport],
                 values_by_window: dict[str, list[dict[str, float]]]) -> Observation:
        """Whether the rule's condition holds in either window, with the measure that shows it,
        and each of the condition's measures at its largest over the windows that can measure
        it (what clearing is judged on)."""
        shown = None
        measures: dict[str, Measure] = {}
        for window in ("short", "long"):
            r = reports[window]
            seconds = f"{mon.cfg.short_window if window == 'short' else mon.cfg.window:g}s"
            active, metric, candidates = _condition(rule, r, i, values_by_window[window][i])
            for name, (value, threshold, measurable) in candidates.items():
                if not measurable or not np.isfinite(value):
                    continue
                known = measures.get(name)
                if known is None or known.value is None or abs(value) > abs(known.value):
                    measures[name] = Measure(float(value), threshold, seconds)
            value, threshold, _ = candidates[metric]
            if shown is None or (active and not shown[0]):
                shown = (active, metric, _finite(value), threshold, seconds)
        assert shown is not None
        active, metric, value, threshold, seconds = shown
        what = "prediction" if side == "outputs" else "feature"
        subject = f"{mon.name}/{variant}: {what} '{feature}' {rule.name.replace('_', ' ')}"
        return Observation(mon.name, variant, feature, rule, active, metric, value, threshold,
                           seconds, subject, measures)


def _condition(rule: AlertRule, r: DriftReport, i: int, values: dict[str, float]
               ) -> tuple[bool, str, dict[str, tuple[float, float | None, bool]]]:
    """(whether the rule's condition holds in this window's report, the measure that shows
    it, {measure: (value, threshold, whether there is enough data to measure it)})."""
    cfg = r.config
    enough = bool(r.n_current[i] >= cfg.min_samples)
    if rule.condition in ("drift", "prediction_drift"):
        stat_thr = float(r.stat_threshold[i])
        statistics = ("share",) if r.kinds[i] == CATEGORICAL else ("mean", "std", "median", "p95")
        candidates = {f"{s}_change": (values[f"{s}_change"], stat_thr, enough) for s in statistics}
        distance = "jensen_shannon" if r.kinds[i] == CATEGORICAL else "wasserstein"
        candidates[distance] = (values[distance], cfg.distance_threshold,
                                bool(r.n_current[i] >= cfg.distance_min_samples))
        moved = [(abs(values[f"{s}_change"]), s) for s in statistics
                 if (r.share_moved if s == "share" else r.statistics[s]["moved"])[i]]
        metric = f"{max(moved)[1]}_change" if moved else distance
        return bool(r.drifted[i]), metric, candidates
    if rule.condition == "outliers":
        threshold = float(r.outlier_threshold[i])
        if r.kinds[i] == CATEGORICAL:  # the rise of unseen categories over the reference's
            threshold += float(r.outlier_rate_reference[i])
        return bool(r.outlier_flag[i]), "outlier_rate", {
            "outlier_rate": (values["outlier_rate"], threshold, enough)}
    if rule.condition == "missing":
        threshold = float(r.missing_rate_reference[i] + cfg.missing_threshold)
        return bool(r.missing_flag[i]), "missing_rate", {
            "missing_rate": (values["missing_rate"], threshold, enough)}
    metric, threshold = rule.metric or "", rule.above
    v = values.get(metric, np.nan)
    active = bool(np.isfinite(v) and threshold is not None and abs(v) > threshold and enough)
    return active, metric, {metric: (v, threshold, enough)}
