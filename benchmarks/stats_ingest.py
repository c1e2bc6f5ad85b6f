"""stats/ ingest and evaluation speed, numba kernel vs a numpy implementation, in one run.

    python benchmarks/stats_ingest.py [--out benchmarks/results/stats_ingest.md]

- batch: a 100,000 x 20 float matrix (1% NaN) through StreamState.update_matrix (histograms,
  moments, NaN/inf counts, range outliers and HBOS scores in one kernel call) vs numpy doing
  histograms only (np.searchsorted + np.bincount per feature) and numpy doing the same work as
  the kernel; again with heavy-tailed (lognormal) features, which take the log-spaced grid.
- single row: one 1 x 20 row per call, the monitor's worst case.
- evaluation: stats.drift.evaluate on 1,000 features x 20 bins.
- cold start: a fresh interpreter importing stats and making its first update (numba cache warm).
Pinned to one core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import emit, machine_line  # noqa: E402
from stats.baseline import fit_baseline  # noqa: E402
from stats.drift import evaluate  # noqa: E402
from stats.layout import P_HIGH, P_LOW  # noqa: E402
from stats.state import StreamState  # noqa: E402


def best_of(fn, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def numpy_histograms(x: np.ndarray, edges: list[np.ndarray], counts: np.ndarray) -> None:
    for j, e in enumerate(edges):
        idx = np.searchsorted(e[:-1], x[:, j], side="right") + (x[:, j] > e[-1])
        counts[j, : e.size + 1] += np.bincount(idx, minlength=e.size + 1)


def numpy_same_work(x, edges, counts, low, high, logd):
    finite = np.isfinite(x)
    clean = np.where(finite, x, 0.0)
    scores = np.zeros(x.shape[0])
    for j, e in enumerate(edges):
        idx = np.searchsorted(e[:-1], clean[:, j], side="right") + (clean[:, j] > e[-1])
        idx = np.where(finite[:, j], idx, e.size + 1)
        counts[j, : e.size + 2] += np.bincount(idx, minlength=e.size + 2)
        scores += np.where(finite[:, j], logd[j, idx], 0.0)
    n = finite.sum(axis=0)
    _ = clean.sum(axis=0) / np.maximum(n, 1), (clean ** 2).sum(axis=0)
    _ = np.where(finite, x, np.inf).min(axis=0), np.where(finite, x, -np.inf).max(axis=0)
    _ = ((x < low) | (x > high)).sum(axis=0), (~finite).sum(axis=0), scores


def cold_start() -> float:
    code = ("import time; t=time.perf_counter(); import numpy as np; "
            "from stats.baseline import fit_baseline; from stats.state import StreamState; "
            "s, r = fit_baseline(np.random.default_rng(0).normal(size=(1000, 5))); "
            "StreamState(s).update_matrix(np.zeros((1, 5))); print(time.perf_counter()-t)")
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, capture_output=True)  # warm
    runs = [float(subprocess.run([sys.executable, "-c", code], cwd=root, check=True,
                                 capture_output=True, text=True).stdout) for _ in range(3)]
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})

    rng = np.random.default_rng(0)
    n, f = 100_000, 20
    mus, sds = rng.uniform(-5, 50, f), rng.uniform(1, 10, f)
    schema, _ = fit_baseline(rng.normal(mus, sds, (n, f)))
    x = rng.normal(mus, sds, (n, f))
    x[rng.random((n, f)) < 0.01] = np.nan
    state = StreamState(schema)
    edges = [np.asarray(s.edges) for s in schema.features]
    low, high = schema.params[P_LOW], schema.params[P_HIGH]
    counts = np.zeros((f, schema.n_bins + 2), dtype=np.int64)

    state.update_matrix(x)  # compile / load from cache outside the timing
    t_numba = best_of(lambda: state.update_matrix(x))
    t_np_hist = best_of(lambda: numpy_histograms(x, edges, counts))
    t_np_same = best_of(lambda: numpy_same_work(x, edges, counts, low, high, schema.hbos_log_density))
    values = n * f

    # A heavy right tail (lognormal sigma 1.5): binned on the log-spaced grid.
    skewed_schema, _ = fit_baseline(rng.lognormal(0, 1.5, (n, f)))
    skewed = rng.lognormal(0, 1.5, (n, f))
    skewed[rng.random((n, f)) < 0.01] = np.nan
    skewed_state = StreamState(skewed_schema)
    skewed_state.update_matrix(skewed)
    t_skewed = best_of(lambda: skewed_state.update_matrix(skewed))
    skewed_edges = [np.asarray(s.edges) for s in skewed_schema.features]
    t_np_skewed = best_of(lambda: numpy_same_work(
        skewed, skewed_edges, np.zeros_like(counts), skewed_schema.params[P_LOW],
        skewed_schema.params[P_HIGH], skewed_schema.hbos_log_density))

    row = x[:1].copy()
    reps = 100_000
    t = time.perf_counter()
    for _ in range(reps):
        state.update_matrix(row)
    single_numba = (time.perf_counter() - t) / reps
    reps_np = 5_000
    t = time.perf_counter()
    for _ in range(reps_np):
        numpy_same_work(row, edges, counts, low, high, schema.hbos_log_density)
    single_numpy = (time.perf_counter() - t) / reps_np

    wide, _ = fit_baseline(rng.normal(0, 1, (5_000, 1000)), n_bins=20)
    ref_w, cur_w = StreamState(wide), StreamState(wide)
    ref_w.update_matrix(rng.normal(0, 1, (5_000, 1000)))
    cur_w.update_matrix(rng.normal(0.05, 1, (2_000, 1000)))
    evaluate(ref_w, cur_w)
    t_eval = best_of(lambda: evaluate(ref_w, cur_w), repeat=5)
    t_cold = cold_start()

    lines = [
        f"Machine: {machine_line()}; pinned to one core.",
        "",
        "| job | numba (stats/) | numpy | ratio | target |",
        "|---|---|---|---|---|",
        f"| 100k x 20 batch, all the kernel's work | {values / t_numba / 1e6:.0f} M values/s "
        f"| {values / t_np_same / 1e6:.0f} M values/s | {t_np_same / t_numba:.1f}x | >= 150 M values/s |",
        f"| 100k x 20 batch, numpy histograms only | | {values / t_np_hist / 1e6:.0f} M values/s "
        f"| {t_np_hist / t_numba:.1f}x | |",
        f"| same, lognormal features (sigma 1.5) | {values / t_skewed / 1e6:.0f} M values/s "
        f"| {values / t_np_skewed / 1e6:.0f} M values/s | {t_np_skewed / t_skewed:.1f}x | |",
        f"| single-row update (1 x 20) | {single_numba * 1e6:.2f} us | {single_numpy * 1e6:.0f} us "
        f"| {single_numpy / single_numba:.0f}x | <= 1 us |",
        f"| drift evaluation, 1,000 features x 20 bins | {t_eval * 1e3:.1f} ms | | | <= 5 ms |",
        f"| cold start: import + fit + first update (numba cache warm) | {t_cold:.2f} s | | | |",
    ]
    report = "\n".join(lines) + "\n"
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
