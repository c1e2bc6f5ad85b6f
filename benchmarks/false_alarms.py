"""False alarms per day against detection delay: the real evaluator on an injected clock.

For each feature family (normal, lognormal, exponential, uniform, bimodal, Poisson counts,
categorical) one monitored route of 20 features of that family learns its reference from the
first 10,000 rows, then takes clean traffic - by default 100 req/s of 4-row requests, i.e. 400
rows per simulated second - for `--hours` simulated hours, evaluated every `evaluate_every` (5 s)
by gateway.monitor.evaluator.Evaluator with the default rules. Every first firing notification
on clean traffic is a false alarm. Then, for each drift the README promises, fresh routes are
fed clean traffic for a few minutes, the drift starts, and the delay to its first firing
notification is recorded.

Time is simulated, the arithmetic is not: rows are drawn fresh (never replayed), one batch per
simulated second into the route's real sliding windows, and every evaluation is the gateway's.

    .venv/bin/python benchmarks/false_alarms.py --hours 48            # the README's table
    .venv/bin/python benchmarks/false_alarms.py --hours 2 --families normal,lognormal
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.alerts.sinks import Dispatcher  # noqa: E402
from gateway.config import SinkConfig, parse_config  # noqa: E402
from gateway.logs import configure_logging  # noqa: E402
from gateway.monitor.core import RouteMonitor  # noqa: E402
from gateway.monitor.evaluator import Evaluator  # noqa: E402
from gateway.monitor.metrics import MonitorMetrics  # noqa: E402

FEATURES = 20
CATEGORIES = ("a", "b", "c", "d", "e")
CATEGORY_SHARES = np.array([0.40, 0.25, 0.15, 0.12, 0.08])
REFERENCE_ROWS = 10_000


def _family_draw(family: str, j: int) -> Callable[[np.random.Generator, int], np.ndarray]:
    """Feature j of a family: its parameters vary a little with j, as real features do."""
    k = 1.0 + 0.1 * (j % 5)
    if family == "normal":
        return lambda rng, n: rng.normal(50.0 * k, 10.0, n)
    if family == "lognormal":
        return lambda rng, n: rng.lognormal(1.0, 0.5 + 0.1 * (j % 6), n)
    if family == "exponential":
        return lambda rng, n: rng.exponential(5.0 * k, n)
    if family == "uniform":
        return lambda rng, n: rng.uniform(10.0 * k, 100.0 * k, n)
    if family == "bimodal":
        def bimodal(rng, n):
            left = rng.random(n) < 0.4
            return np.where(left, rng.normal(20.0 * k, 4.0, n), rng.normal(60.0 * k, 8.0, n))
        return bimodal
    if family == "poisson":
        return lambda rng, n: rng.poisson(3.0 * k, n).astype(np.float64)
    if family == "categorical":  # as codes 0..4 in the schema's category order (a..e)
        return lambda rng, n: rng.choice(len(CATEGORIES), n, p=CATEGORY_SHARES).astype(np.float64)
    if family == "correlated":  # normal features; f0 and f1 correlated +0.8 (see _rows)
        return lambda rng, n: rng.normal(50.0 * k, 10.0, n)
    raise ValueError(f"unknown family {family!r}")


FAMILIES = ("normal", "lognormal", "exponential", "uniform", "bimodal", "poisson", "categorical",
            "correlated")
CORRELATION = 0.8


def _correlate(x: np.ndarray, rho: float) -> np.ndarray:
    """f1 made to correlate `rho` with f0, both marginals unchanged (normal, same mean/sd)."""
    z0 = (x[:, 0] - 50.0) / 10.0
    z1 = (x[:, 1] - 55.0) / 10.0
    x = x.copy()
    x[:, 1] = 55.0 + 10.0 * (rho * z0 + np.sqrt(1 - rho * rho) * z1)
    return x


@dataclass
class Drift:
    """A change applied to feature 0's fresh values from the drift's start (`joint`: to the
    whole row matrix); its alert is `rule` on `feature`."""

    name: str
    families: tuple[str, ...]
    apply: Callable[[np.random.Generator, np.ndarray, str], np.ndarray]
    rule: str
    joint: bool = False
    feature: str = "f0"

    def transform(self, rng: np.random.Generator, x: np.ndarray, family: str) -> np.ndarray:
        if self.joint:
            return self.apply(rng, x, family)
        x[:, 0] = self.apply(rng, x[:, 0], family)
        return x


def _shift_mean(rng, x, family):  # the mean moves by 6% of itself: a key statistic by >= 5%
    return x + 0.06 * _base_mean(family)


def _scale(rng, x, family):  # the spread grows by 10% around the mean (std +10%, mean kept)
    m = _base_mean(family)
    return m + (x - m) * 1.10


def _outliers(rng, x, family):  # 2% of values far outside the expected range
    out = x.copy()
    hit = rng.random(len(x)) < 0.02
    out[hit] = 1e6
    return out


def _missing(rng, x, family):  # 3% of values go missing
    out = x.copy()
    out[rng.random(len(x)) < 0.03] = np.nan
    return out


def _flip_correlation(rng, x, family):  # f0 and f1: +0.8 becomes -0.8, marginals kept
    return _correlate(_undo_correlation(x), -CORRELATION)


def _undo_correlation(x):
    """The independent f1 back from a correlated row matrix (as _rows made it)."""
    z0 = (x[:, 0] - 50.0) / 10.0
    z1 = ((x[:, 1] - 55.0) / 10.0 - CORRELATION * z0) / np.sqrt(1 - CORRELATION ** 2)
    x = x.copy()
    x[:, 1] = 55.0 + 10.0 * z1
    return x


def _category_shares(rng, x, family):  # 'a' takes 10 points from the others
    out = x.copy()
    move = (out != 0) & (rng.random(len(x)) < 0.10 / 0.60)
    out[move] = 0
    return out


_BASE_MEANS: dict[str, float] = {}


def _base_mean(family: str) -> float:
    if family not in _BASE_MEANS:
        rng = np.random.default_rng(0)
        _BASE_MEANS[family] = float(_family_draw(family, 0)(rng, 1_000_000).mean())
    return _BASE_MEANS[family]


NUMERIC = tuple(f for f in FAMILIES if f != "categorical")
DRIFTS = (
    Drift("mean +6%", NUMERIC, _shift_mean, "feature_drift"),
    Drift("std +10%", ("normal", "uniform", "bimodal"), _scale, "feature_drift"),
    Drift("2% outliers", NUMERIC, _outliers, "feature_outliers"),
    Drift("3% missing", FAMILIES, _missing, "feature_missing"),
    Drift("category share +10 pts", ("categorical",), _category_shares, "feature_drift"),
    Drift("correlation +0.8 -> -0.8", ("correlated",), _flip_correlation, "joint_drift",
          joint=True, feature="(joint)"),
)


class Recorder(Dispatcher):
    """The real dispatcher with one webhook sink, keeping its notifications instead of
    posting them."""

    def __init__(self) -> None:
        super().__init__({"record": SinkConfig(type="webhook", url="http://127.0.0.1:9/")},
                         MonitorMetrics(), "http://gateway:8090")
        self.sent: list[dict] = []

    def notify(self, payload: dict, sink_names) -> None:
        if sink_names:
            self.sent.append(payload)

    def notify_retrain(self, route, cfg, payload) -> None:
        pass


def _config(families: list[str], extra_yaml: str) -> str:
    routes = "\n".join(
        f"  - name: {family}\n"
        f"    match: {{path_prefix: /{family}}}\n"
        f"    upstream: model\n"
        f"    protocol: json\n"
        f"    monitor:\n"
        f"      learn: {{rows: {REFERENCE_ROWS}}}\n"
        f"      features: [{', '.join(f'f{j}' for j in range(FEATURES))}]"
        for family in families)
    return (f"upstreams:\n  model: {{url: 'http://127.0.0.1:9'}}\n{extra_yaml}\n"
            f"routes:\n{routes}\n")


class Simulation:
    """Routes of one family each, fed `rows_per_second`, evaluated on an injected clock."""

    def __init__(self, families: list[str], rows_per_second: int, seed: int,
                 extra_yaml: str = "") -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.cfg = parse_config(_config(families, extra_yaml), "false_alarms.yaml",
                                config_dir=Path(self.dir.name))
        self.families = families
        self.rows = rows_per_second
        self.rng = np.random.default_rng(seed)
        self.draws = {f: [_family_draw(f, j) for j in range(FEATURES)] for f in families}
        state = Path(self.dir.name) / "state"
        self.monitors = {rc.name: RouteMonitor(rc, state, Path(self.dir.name))
                         for rc in self.cfg.routes}
        self.recorder = Recorder()
        self.evaluator = Evaluator(self.cfg, self.monitors, MonitorMetrics(), self.recorder)
        self.every = self.cfg.alerts.evaluate_every
        self.now = 1_000_000_000.0
        for family, mon in self.monitors.items():
            ref = self._rows(family, REFERENCE_ROWS)
            columns = {f"f{j}": _as_values(family, ref[:, j]) for j in range(FEATURES)}
            mon.model("inputs", "default").add("default", columns, REFERENCE_ROWS, self.now)
            assert mon.model("inputs", "default").ready
        self.drift: tuple[Drift, float] | None = None

    def _rows(self, family: str, n: int) -> np.ndarray:
        x = np.column_stack([d(self.rng, n) for d in self.draws[family]])
        return _correlate(x, CORRELATION) if family == "correlated" else x

    def run(self, seconds: float) -> None:
        """Feed and evaluate for `seconds` of simulated time."""
        end = self.now + seconds
        while self.now < end:
            self.now += 1.0
            for family, mon in self.monitors.items():
                x = self._rows(family, self.rows)
                if self.drift is not None:
                    x = self.drift[0].transform(self.rng, x, family)
                mon.model("inputs", "default").ingest("default", x, self.now)
            if self.now % self.every < 1.0:
                self.evaluator.run(self.now)

    def firing(self, since: float = 0.0) -> list[dict]:
        """First notifications of alerts (not their repeats) since a simulated time."""
        return [p for p in self.recorder.sent if p["status"] == "firing"
                and _ts(p["started_at"]) >= since and p.get("repeat", False) is False]

    def close(self) -> None:
        self.dir.cleanup()


def _as_values(family: str, column: np.ndarray) -> list:
    if family == "categorical":
        return [CATEGORIES[int(c)] for c in column]
    return column.tolist()


def _ts(iso_text: str) -> float:
    import datetime as dt
    return dt.datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp()


def false_alarms(families: list[str], hours: float, rows: int, seed: int,
                 extra_yaml: str = "") -> dict[str, list[dict]]:
    """Simulated clean hours; per family, the alerts that fired (each counted once)."""
    sim = Simulation(families, rows, seed, extra_yaml)
    try:
        sim.run(600)  # the windows fill before anything is counted
        start = sim.now
        sim.recorder.sent.clear()
        sim.run(hours * 3600)
        firsts = {}
        for p in sim.recorder.sent:
            if p["status"] == "firing":
                firsts.setdefault((p["route"], p["feature"], p["alert"], p["started_at"]), p)
        out: dict[str, list[dict]] = {f: [] for f in families}
        for p in firsts.values():
            if _ts(p["started_at"]) >= start:
                out[p["route"]].append(p)
        return out
    finally:
        sim.close()


def detection_delay(drift: Drift, family: str, rows: int, seed: int, extra_yaml: str = "",
                    limit: float = 300.0) -> float | None:
    """Seconds from the drift's start to its alert on feature 0 (None: not within `limit`)."""
    sim = Simulation([family], rows, seed, extra_yaml)
    try:
        sim.run(600)
        # start the drift at a random phase of the evaluation cadence
        sim.run(float(sim.rng.integers(0, int(sim.every))))
        sim.recorder.sent.clear()
        started = sim.now
        sim.drift = (drift, started)
        while sim.now - started < limit:
            sim.run(1.0)
            for p in sim.recorder.sent:
                if p["status"] == "firing" and p["feature"] == drift.feature \
                        and p["alert"] == drift.rule:
                    return sim.now - started
        return None
    finally:
        sim.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=48.0, help="simulated clean hours per family")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--rows-per-second", type=int, default=400, help="100 req/s x 4 rows")
    ap.add_argument("--trials", type=int, default=5, help="detection runs per drift x family")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-detection", action="store_true")
    args = ap.parse_args(argv)
    configure_logging("warning")  # one line per alert would drown the table
    families = [f for f in args.families.split(",") if f]
    print(f"{args.hours:g} simulated hours per family, {FEATURES} features, "
          f"{args.rows_per_second} rows/s, evaluated every 5 s (defaults)\n")
    for family in families if args.hours > 0 else ():
        if family == families[0]:
            print("| family | false alerts | per route per day | alerts (rule: feature) | CPU s |")
            print("|---|---|---|---|---|")
        t0 = time.process_time()
        fired = false_alarms([family], args.hours, args.rows_per_second, args.seed)[family]
        cpu = time.process_time() - t0
        what = ", ".join(sorted(f"{p['alert']}: {p['feature']} ({p['metric']})" for p in fired))
        print(f"| {family} | {len(fired)} | {len(fired) * 24 / args.hours:.2f} | {what or '-'} "
              f"| {cpu:.0f} |", flush=True)
    if args.skip_detection:
        return 0
    print(f"\nDetection delay, seconds from the drift's start to its first notification "
          f"(median and max of {args.trials} runs at random phases; target 30 s)\n")
    print("| drift | family | rule | median s | max s | missed |")
    print("|---|---|---|---|---|---|")
    for drift in DRIFTS:
        for family in drift.families:
            if family not in families:
                continue
            delays = [detection_delay(drift, family, args.rows_per_second, args.seed + t)
                      for t in range(args.trials)]
            got = [d for d in delays if d is not None]
            missed = len(delays) - len(got)
            med = f"{np.median(got):.0f}" if got else "-"
            worst = f"{max(got):.0f}" if got else "-"
            print(f"| {drift.name} | {family} | {drift.rule} | {med} | {worst} | {missed} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
