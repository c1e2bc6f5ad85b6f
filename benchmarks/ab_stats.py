"""stats/ of the working tree against stats/ at a git ref, timed in one process, interleaved.

    python benchmarks/ab_stats.py [--ref HEAD~1] [--rounds 40] [--out FILE]

This VM's speed drifts by up to a third within minutes, more than most changes move the
kernels, and it has no CPU counters (`perf stat` is not supported). Two versions timed in
separate runs therefore tell little; here both are imported into one process (the ref's copy
as a renamed package) and their timings alternate round by round, so a slow stretch slows both.
Jobs: a 100k x 20 batch (1% NaN) of normal and of lognormal features, a single row, and a
1,000-feature evaluation. Pinned to one core. Reports min / median per version and their ratio.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import emit, machine_line  # noqa: E402


def import_ref(ref: str, into: Path) -> str:
    """stats/ at `ref` as the package `stats_ref` under `into`; returns its name."""
    archive = subprocess.run(["git", "archive", ref, "stats"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "stats").rename(into / "stats_ref")
    for path in (into / "stats_ref").glob("*.py"):
        text = re.sub(r"\b(from|import) stats\b", r"\1 stats_ref", path.read_text())
        path.write_text(text)
    sys.path.insert(0, str(into))
    return "stats_ref"


def jobs(pkg: str, rng_seed: int = 0) -> dict:
    """The timed callables of one version, on the same data for every version."""
    fit = importlib.import_module(f"{pkg}.baseline").fit_baseline
    state_cls = importlib.import_module(f"{pkg}.state").StreamState
    evaluate = importlib.import_module(f"{pkg}.drift").evaluate
    rng = np.random.default_rng(rng_seed)
    n, f = 100_000, 20
    mus, sds = rng.uniform(-5, 50, f), rng.uniform(1, 10, f)
    out = {}
    for name, draw in (("batch normal", lambda: rng.normal(mus, sds, (n, f))),
                       ("batch lognormal", lambda: rng.lognormal(0, 1.5, (n, f)))):
        schema, _ = fit(draw())
        x = draw()
        x[rng.random(x.shape) < 0.01] = np.nan
        state = state_cls(schema)
        out[name] = (lambda s=state, x=x: s.update_matrix(x), n * f / 1e6, "M values/s")
        if name == "batch normal":
            row, single = x[:1].copy(), state_cls(schema)
            out["single row"] = (lambda s=single, r=row: [s.update_matrix(r) for _ in range(2000)],
                                 2000, "us", )
    wide, _ = fit(rng.normal(0, 1, (5_000, 1000)))
    ref, cur = state_cls(wide), state_cls(wide)
    ref.update_matrix(rng.normal(0, 1, (5_000, 1000)))
    cur.update_matrix(rng.normal(0.05, 1, (2_000, 1000)))
    out["evaluate 1,000 features"] = (lambda: evaluate(ref, cur), 1, "ms")
    return out


def figure(seconds: float, size: float, unit: str) -> float:
    if unit == "M values/s":
        return size / seconds
    return seconds / size * (1e6 if unit == "us" else 1e3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default="HEAD", help="git ref to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory(prefix="driftgate-ab-") as tmp:
        versions = {"working tree": jobs("stats"), args.ref: jobs(import_ref(args.ref, Path(tmp)))}
        for version in versions.values():  # compile or load every kernel before timing
            for fn, _, _ in version.values():
                fn()
        times = {(v, j): [] for v in versions for j in versions[v]}
        for _ in range(args.rounds):
            for job in versions["working tree"]:
                for v, version in versions.items():
                    fn = version[job][0]
                    t = time.perf_counter()
                    fn()
                    times[v, job].append(time.perf_counter() - t)
    lines = [f"Machine: {machine_line()}; pinned to one core; {args.rounds} interleaved rounds.",
             "", f"| job | working tree (min / median) | {args.ref} (min / median) | ratio of medians |",
             "|---|---|---|---|"]
    for job, (_, size, unit) in versions["working tree"].items():
        cells, medians = [], []
        for v in versions:
            ts = times[v, job]
            best = figure(min(ts), size, unit)
            med = figure(statistics.median(ts), size, unit)
            medians.append(med)
            cells.append(f"{best:.3g} / {med:.3g} {unit}")
        better = medians[0] / medians[1] if unit == "M values/s" else medians[1] / medians[0]
        lines.append(f"| {job} | {cells[0]} | {cells[1]} | {better:.2f}x faster |")
    emit("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
