"""Prometheus metric families the monitor process owns; the admin port serves them beside the
proxy's (gateway.proxy.metrics).

Labels come only from config names (route, variant, feature, sink) and small closed sets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

disable_created_metrics()


class MonitorMetrics:
    """Families the monitor process owns; the admin port serves them beside the proxy's."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # labels come from config names and closed sets only
        self._children: dict[tuple, object] = {}
        self._intake_families(r)
        self._verdict_families(r)
        self._feedback_families(r)

    def _intake_families(self, r: CollectorRegistry) -> None:
        """What the monitor took in: captures, rows, what it could not decode."""
        self._monitor_captures = Counter(
            "driftgate_monitor_captures", "Exchanges the monitor took from the queue.",
            ["route", "variant"], registry=r)
        self._monitor_rows = Counter(
            "driftgate_monitor_rows", "Rows decoded into the monitor's state.",
            ["route", "variant", "side"], registry=r)
        self._monitor_rejected = Counter(
            "driftgate_monitor_rejected_rows", "Input rows of requests the upstream rejected "
            "(status >= 400): counted, kept out of the histograms.", ["route", "variant"],
            registry=r)
        self._dropped_features = Counter(
            "driftgate_monitor_dropped_feature_values", "Values under feature names past the "
            "route's monitor.max_features: not decoded, not learned.", ["route", "side"],
            registry=r)
        self._decode_errors = Counter(
            "driftgate_monitor_decode_errors", "Payloads the monitor could not decode, by reason.",
            ["route", "side", "reason"], registry=r)
        self.monitor_lag = Gauge(
            "driftgate_monitor_lag_seconds", "Age of the oldest capture in the last batch.",
            registry=r)
        self._reference_rows = Gauge(
            "driftgate_monitor_reference_rows", "Rows in the route's reference.",
            ["route", "side"], registry=r)

    def _verdict_families(self, r: CollectorRegistry) -> None:
        """What each evaluation found, and the alerts it raised."""
        self.feature_drift = Gauge(
            "driftgate_feature_drift", "Drift measures of an input feature against the "
            "reference (drifted is 0/1).", ["route", "variant", "feature", "metric", "window"],
            registry=r)
        self.feature_outliers = Gauge(
            "driftgate_feature_outlier_ratio", "Share of values outside the expected range "
            "(unseen categories for categorical features).",
            ["route", "variant", "feature", "window"], registry=r)
        self.feature_missing = Gauge(
            "driftgate_feature_missing_ratio", "Share of missing values.",
            ["route", "variant", "feature", "window"], registry=r)
        self.prediction_drift = Gauge(
            "driftgate_prediction_drift", "Drift measures of a model output against the reference.",
            ["route", "variant", "output", "metric", "window"], registry=r)
        self.joint_drift = Gauge(
            "driftgate_joint_drift", "Joint drift of a route's numeric inputs seen together "
            "(stats.joint): score (largest measure-to-threshold ratio over the directions), "
            "threshold, drifted.", ["route", "variant", "measure", "window"], registry=r)
        self._joint_skipped = Counter(
            "driftgate_monitor_joint_skipped_rows", "Rows left out of joint drift for a missing "
            "numeric value.", ["route"], registry=r)
        self._alerts = Counter(
            "driftgate_alerts", "Alert notifications by rule and status (firing, resolved).",
            ["route", "rule", "status"], registry=r)
        self._deliveries = Counter(
            "driftgate_alert_deliveries", "Alert posts by sink and outcome (sent, failed, dropped).",
            ["sink", "outcome"], registry=r)

    def _feedback_families(self, r: CollectorRegistry) -> None:
        """Labels joined to predictions, and the model quality they show."""
        self.model_quality = Gauge(
            "driftgate_model_quality", "Model quality from feedback labels over the route's "
            "feedback window (accuracy, precision_macro, recall_macro, f1_macro, auc, mae, rmse, "
            "bias, mean_reward, labels).", ["route", "variant", "metric"], registry=r)
        self._feedback = Counter(
            "driftgate_feedback", "Feedback items by result (accepted, invalid, unknown, expired, "
            "duplicate).", ["result"], registry=r)
        self._feedback_labels = Counter(
            "driftgate_feedback_labels", "Prediction rows that received their label.",
            ["route", "variant"], registry=r)
        self.feedback_store_rows = Gauge(
            "driftgate_feedback_store_rows", "Prediction rows waiting for their label.", registry=r)
        self.feedback_store_evicted = Counter(
            "driftgate_feedback_store_evicted", "Unlabelled predictions pushed out of the store by "
            "newer ones before their TTL (raise feedback.max_entries if this grows).", registry=r)

    def _child(self, family, *labels: str):
        """A cached label child: labels() costs more than the update it serves."""
        key = (family, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def monitor_captures(self, route: str, variant: str):
        return self._child(self._monitor_captures, route, variant)

    def monitor_rows(self, route: str, variant: str, side: str):
        return self._child(self._monitor_rows, route, variant, side)

    def monitor_rejected_rows(self, route: str, variant: str):
        return self._monitor_rejected.labels(route, variant)

    def monitor_joint_skipped(self, route: str):
        return self._child(self._joint_skipped, route)

    def monitor_dropped_features(self, route: str, side: str):
        return self._child(self._dropped_features, route, side)

    def monitor_decode_error(self, route: str, side: str, reason: str):
        return self._decode_errors.labels(route, side, reason)

    def monitor_reference_rows(self, route: str, side: str):
        return self._reference_rows.labels(route, side)

    def feedback(self, result: str):
        return self._child(self._feedback, result)

    def feedback_labels(self, route: str, variant: str):
        return self._child(self._feedback_labels, route, variant)

    def alerts_total(self, route: str, rule: str, status: str):
        return self._alerts.labels(route, rule, status)

    def alert_delivery(self, sink: str, outcome: str):
        return self._deliveries.labels(sink, outcome)

