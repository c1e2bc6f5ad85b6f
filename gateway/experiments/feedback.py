"""Ground truth (monitor process): remember predictions, join the labels of POST /feedback.

The proxy passes a feedback body through unread (gateway.proxy.app -> gateway.link.proxy_end); here
it is parsed, each item is matched to the prediction rows the gateway saw for its request id
(gateway.experiments.prediction_store), and the pairs update the route's experiment and quality windows
(gateway.experiments.book).

An item: {"request_id": "...", "label": 1} (classification), "value": 3.2 (regression),
"reward": 0.7 or "converted": true (business outcome). A request with several rows takes a
list (one per row) or "index": i for one row. A body is one item, a list of items, or
{"feedback": [items]}. Answers: one item -> its own status (200 accepted, 400 invalid,
404 unknown request id, 409 already labelled, 410 expired); a batch -> 200 with counts and a
status per item.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson

from gateway.config import FeedbackConfig, FeedbackStoreConfig
from gateway.experiments.book import RouteExperiment
from gateway.experiments.prediction_store import (
    DUPLICATE,
    EXPIRED,
    FOUND,
    UNKNOWN,
    PredictionStore,
    request_key,
)
from gateway.state_files import load_or_set_aside

SCORE_COLUMNS = ("probability", "probabilities", "score", "scores", "proba")
PREDICTION_COLUMNS = ("prediction", "predict", "predictions", "label", "class", "output")
KINDS = {"label": "label", "value": "value", "reward": "reward", "converted": "reward"}
STATUS = {FOUND: (200, "accepted"), UNKNOWN: (404, "unknown"), EXPIRED: (410, "expired"),
          DUPLICATE: (409, "duplicate")}


def _floats(values: list) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[i] = v
        elif isinstance(v, bool):
            out[i] = float(v)
    return out


def read_predictions(columns: dict[str, list], cfg: FeedbackConfig,
                     rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(predicted class or -1, prediction value, P(class 1) or NaN, multi-class: probability of
    the predicted class, else NaN) per row of decoded outputs.

    Per-class columns (prediction_0..k) give argmax and, for two classes, P(class 1); a
    column of probabilities gives class = score >= threshold; integer predictions are classes.
    """
    names = list(columns)
    per_class = sorted((n for n in names if n.startswith("prediction_") and n[11:].isdigit()),
                       key=lambda n: int(n[11:]))
    if cfg.prediction is None and cfg.score is None and len(per_class) >= 2:
        m = np.stack([_floats(columns[n])[:rows] for n in per_class], axis=1)
        complete = np.isfinite(m).all(1)
        klass = np.where(complete, np.nanargmax(np.nan_to_num(m, nan=-np.inf), 1), -1)
        if len(per_class) == 2:
            return klass, klass.astype(np.float64), m[:, 1], np.full(rows, np.nan)
        top = np.where(complete, np.nan_to_num(m, nan=-np.inf).max(axis=1), np.nan)
        return klass, klass.astype(np.float64), np.full(rows, np.nan), top
    primary = cfg.prediction or next((n for n in PREDICTION_COLUMNS if n in columns),
                                     names[0] if names else None)
    score_name = cfg.score or next((n for n in SCORE_COLUMNS if n in columns and n != primary), None)
    value = _pad(_floats(columns.get(primary, [])), rows)
    score = _pad(_floats(columns[score_name]), rows) if score_name else np.full(rows, np.nan)
    finite = value[np.isfinite(value)]
    integral = finite.size > 0 and bool(np.all(finite == np.round(finite)))
    if score_name is None and finite.size and not integral and finite.min() >= 0 and finite.max() <= 1:
        score = value  # the prediction is a probability
    if integral:
        klass = np.where(np.isfinite(value), value, -1)
    else:
        klass = np.where(np.isfinite(score), score >= cfg.threshold, -1)
    return klass.astype(np.int32), value, score, np.full(rows, np.nan)


def _pad(arr: np.ndarray, rows: int) -> np.ndarray:
    if arr.size >= rows:
        return arr[:rows]
    return np.concatenate([arr, np.full(rows - arr.size, np.nan)])


class FeedbackDesk:
    def __init__(self, cfg: FeedbackStoreConfig, experiments: dict[str, RouteExperiment],
                 metrics, path: Path | None = None, unjoinable: list[str] = ()) -> None:
        """`unjoinable`: routes whose answers are not decoded (no `monitor:`), so no prediction
        of theirs is kept for a label to find."""
        self.cfg = cfg
        self.unjoinable = list(unjoinable)
        self.experiments = experiments
        self.metrics = metrics
        self._new_store()
        self._pending: list[tuple] = []
        self.path = path  # where a clean stop saves the predictions still waiting
        if path is not None and load_or_set_aside(path, lambda: self.store.load(path),
                                                  self._new_store):
            metrics.feedback_store_rows.set(len(self.store))
        self._evicted_seen = self.store.evicted
        self._changed = False  # predictions stored or labelled since the last save

    def _unjoinable_note(self) -> str:
        if not self.unjoinable:
            return ""
        names = ", ".join(self.unjoinable)
        many = len(self.unjoinable) > 1
        return (f"; route{'s' if many else ''} {names} keep{'' if many else 's'} no predictions "
                f"(no `monitor:`), so labels for {'their' if many else 'its'} answers cannot be "
                f"joined")

    def _new_store(self) -> None:
        self.store = PredictionStore(self.cfg.max_entries, self.cfg.ttl)

    def save(self) -> None:
        """Write the store when it changed since the last save: with the experiment tallies
        every `monitoring.persist_every` (so a crash of the monitor process loses at most
        that much) and at a clean stop."""
        self.flush()
        if self.path is None or not self._changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.store.save(self.path)
        self._changed = False

    # -- predictions, from the captures ----------------------------------------------------
    def remember(self, route: str, variant: str, request_id: bytes, at: float,
                 outputs: dict[str, list], rows: int) -> None:
        exp = self.experiments.get(route)
        if exp is None or exp.feedback is None or not rows:
            return
        klass, value, score, top = read_predictions(outputs, exp.feedback, rows)
        exp.record_predictions(variant, at, score, top)
        self._pending.append((request_id, rows, at, self.store.group(route, variant),
                              klass, value, score, top))

    def flush(self) -> None:
        """Store the predictions of one batch of captures in one numba call."""
        if not self._pending:
            return
        p, self._pending = self._pending, []
        self.store.put(np.array([request_key(x[0]) for x in p], np.int64),
                       np.array([x[1] for x in p]), np.array([x[2] for x in p]),
                       np.array([x[3] for x in p]), np.concatenate([x[4] for x in p]),
                       np.concatenate([x[5] for x in p]), np.concatenate([x[6] for x in p]),
                       np.concatenate([x[7] for x in p]))
        self._changed = True
        self.metrics.feedback_store_rows.set(len(self.store))
        if self.store.evicted != self._evicted_seen:
            self.metrics.feedback_store_evicted.inc(self.store.evicted - self._evicted_seen)
            self._evicted_seen = self.store.evicted

    # -- labels, from POST /feedback -------------------------------------------------------
    def handle(self, body: bytes, now: float) -> tuple[int, dict]:
        self.flush()  # normally a no-op (each batch flushes); not if a batch failed midway
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self.metrics.feedback("invalid").inc()
            return 400, {"error": f"feedback body is not JSON: {exc}"}
        batch = isinstance(obj, list) or (isinstance(obj, dict) and isinstance(obj.get("feedback"), list))
        items = obj if isinstance(obj, list) else obj["feedback"] if batch else [obj]
        if len(items) > self.cfg.max_batch:
            self.metrics.feedback("invalid").inc()
            return 413, {"error": f"{len(items)} items in one batch; at most {self.cfg.max_batch}"}
        joins: dict[tuple[int, str], tuple[list, list]] = defaultdict(lambda: ([], []))
        results = []
        for item in items:
            code, outcome = self._one(item, now, joins)
            self.metrics.feedback(outcome["status"]).inc()
            results.append((code, outcome))
        self._changed |= bool(joins)
        for (group, kind), (truth, slots) in joins.items():
            route, variant = self.store.group_names[group]
            s = np.asarray(slots)
            st = self.store
            self.experiments[route].record_labels(variant, kind, np.asarray(truth, np.float64),
                                                  st.classes[s], st.values[s],
                                                  st.scores[s].astype(np.float64), now,
                                                  predicted_at=st.times[s],
                                                  confidence=st.confidence[s].astype(np.float64))
            self.metrics.feedback_labels(route, variant).inc(len(slots))
        if not batch:
            return results[0]
        counts: dict[str, int] = defaultdict(int)
        for _, outcome in results:
            counts[outcome["status"]] += 1
        return 200, {**{k: counts.get(k, 0) for k in ("accepted", "invalid", "unknown", "expired",
                                                        "duplicate")},
                     "results": [outcome for _, outcome in results]}

    def _one(self, item, now: float, joins) -> tuple[int, dict]:
        parsed = parse_item(item)
        if isinstance(parsed, str):
            return 400, {"status": "invalid", "error": parsed}
        rid, kind, truth, first = parsed
        slots = []
        for row in range(first, first + len(truth)):
            status, slot = self.store.find(rid, row, now)
            if status != FOUND:
                code, name = STATUS[status]
                why = {"unknown": "no prediction with this request_id (never seen, sampled out, "
                                  "or evicted)" + self._unjoinable_note(),
                       "expired": f"prediction older than {self.cfg.ttl:g}s",
                       "duplicate": "this prediction already has its label"}[name]
                return code, {"status": name, "request_id": rid, "row": row, "error": why}
            slots.append(slot)
        route, variant = self.store.group_names[self.store.groups[slots[0]]]
        exp = self.experiments.get(route)
        if exp is None:  # saved before a reload that removed the route
            return 404, {"status": "unknown", "request_id": rid,
                         "error": f"route {route!r} of this prediction is gone"}
        task = exp.feedback.task if exp.feedback else "auto"
        if (task == "classification" and kind == "value") or (task == "regression" and kind == "label"):
            return 400, {"status": "invalid", "error": f"route {route} is a {task} task: send "
                          f"{'label' if task == 'classification' else 'value'}"}
        self.store.labelled[slots] = True
        group = int(self.store.groups[slots[0]])
        entry = joins[(group, kind)]
        entry[0].extend(truth)
        entry[1].extend(slots)
        return 200, {"status": "accepted", "request_id": rid, "route": route, "variant": variant,
                     "rows": len(slots)}


def parse_item(item) -> tuple[str, str, list[float], int] | str:
    """(request id, kind, true values, first row) of one feedback item, or why it is invalid."""
    if not isinstance(item, dict):
        return "an item must be an object with request_id and a label"
    rid = item.get("request_id")
    if not isinstance(rid, str) or not rid:
        return "request_id (a non-empty string) is required"
    given = [k for k in KINDS if k in item]
    if len(given) != 1:
        return "give exactly one of label, value, reward, converted"
    kind, raw = KINDS[given[0]], item[given[0]]
    index = item.get("index")
    many = isinstance(raw, list)
    if many and index is not None:
        return "give a list of labels or an index, not both"
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
        return "index must be a row number (integer >= 0)"
    values = raw if many else [raw]
    if not values:
        return f"{given[0]} is an empty list"
    truth = []
    for v in values:
        if given[0] == "converted":
            if not isinstance(v, bool) and v not in (0, 1):
                return "converted must be true or false"
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"{given[0]} must be a number" + (" (a class index)" if kind == "label" else "")
        elif kind == "label" and v != int(v):
            return "label must be a class index (an integer)"
        truth.append(float(v))
    return rid, kind, truth, index or 0
