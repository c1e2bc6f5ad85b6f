"""Monitoring state: decode captures -> stats/ state per route x variant (monitor process).

The proxy only queues captures (gateway.link.queue); the monitor process (gateway.monitor.service)
feeds them here in batches: payloads are decoded with gateway.monitor.codecs, each route's reference is
loaded or learned, and per-variant sliding windows are updated; the evaluator reads them.

State per route and side (inputs, outputs): one schema and reference (inputs: shared by the
variants unless `learn.per_variant`; outputs of a split: one per variant, learned from its own
first answers), and one SlidingWindow per variant on that schema, so the windows of variants,
workers and replicas merge exactly.
"""

from __future__ import annotations

import time
from itertools import chain
from pathlib import Path

import numpy as np
import orjson

from gateway.baselines import load_baseline_file
from gateway.config import MonitorConfig, RouteConfig
from gateway.link.messages import Capture
from gateway.logs import get_logger
from gateway.monitor.codecs import DecodeError, decode_request, decode_response, decompress
from gateway.state_files import load_or_set_aside, write_atomic
from stats import SlidingWindow, StreamState, fit_baseline, save_states
from stats.joint import JointSpec, fit_joint_columns, joint_arrays, joint_from_arrays
from stats.state import load_bundle
from stats.table import to_batch

# Rows that teach a reference for predictions when a baseline file covers only the inputs.
OUTPUT_LEARN_ROWS = 1000


def merge_columns(tables: list[dict[str, list]]) -> tuple[dict[str, list], int]:
    """Concatenate column tables; a name absent from one table gets Nones for its rows."""
    keys = tables[0].keys()
    if all(t.keys() == keys for t in tables):  # the common case: same columns everywhere
        lengths = [max(map(len, t.values()), default=0) for t in tables]
        if all(len(v) == n for t, n in zip(tables, lengths) for v in t.values()):
            return {k: list(chain.from_iterable(t[k] for t in tables)) for k in keys}, sum(lengths)
    names: dict[str, None] = {}
    for t in tables:
        names.update(dict.fromkeys(t))
    out: dict[str, list] = {n: [] for n in names}
    total = 0
    for t in tables:
        n = max((len(v) for v in t.values()), default=0)
        for name, col in out.items():
            values = t.get(name)
            if values is None:
                col.extend([None] * n)
            else:
                col.extend(values)
                if len(values) < n:
                    col.extend([None] * (n - len(values)))
        total += n
    return out, total


class SideModel:
    """One side (inputs or outputs) of one route: reference + a window per variant."""

    def __init__(self, route: str, side: str, cfg: MonitorConfig, learn_rows: int,
                 max_features: int) -> None:
        self.route = route
        self.side = side
        self.cfg = cfg
        self.learn_rows = learn_rows
        self.max_features = max_features
        self._learning_names: dict[str, None] = {}  # first seen first, up to max_features
        self.warning: str | None = None  # what a reader of /monitoring should know
        self.schema = None
        self.reference: StreamState | None = None
        self.windows: dict[str, SlidingWindow] = {}
        # joint drift (inputs; stats.joint): its spec and reference, a window per variant
        self.joint: JointSpec | None = None
        self.joint_reference: StreamState | None = None
        self.joint_windows: dict[str, SlidingWindow] = {}
        self._joint_columns: list[int] = []
        self._buffer: list[dict[str, list]] = []
        self._buffered = 0

    @property
    def ready(self) -> bool:
        return self.reference is not None

    @property
    def gathering(self) -> bool:
        """Whether rows for a reference are being gathered (none yet: False)."""
        return bool(self._buffer)

    @property
    def learning_progress(self) -> tuple[int, int]:
        return (self.reference.n_rows if self.ready else self._buffered), self.learn_rows

    def set_reference(self, schema, reference: StreamState) -> None:
        self.schema, self.reference = schema, reference
        self.windows = {}
        self.set_joint(None, None)

    def set_joint(self, spec: JointSpec | None, reference: StreamState | None) -> None:
        self.joint, self.joint_reference, self.joint_windows = spec, reference, {}
        if spec is not None and self.schema is not None:
            index = {name: j for j, name in enumerate(self.schema.names)}
            self._joint_columns = [index[n] for n in spec.names]

    def _fit_joint(self, columns: dict[str, list]) -> None:
        """The joint reference from the same rows as the per-feature one (inputs only)."""
        joint = self.cfg.joint
        if self.side == "inputs" and joint.enabled and self.schema is not None:
            fitted = fit_joint_columns(columns, self.schema, joint.directions)
            if fitted is not None:
                self.set_joint(*fitted)

    def adopt_joint(self, arrays, source: str) -> None:
        """The joint reference saved with a state or baseline file; one warning when the file
        has none (saved before joint drift existed): joint drift stays off for this route."""
        if self.side != "inputs" or not self.cfg.joint.enabled:
            return
        saved = joint_from_arrays(arrays)
        if saved is None:
            get_logger().warning("joint drift off for this route: its reference file has no "
                                 "joint reference (rebuild it, or learn the reference again)",
                                 route=self.route, file=source)
            return
        self.set_joint(*saved)

    def fit(self, columns: dict[str, list]) -> None:
        rows = max(map(len, columns.values()), default=0)
        self.warning = small_reference_warning(rows)
        if self.warning:
            get_logger().warning("small reference", route=self.route, side=self.side,
                                 rows=rows, warning=self.warning)
        if self.side == "inputs":
            schema, reference = fit_baseline(columns, overrides=self.cfg.overrides)
        else:  # class labels (few distinct integers) are categories, scores stay numeric
            schema, reference = fit_baseline(columns, categorical=[
                n for n, v in columns.items() if _looks_like_labels(v)])
        self.set_reference(schema, reference)
        self._fit_joint(columns)

    def window(self, variant: str) -> SlidingWindow:
        w = self.windows.get(variant)
        if w is None:
            w = self.windows[variant] = self._new_window(self.schema)
        return w

    def joint_window(self, variant: str) -> SlidingWindow:
        assert self.joint is not None
        w = self.joint_windows.get(variant)
        if w is None:
            w = self.joint_windows[variant] = self._new_window(self.joint.schema)
        return w

    def _new_window(self, schema) -> SlidingWindow:
        slices = max(1, round(self.cfg.window / self.cfg.slice))
        return SlidingWindow(schema, slices, self.cfg.slice, clock=time.time)

    def ingest(self, variant: str, data, at: float) -> int:
        """Rows (columns, or a matrix laid out as the schema) into the variant's windows;
        returns the rows joint drift had to skip."""
        batch = to_batch(data, self.schema)
        skipped = 0
        if self.joint is not None and batch.matrix.shape[0]:
            projected, skipped = self.joint.project(batch.matrix[:, self._joint_columns])
            if projected.shape[0]:
                self.joint_window(variant).update_matrix(np.ascontiguousarray(projected), now=at)
        self.window(variant).update(batch, now=at)
        return skipped

    def add(self, variant: str, columns: dict[str, list], rows: int, at: float) -> tuple[int, int]:
        """Rows into the window (or the learning buffer); returns (the values dropped because
        their names would have taken the learned schema past `max_features`, the rows joint
        drift skipped for a missing value)."""
        dropped = 0
        if self.reference is None:
            columns, dropped = self._admit(columns)
            self._buffer.append(columns)
            self._buffered += rows
            if self._buffered >= self.learn_rows:
                merged, total = merge_columns(self._buffer)
                self._buffer, self._buffered, self._learning_names = [], 0, {}
                n = self.learn_rows
                self.fit({k: v[:n] for k, v in merged.items()})
                if total > n:  # rows past the reference's share go to the window, not lost
                    return dropped, self.ingest(variant, {k: v[n:] for k, v in merged.items()},
                                                 at)
            return dropped, 0
        return dropped, self.ingest(variant, columns, at)

    def _admit(self, columns: dict[str, list]) -> tuple[dict[str, list], int]:
        """While learning: the columns under names already seen or still room for."""
        names = self._learning_names
        if all(k in names for k in columns):
            return columns, 0
        kept, dropped = {}, 0
        for k, v in columns.items():
            if k in names or len(names) < self.max_features:
                names[k] = None
                kept[k] = v
            else:
                dropped += len(v)
        return kept, dropped

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """The reference and windows (npz); while still learning, the rows gathered so far, so
        a restart (a crash, a reload that changes monitoring) does not start learning over."""
        learning = learning_path(path)
        if not self.ready:
            if self._buffer:
                merged, _ = merge_columns(self._buffer)
                write_atomic(learning, orjson.dumps(merged, option=orjson.OPT_SERIALIZE_NUMPY))
            return
        learning.unlink(missing_ok=True)
        states = {"reference": self.reference}
        extra = {}
        for i, (variant, window) in enumerate(self.windows.items()):
            steps, slots = window.snapshot()
            extra[f"variant{i}"] = np.array(variant)
            extra[f"steps{i}"] = steps
            states.update({f"v{i}.s{j}": st for j, st in enumerate(slots)})
        if self.joint is not None and self.joint_reference is not None:
            extra.update(self._joint_arrays())
        save_states(path, self.schema, states, extra)

    def _joint_arrays(self) -> dict[str, np.ndarray]:
        """The joint spec, reference and windows, as extra arrays of the side's npz."""
        assert self.joint is not None and self.joint_reference is not None
        out = joint_arrays(self.joint, self.joint_reference)
        for i, (variant, window) in enumerate(self.joint_windows.items()):
            steps, slots = window.snapshot()
            out[f"joint_variant{i}"] = np.array(variant)
            out[f"joint_steps{i}"] = steps
            for j, st in enumerate(slots):
                out.update(st.to_arrays(f"joint.v{i}.s{j}."))
        return out

    def _load_joint(self, extra: dict[str, np.ndarray], source: str) -> None:
        self.adopt_joint(extra, source)
        spec = self.joint
        if spec is None:
            return
        i = 0
        while f"joint_variant{i}" in extra:
            window = self.joint_window(str(extra[f"joint_variant{i}"]))
            slots = [StreamState.from_arrays(spec.schema, extra, f"joint.v{i}.s{j}.")
                     for j in range(window.slices) if f"joint.v{i}.s{j}.moments" in extra]
            if len(slots) == window.slices:
                window.restore(extra[f"joint_steps{i}"], slots)
            i += 1

    def load(self, path: Path) -> bool:
        if not path.exists():
            return False
        schema, states, extra = load_bundle(path)
        self.set_reference(schema, states["reference"])
        i = 0
        while f"variant{i}" in extra:
            variant = str(extra[f"variant{i}"])
            window = self.window(variant)
            slots = [states[f"v{i}.s{j}"] for j in range(window.slices) if f"v{i}.s{j}" in states]
            if len(slots) == window.slices:
                window.restore(extra[f"steps{i}"], slots)
            i += 1
        self._load_joint(extra, str(path))
        return True

    def load_learning(self, path: Path) -> bool:
        """The rows a learning side had gathered before a restart (see `save`)."""
        columns = orjson.loads(path.read_bytes())
        if not isinstance(columns, dict) or not all(isinstance(v, list) for v in columns.values()):
            raise ValueError("not an object of columns")
        rows = max(map(len, columns.values()), default=0)
        if rows:
            admitted, _ = self._admit(columns)
            self._buffer, self._buffered = [admitted], rows
        return True


# The expected range of a feature runs from its reference's 0.1% to 99.9% quantiles; from n rows
# these are the sample's extremes until n reaches ~1,000, and ~2/(n+1) of clean new values then
# fall outside: the 1% outlier rule fires on clean traffic below ~200 rows, and is loose below
# this many.
RELIABLE_REFERENCE_ROWS = 1000


def small_reference_warning(rows: int) -> str | None:
    if rows >= RELIABLE_REFERENCE_ROWS:
        return None
    return (f"the reference has {rows} rows: about {2 / (rows + 1):.1%} of clean values fall "
            f"outside the expected range it implies, so outlier alerts are unreliable; learn "
            f"{RELIABLE_REFERENCE_ROWS} rows or more (monitor.learn.rows) or give a baseline")


def learning_path(path: Path) -> Path:
    """`<route>.<side>.learning.json` beside `<route>.<side>.npz`."""
    return path.with_name(path.stem + ".learning.json")


class RouteMonitor:
    """Monitoring of one route: decode settings and the side models, shared or per variant."""

    def __init__(self, route: RouteConfig, state_dir: Path, config_dir: Path) -> None:
        assert route.monitor is not None
        self.name = route.name
        self.protocol = route.protocol
        self.cfg = route.monitor
        self.state_dir = state_dir
        learn = self.cfg.learn
        self.learn_rows = learn.rows if learn else (OUTPUT_LEARN_ROWS if self.cfg.baseline else 10_000)
        self.per_variant = bool(learn and learn.per_variant)
        # Each model's predictions are their own reference on a split: variants that differ on
        # purpose must not flag each other's outputs as drift.
        self.outputs_per_variant = len(route.variant_names) > 1
        self._models: dict[tuple[str, str], SideModel] = {}
        self.max_capture = self.cfg.max_capture_bytes
        self._names_checked = False
        self.baseline_columns: dict[str, list] | None = None
        self._baseline_reference = None
        path = self.cfg.baseline_path(config_dir)
        known = 0
        if path is not None:
            columns = load_baseline_file(path)
            if columns is None:
                self._baseline_reference = load_bundle(path)
                known = self._baseline_reference[0].n_features
            else:
                self.baseline_columns = columns
                known = len(columns)
        # a baseline wider than the cap raises it: its own features are never dropped
        self.max_features = max(self.cfg.max_features, known)

    def model(self, side: str, variant: str) -> SideModel:
        own = self.per_variant or (side == "outputs" and self.outputs_per_variant)
        key = (side, variant if own else "*")
        m = self._models.get(key)
        if m is None:
            m = self._models[key] = SideModel(self.name, side, self.cfg, self.learn_rows,
                                              self.max_features)
            path = self._path(key)
            if load_or_set_aside(path, lambda: m.load(path)):
                return m
            learning = learning_path(path)
            load_or_set_aside(learning, lambda: m.load_learning(learning))
            if side == "inputs" and not m.gathering:
                if self._baseline_reference is not None:
                    schema, states, extra = self._baseline_reference
                    m.set_reference(schema, next(iter(states.values())))
                    m.adopt_joint(extra, str(self.cfg.baseline))
                elif self.baseline_columns is not None:
                    m.fit(self.baseline_columns)
        return m

    def check_names(self, columns: dict) -> None:
        """Say once when `monitor.features` names what requests do not carry: the names apply
        by position only when they count as many as the columns."""
        configured = self.cfg.feature_names
        if not configured or self._names_checked or set(columns) == set(configured):
            return
        self._names_checked = True
        get_logger().warning(
            "monitor.features does not match the requests", route=self.name,
            configured=configured[:20], received=list(columns)[:20],
            hint="names apply in order when the request's columns (by tensor, then by column) "
                 "count as many as the names; otherwise the request's own names are used")

    def models(self) -> list[tuple[str, str, SideModel]]:
        return [(side, variant, m) for (side, variant), m in self._models.items()]

    def _path(self, key: tuple[str, str]) -> Path:
        side, variant = key
        suffix = "" if variant == "*" else f".{variant}"
        return self.state_dir / f"{self.name}.{side}{suffix}.npz"

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for key, m in self._models.items():
            m.save(self._path(key))


class MonitorCore:
    """Decode captures (gateway.link.messages.Capture) and update state.

    Every capture counts in the route's experiment (status, latency); sampled ones of monitored
    routes are decoded into the feature windows, and their predictions kept for feedback
    (gateway.experiments.feedback).
    """

    def __init__(self, monitors: dict[str, RouteMonitor], metrics,
                 experiments: dict | None = None, desk=None) -> None:
        self.monitors = monitors
        self.metrics = metrics
        self.experiments = experiments or {}
        self.desk = desk
        self.log = get_logger()

    def persist(self) -> None:
        """Windows, references and experiment tallies, and the predictions waiting for labels
        (saved together, so a label counted in a tally is marked in the store)."""
        for owner in (*self.monitors.values(), *self.experiments.values()):
            try:
                owner.save()
            except OSError as exc:
                self.log.warning("cannot save monitor state", route=owner.name, error=str(exc))
        if self.desk is not None:
            try:
                self.desk.save()
            except OSError as exc:
                self.log.warning("cannot save the predictions waiting for labels", error=str(exc))

    def process(self, captures: list[Capture]) -> bool:
        """Decode and ingest one batch of captures. Returns whether there was anything."""
        if not captures:
            return False
        groups: dict[tuple[RouteMonitor, str, str], list] = {}
        self._record_requests(captures)
        for c in captures:
            mon = self.monitors.get(c.route)
            if mon is None or not c.sampled:
                continue
            self.metrics.monitor_captures(mon.name, c.variant).inc()
            inputs = self._decode(mon, "inputs", c.request_body, c.request_headers)
            if c.status >= 400:  # the upstream refused them: counted, kept out of the windows
                if inputs is not None:
                    self.metrics.monitor_rejected_rows(mon.name, c.variant).inc(_rows(inputs))
                continue
            outputs = self._decode(mon, "outputs", c.response_body, c.response_headers)
            if inputs is not None:
                groups.setdefault((mon, c.variant, "inputs"), []).append(inputs)
            if outputs is not None:
                groups.setdefault((mon, c.variant, "outputs"), []).append(outputs)
                if self.desk is not None and c.request_id is not None:
                    self.desk.remember(c.route, c.variant, c.request_id, c.at, outputs,
                                       _rows(outputs))
        if self.desk is not None:
            self.desk.flush()
        newest = max(c.at for c in captures)
        for (mon, variant, side), tables in groups.items():
            columns, rows = merge_columns(tables)
            if not rows:
                continue
            dropped, skipped = mon.model(side, variant).add(variant, columns, rows, newest)
            if dropped:
                self.metrics.monitor_dropped_features(mon.name, side).inc(dropped)
            if skipped:
                self.metrics.monitor_joint_skipped(mon.name).inc(skipped)
            self.metrics.monitor_rows(mon.name, variant, side).inc(rows)
        self.metrics.monitor_lag.set(max(0.0, time.time() - captures[0].at))
        return True

    def _record_requests(self, captures: list[Capture]) -> None:
        """Every capture counts in its route's experiment: status and latency."""
        timings: dict[tuple[str, str], tuple[list, list]] = {}
        for c in captures:
            timing = timings.get((c.route, c.variant))
            if timing is None:
                timing = timings[(c.route, c.variant)] = ([], [])
            timing[0].append(c.duration)
            timing[1].append(c.status >= 500)
        for (route, variant), (durations, errors) in timings.items():
            exp = self.experiments.get(route)
            if exp is not None:
                exp.record_requests(variant, np.asarray(durations), np.asarray(errors))

    def _decode(self, mon: RouteMonitor, side: str, body: bytes | None,
                headers: list[tuple[bytes, bytes]]) -> dict[str, list] | None:
        try:
            if body is None:
                raise DecodeError("too_large" if side == "inputs" else "streamed")
            ctype = encoding = None
            binary = False
            for name, value in headers:
                lname = name.lower()
                if lname == b"content-type":
                    ctype = value.decode("latin-1")
                elif lname == b"content-encoding":
                    encoding = value.decode("latin-1")
                elif lname == b"inference-header-content-length":
                    binary = True
            if binary:
                raise DecodeError("binary_extension")
            if side == "inputs":
                columns = decode_request(mon.protocol, body, ctype, mon.cfg.feature_names or None,
                                         mon.cfg.json_path, mon.max_features)
            else:
                body = decompress(body, encoding, mon.max_capture)
                columns = decode_response(mon.protocol, body, ctype, mon.cfg.prediction_path,
                                          mon.max_features)
            if getattr(columns, "dropped", 0):
                self.metrics.monitor_dropped_features(mon.name, side).inc(columns.dropped)
            if side == "inputs":
                mon.check_names(columns)
            return columns
        except DecodeError as exc:
            self.metrics.monitor_decode_error(mon.name, side, exc.reason).inc()
            return None


def _looks_like_labels(values: list) -> bool:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    arr = arr[np.isfinite(arr)]
    return arr.size > 0 and bool(np.all(arr == np.round(arr))) and np.unique(arr).size <= 20


def _rows(columns: dict[str, list]) -> int:
    return max((len(v) for v in columns.values()), default=0)
