"""Does the feedback store stay within its cap? RSS while predictions stream in.

Predictions go into gateway.experiments.prediction_store.PredictionStore the way the monitor process puts
them (batches of captures, request ids hashed), far past its capacity; the process's resident
memory is sampled as it goes. Past the capacity the ring overwrites the oldest rows: memory
must stay flat, evictions counted.

    python benchmarks/feedback_store_memory.py [--predictions 2000000] [--capacity 1000000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from gateway.experiments.prediction_store import PredictionStore, request_key


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def fill(predictions: int, capacity: int, batch: int = 2000, report_every: int = 250_000):
    """Yields (predictions so far, rows held, evicted, RSS MB, seconds)."""
    store = PredictionStore(capacity)
    started = time.perf_counter()
    ones = np.ones(batch, np.int64)
    for start in range(0, predictions, batch):
        keys = np.array([request_key(f"req-{i}") for i in range(start, start + batch)], np.int64)
        store.put(keys, ones, np.full(batch, time.time()), np.zeros(batch, np.int32),
                  np.zeros(batch, np.int32), np.random.random(batch), np.random.random(batch))
        done = start + batch
        if done % report_every == 0:
            yield done, len(store), store.evicted, rss_mb(), time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictions", type=int, default=2_000_000)
    ap.add_argument("--capacity", type=int, default=1_000_000)
    args = ap.parse_args()
    before = rss_mb()
    print(f"capacity {args.capacity:,} rows; process RSS before the store: {before:.0f} MB")
    print(f"{'predictions':>12} {'rows held':>10} {'evicted':>10} {'RSS MB':>8} {'store MB':>9} "
          f"{'seconds':>8}")
    for done, held, evicted, rss, secs in fill(args.predictions, args.capacity):
        print(f"{done:>12,} {held:>10,} {evicted:>10,} {rss:>8.0f} {rss - before:>9.0f} {secs:>8.1f}")


if __name__ == "__main__":
    main()
