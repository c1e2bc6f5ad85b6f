"""One Prometheus exposition for N worker processes: their families summed, never going back.

Each worker reports its families' running totals every REPORT_EVERY seconds (off the request
path: reading a registry is one pass over its series). Counters and histograms are summed
over the workers; when a worker dies, its last totals are kept as a retired share, so a
restarted worker starting from zero never makes a counter go backwards (what a killed worker
counted after its last report, at most REPORT_EVERY seconds of it, is lost). Gauges are live
values: summed (requests in flight) or, for verdicts every worker holds alike, the minimum or
maximum. Series are bounded by the config (routes, variants, upstreams), not by traffic.

(prometheus_client's multiprocess mode does the summing with one mmap'd file per process; it
costs a lock and a file write per metric update on the request path and needs the environment
set before the library is imported. Reports cost nothing per request.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

SUMMED_TYPES = frozenset({"counter", "histogram", "summary"})
# Gauges whose value every worker holds alike, or where any worker's "down" is the answer.
GAUGE_MODES: dict[str, Callable[[Iterable[float]], float]] = {
    "driftgate_upstream_healthy": min,
    "driftgate_canary_percent": max,
}
_SUFFIX_RANK = {"_bucket": 0, "_count": 1, "_sum": 2}

SampleKey = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


def _samples(families: Iterable[Metric]) -> dict[str, tuple[str, str, dict[SampleKey, float]]]:
    """{family: (documentation, type, {sample key: value})}."""
    out: dict[str, tuple[str, str, dict[SampleKey, float]]] = {}
    for fam in families:
        values = out.setdefault(fam.name, (fam.documentation, fam.type, {}))[2]
        for s in fam.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class FleetExposition:
    """The workers' families merged with the supervisor's own (`own`: its registry)."""

    def __init__(self, own: Callable[[], CollectorRegistry]) -> None:
        self.own = own
        self.live: dict[int, dict] = {}     # worker slot -> its last report, as _samples()
        self.retired: dict[str, tuple[str, str, dict[SampleKey, float]]] = {}

    def report(self, slot: int, families: list[Metric]) -> None:
        self.live[slot] = _samples(families)

    def retire(self, slot: int) -> None:
        """A worker is gone: its counters' and histograms' last totals stay in the sums."""
        last = self.live.pop(slot, None)
        if last is None:
            return
        for name, (doc, typ, values) in last.items():
            if typ not in SUMMED_TYPES:
                continue
            kept = self.retired.setdefault(name, (doc, typ, {}))[2]
            for key, v in values.items():
                kept[key] = kept.get(key, 0.0) + v

    def requests(self, slot: int) -> int:
        """Requests a live worker answered since it started (for /admin/workers)."""
        fam = self.live.get(slot, {}).get("driftgate_requests")
        return int(sum(fam[2].values())) if fam else 0

    def collect(self) -> list[Metric]:
        sources = [_samples(self.own().collect()), *self.live.values()]
        merged: dict[str, tuple[str, str, dict[SampleKey, list[float]]]] = {}
        for source in (*sources, self.retired):
            for name, (doc, typ, values) in source.items():
                into = merged.setdefault(name, (doc, typ, {}))[2]
                for key, v in values.items():
                    into.setdefault(key, []).append(v)
        out = []
        for name, (doc, typ, values) in merged.items():
            fam = Metric(name, doc, typ)
            combine = sum if typ in SUMMED_TYPES else GAUGE_MODES.get(name, max if typ == "info"
                                                                       else sum)
            for (sample, labels), vs in sorted(values.items(), key=_order):
                fam.add_sample(sample, dict(labels), float(combine(vs)))
            out.append(fam)
        return out


def _order(item: tuple[SampleKey, list[float]]) -> tuple:
    """Histogram samples grouped by series, buckets by bound, then _count and _sum."""
    (sample, labels), _ = item
    le = next((float(v) for k, v in labels if k == "le"), 0.0)
    series = tuple(kv for kv in labels if kv[0] != "le")
    suffix = next((r for s, r in _SUFFIX_RANK.items() if sample.endswith(s)), 0)
    return series, suffix, le, sample
