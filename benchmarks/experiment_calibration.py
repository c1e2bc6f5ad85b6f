"""Are driftgate's A/B tests honest? Simulated experiments, the table in the README.

A/A (no true difference): the fixed-horizon test must be wrong ~5% of the time at the end;
checking it after every batch ("peeking") inflates that, the always-valid sequential test
(mSPRT) stays <= 5% however often it is looked at. A/B with a real accuracy difference: the
power of each. Everything runs through stats.experiments, vectorized over experiments.

    python benchmarks/experiment_calibration.py [--experiments 2000] [--looks 20] [--batch 250]
"""

from __future__ import annotations

import argparse

import numpy as np

from stats.experiments import ALPHA, msprt_p_value, two_proportions


def simulate(p_control: float, p_candidate: float, experiments: int = 2000, looks: int = 20,
             batch: int = 250, tau: float = 0.02, seed: int = 0) -> dict[str, float]:
    """Share of experiments declared significant: at the end (fixed horizon), at any look
    (peeking at the fixed test), and by the sequential test at any look."""
    rng = np.random.default_rng(seed)
    n = batch * np.arange(1, looks + 1)
    x_a = rng.binomial(batch, p_control, (experiments, looks)).cumsum(1)
    x_b = rng.binomial(batch, p_candidate, (experiments, looks)).cumsum(1)
    effect, se, _, p = two_proportions(x_a, n, x_b, n)
    sequential = np.minimum.accumulate(msprt_p_value(effect, se, tau), axis=1)
    return {"fixed": float((p[:, -1] < ALPHA).mean()), "peeking": float((p < ALPHA).any(1).mean()),
            "sequential": float((sequential[:, -1] < ALPHA).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=2000)
    ap.add_argument("--looks", type=int, default=20)
    ap.add_argument("--batch", type=int, default=250)
    args = ap.parse_args()
    per_arm = args.looks * args.batch
    print(f"{args.experiments} simulated experiments per row, accuracy 0.85 for the control, "
          f"{args.looks} looks of {args.batch} labels per variant ({per_arm} in all), "
          f"alpha {ALPHA}, mSPRT tau 0.02")
    print("share declared significant (A/A: false positives; otherwise: power)")
    print(f"{'candidate':<10} {'truth':<7} {'fixed, at the end':>18} {'fixed, any look':>16} "
          f"{'sequential, any look':>21}")
    for p_b, truth in ((0.85, "A/A"), (0.86, "+1 pt"), (0.87, "+2 pts"), (0.88, "+3 pts")):
        r = simulate(0.85, p_b, args.experiments, args.looks, args.batch)
        print(f"{p_b:<10} {truth:<7} {r['fixed']:>18.1%} {r['peeking']:>16.1%} "
              f"{r['sequential']:>21.1%}")


if __name__ == "__main__":
    main()
