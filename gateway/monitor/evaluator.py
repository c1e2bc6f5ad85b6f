"""The evaluator: on a fixed cadence, every route x variant x side against its reference.

Each round judges two windows per variant: the long one (default 5 m) and a short one (the
last 30 s of slices). A fresh shift is diluted in the long window but plain in the short one,
so a condition counts when either window flags it; the `stats/` sampling-error guards keep
the short window from crying wolf on small samples. Results go to Prometheus gauges, the
/monitoring snapshot and the alert rules.
"""

from __future__ import annotations

import numpy as np

from gateway.alerts.rules import DEFAULT_RULES, AlertBook, Observation
from gateway.config import AlertRule, GatewayConfig
from gateway.experiments.book import RouteExperiment
from gateway.logs import get_logger
from gateway.monitor.core import RouteMonitor, SideModel
from stats import DriftReport, evaluate
from stats.layout import CATEGORICAL
from stats.quality import sample_size, total_labels

GAUGE_METRICS = ("psi", "jensen_shannon", "wasserstein", "ks", "mean_change", "std_change",
                 "median_change", "p95_change", "drifted")

QUALITY_GAUGES = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "auc", "mae", "rmse",
                  "bias", "mean_reward", "labels")


def _metric_values(report: DriftReport, i: int) -> dict[str, float]:
    values = {"psi": report.psi[i], "jensen_shannon": report.js[i],
              "wasserstein": report.wasserstein[i], "ks": report.ks[i],
              "drifted": float(report.drifted[i]),
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

    def snapshot(self) -> dict:
        return self._snapshot

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

    def _publish(self, route: str, variant: str, side: str,
                 values_by_window: dict[str, list[dict[str, float]]], names: list[str]) -> None:
        m = self.metrics
        for window, per_feature in values_by_window.items():
            for feature, values in zip(names, per_feature):
                if side == "inputs":
                    for metric in GAUGE_METRICS:
                        m.feature_drift.labels(route, variant, feature, metric, window).set(values[metric])
                    m.feature_outliers.labels(route, variant, feature, window).set(values["outlier_rate"])
                    m.feature_missing.labels(route, variant, feature, window).set(values["missing_rate"])
                else:
                    for metric in GAUGE_METRICS:
                        m.prediction_drift.labels(route, variant, feature, metric, window).set(
                            values[metric])

    def _publish_quality(self, route: str, quality: dict[str, dict]) -> None:
        for variant, view in quality.items():
            values = {**view["metrics"], "labels": total_labels(view["counts"])}
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
                value = view["metrics"].get(metric)
                enough = sample_size(metric, view["counts"]) >= fb.min_labels
                active = value is not None and enough and (
                    (rule.below is not None and value < rule.below)
                    or (rule.above is not None and value > rule.above))
                threshold = rule.below if rule.below is not None else rule.above
                side = "below" if rule.below is not None else "above"
                summary = (f"{exp.name}/{variant}: {metric} = "
                           f"{'n/a' if value is None else f'{value:.4g}'} ({side} {threshold:g}) "
                           f"over the last {fb.window:g}s of feedback")
                obs = Observation(exp.name, variant, metric, rule, active, metric, value, threshold,
                                  f"{fb.window:g}s", summary)
                self._notify(exp.name, rule, obs, now, retrain=None)

    def _notify(self, route: str, rule: AlertRule, obs: Observation, now: float,
                retrain) -> None:
        for status, alert in self.book.observe(obs, now):
            payload = alert.payload(status, now)
            self.metrics.alerts_total(route, rule.name, status).inc()
            self.log.info("alert", **{k: payload[k] for k in (
                "status", "alert", "route", "variant", "feature", "metric", "value")})
            if self.dispatcher is not None:
                self.dispatcher.notify(payload, rule.sinks)
                if (retrain is not None and status == "firing"
                        and rule.condition in ("drift", "prediction_drift")
                        and alert.last_sent == alert.fired_at):
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
                       "metric": True, "quality": False}[rule.condition]
            if not applies:
                continue
            for i, feature in enumerate(long_r.names):
                obs = self._observe(mon, side, variant, feature, i, rule, reports, values)
                self._notify(mon.name, rule, obs, now, mon.cfg.retrain)

    def _observe(self, mon: RouteMonitor, side: str, variant: str, feature: str, i: int,
                 rule: AlertRule, reports: dict[str, DriftReport],
                 values_by_window: dict[str, list[dict[str, float]]]) -> Observation:
        """Whether the rule's condition holds in either window, with the value that shows it."""
        best = None
        for window in ("short", "long"):
            r = reports[window]
            values = values_by_window[window][i]
            if rule.condition in ("drift", "prediction_drift"):
                active = bool(r.drifted[i])
                moved = [(abs(values[f"{s}_change"]), s) for s in ("mean", "std", "median", "p95")
                         if r.statistics[s]["moved"][i]]
                if moved:
                    metric = f"{max(moved)[1]}_change"
                    threshold = float(r.stat_threshold[i])
                elif r.kinds[i] == CATEGORICAL:
                    metric, threshold = "jensen_shannon", r.config.distance_threshold
                else:
                    metric, threshold = "wasserstein", r.config.distance_threshold
            elif rule.condition == "outliers":
                active, metric = bool(r.outlier_flag[i]), "outlier_rate"
                threshold = float(r.outlier_threshold[i])
            elif rule.condition == "missing":
                active, metric = bool(r.missing_flag[i]), "missing_rate"
                threshold = float(r.missing_rate_reference[i] + r.config.missing_threshold)
            else:
                metric, threshold = rule.metric or "", rule.above
                v = values.get(metric, np.nan)
                active = bool(np.isfinite(v) and threshold is not None and abs(v) > threshold
                              and r.n_current[i] >= r.config.min_samples)
            obs = Observation(mon.name, variant, feature, rule, active, metric,
                              _finite(values.get(metric, np.nan)), threshold, window, "")
            if active or best is None:
                best = obs
            if active:
                break
        assert best is not None
        seconds = mon.cfg.short_window if best.window == "short" else mon.cfg.window
        what = "prediction" if side == "outputs" else "feature"
        value = "n/a" if best.value is None else f"{best.value:.4g}"
        best.window = f"{seconds:g}s"
        best.summary = (f"{mon.name}/{variant}: {what} '{feature}' {rule.name.replace('_', ' ')}: "
                        f"{best.metric} = {value} (threshold {best.threshold:g}) over the last "
                        f"{seconds:g}s" if best.threshold is not None else
                        f"{mon.name}/{variant}: {what} '{feature}' {rule.name}")
        return best
