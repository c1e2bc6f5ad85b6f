"""One drift job through stats/ vs the tools people use today, same data, one run.

The job: reference and current tables of 100,000 rows x 20 numeric features, five shifted in
the current one (four means +0.2 sd, one scale x1.5). Each tool builds what it needs from the
reference, takes in the current data and says which features drifted.

  stats/      fit_baseline(reference) + StreamState.update(current) + drift.evaluate
  Evidently   Report([DataDriftPreset()]).run(current, reference)
  whylogs     profile of the current data (the part the issue times), then the drift report
              (profile of the reference + calculate_drift_scores)

The peers are not driftgate dependencies: run them from any interpreter that has them,
    pip install evidently 'pandas<3' whylogs   # into some venv
    python benchmarks/drift_vs_peers.py --peers-python /path/to/that/venv/bin/python
Every job runs in its own fresh process (imports excluded from the timing), pinned to one core;
stats/' job, after a warm-up on a tenth of the data loads its numba functions from the cache,
runs in --our-runs fresh processes and the median is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import emit, machine_line  # noqa: E402

SHIFTED = [f"f{i}" for i in range(5)]

OURS = """
import json, sys, time
import numpy as np
from stats.baseline import fit_baseline
from stats.drift import evaluate
from stats.state import StreamState
ref, cur = np.load(sys.argv[1]), np.load(sys.argv[2])
# Load every numba function from its cache on a tenth of the data (not timed).
schema, warm = fit_baseline(np.ascontiguousarray(ref[::10]))
warm_current = StreamState(schema)
warm_current.update_matrix(np.ascontiguousarray(cur[::10]))
evaluate(warm, warm_current)
t = time.perf_counter()
schema, reference = fit_baseline(ref)
current = StreamState(schema)
current.update_matrix(cur)
report = evaluate(reference, current)
elapsed = time.perf_counter() - t
print(json.dumps({"seconds": elapsed, "flagged": report.drifted_features}))
"""

EVIDENTLY = """
import json, sys, time
import numpy as np, pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
ref, cur = np.load(sys.argv[1]), np.load(sys.argv[2])
cols = [f"f{i}" for i in range(ref.shape[1])]
ref, cur = pd.DataFrame(ref, columns=cols), pd.DataFrame(cur, columns=cols)
t = time.perf_counter()
result = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref).dict()
elapsed = time.perf_counter() - t
flagged = []
for m in result["metrics"]:
    cfg = m.get("config", {})
    if cfg.get("type", "").endswith("ValueDrift") and m["value"] >= cfg.get("threshold", 0.1):
        flagged.append(cfg["column"])
print(json.dumps({"seconds": elapsed, "flagged": sorted(flagged, key=lambda c: int(c[1:]))}))
"""

WHYLOGS = """
import json, sys, time
import numpy as np, pandas as pd
import whylogs as why
from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores
ref, cur = np.load(sys.argv[1]), np.load(sys.argv[2])
cols = [f"f{i}" for i in range(ref.shape[1])]
ref, cur = pd.DataFrame(ref, columns=cols), pd.DataFrame(cur, columns=cols)
t = time.perf_counter()
current_view = why.log(cur).view()
profile_seconds = time.perf_counter() - t
reference_view = why.log(ref).view()
scores = calculate_drift_scores(target_view=current_view, reference_view=reference_view,
                                with_thresholds=True)
elapsed = time.perf_counter() - t
flagged = [c for c, s in scores.items() if s and s.get("drift_category") == "DRIFT"]
print(json.dumps({"seconds": elapsed, "profile_seconds": profile_seconds,
                  "flagged": sorted(flagged, key=lambda c: int(c[1:]))}))
"""


def run_job(python: str, code: str, ref: Path, cur: Path) -> dict:
    cmd = [python, "-c", code, str(ref), str(cur)]
    if sys.platform.startswith("linux"):
        cmd = ["taskset", "-c", "1", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers-python", default=sys.executable,
                        help="interpreter with evidently and whylogs installed")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--our-runs", type=int, default=5,
                        help="fresh processes timing stats/ (the median is reported)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    rng = np.random.default_rng(2024)
    mus, sds = rng.uniform(-5, 50, 20), rng.uniform(1, 10, 20)
    reference = rng.normal(mus, sds, (args.rows, 20))
    current = rng.normal(mus, sds, (args.rows, 20))
    current[:, :4] += 0.2 * sds[:4]
    current[:, 4] = mus[4] + (current[:, 4] - mus[4]) * 1.5
    tmp = Path(tempfile.mkdtemp(prefix="driftgate-peers-"))
    np.save(tmp / "ref.npy", reference)
    np.save(tmp / "cur.npy", current)

    # Ours takes ~25 ms, where this VM's swings are a third of the figure: the median of
    # several fresh processes (each still a single timed job) instead of one draw.
    runs = [run_job(sys.executable, OURS, tmp / "ref.npy", tmp / "cur.npy")
            for _ in range(args.our_runs)]
    ours = next((r for r in runs if "error" in r), None) or dict(
        sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2])
    if "seconds" in ours:
        ours["spread"] = (min(r["seconds"] for r in runs), max(r["seconds"] for r in runs))
    results = {"stats/ (driftgate)": ours,
               "Evidently DataDriftPreset": run_job(args.peers_python, EVIDENTLY, tmp / "ref.npy",
                                                    tmp / "cur.npy"),
               "whylogs profile + drift scores": run_job(args.peers_python, WHYLOGS,
                                                         tmp / "ref.npy", tmp / "cur.npy")}
    lines = [f"Machine: {machine_line()}; each job in its own process on CPU 1, imports excluded.",
             f"Job: {args.rows:,} x 20 reference and current, shifted: {', '.join(SHIFTED)}.", "",
             "| tool | seconds | stats/ is faster by | flags | exactly the shifted five |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | not run: {r['error'][:80]} | | | |")
            continue
        ratio = r["seconds"] / ours["seconds"] if "seconds" in ours else float("nan")
        extra = ""
        if "profile_seconds" in r:
            extra = (f" (profile of current alone {r['profile_seconds']:.2f} s: "
                     f"{r['profile_seconds'] / ours['seconds']:.0f}x)")
        faster = "-" if r is ours else f"{ratio:.0f}x"
        if "spread" in r:
            extra = (f" (median of {args.our_runs} processes, "
                     f"{r['spread'][0] * 1e3:.0f}-{r['spread'][1] * 1e3:.0f} ms)")
        exact = "yes" if r["flagged"] == SHIFTED else "no"
        lines.append(f"| {name} | {r['seconds']:.3f} | {faster}{extra} "
                     f"| {', '.join(r['flagged']) or 'none'} | {exact} |")
    report = "\n".join(lines) + "\n"
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
