"""The feedback store: a fixed ring keyed by request id; memory flat past its capacity."""

import re
import subprocess
import sys

import numpy as np

from gateway.experiments.prediction_store import (
    DUPLICATE,
    EXPIRED,
    FOUND,
    UNKNOWN,
    PredictionStore,
    request_key,
)
from tests.servers import ROOT


def put(store, ids, rows, at):
    n = sum(rows)
    store.put(np.array([request_key(i) for i in ids]), np.array(rows), np.full(len(ids), at),
              np.zeros(len(ids)), np.arange(n), np.arange(n, dtype=float), np.full(n, 0.5))


def test_rows_ttl_duplicates_and_eviction_order():
    store = PredictionStore(capacity=6, ttl=100)
    put(store, ["a", "b"], [3, 1], at=0)
    assert store.find("a", 2, now=1)[0] == FOUND and store.find("a", 3, now=1)[0] == UNKNOWN
    status, slot = store.find("b", 0, now=1)
    assert status == FOUND and store.classes[slot] == 3
    store.labelled[slot] = True
    assert store.find("b", 0, now=1)[0] == DUPLICATE
    assert store.find("a", 0, now=101)[0] == EXPIRED
    put(store, ["c", "d"], [2, 2], at=50)  # 8 rows in a ring of 6: the two oldest go
    assert store.find("a", 0, now=60)[0] == UNKNOWN and store.find("a", 1, now=60)[0] == UNKNOWN
    assert store.find("a", 2, now=60)[0] == FOUND and store.find("d", 1, now=60)[0] == FOUND
    assert store.evicted == 2 and len(store) == 6


def test_memory_stays_flat_past_capacity_under_two_million_predictions():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "feedback_store_memory.py"),
                           "--predictions", "2000000", "--capacity", "1000000"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rows = [tuple(float(x.replace(",", "")) for x in m.groups()) for m in re.finditer(
        r"^\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+(\d+)\s+(\d+)\s+[\d.]+$", done.stdout, re.M)]
    table = {int(r[0]): r for r in rows}
    assert table[2_000_000][1] == 1_000_000 and table[2_000_000][2] == 1_000_000  # held, evicted
    # numba's dict compacts once after the ring first wraps; from there the RSS is flat
    assert table[2_000_000][3] - table[1_500_000][3] <= 5
    assert table[2_000_000][4] < 300  # MB over the process without the store


def test_save_and_load_keep_rows_and_match_groups_by_name(tmp_path):
    store = PredictionStore(capacity=8, ttl=100)
    store.group("r", "control")
    gid = store.group("r", "candidate")
    store.put(np.array([request_key("a")]), np.array([2]), np.array([5.0]), np.array([gid]),
              np.array([1, 0]), np.array([0.9, 0.2]), np.array([0.9, 0.2]))
    store.labelled[store.find("a", 0, now=6)[1]] = True
    store.save(tmp_path / "p.npz")
    again = PredictionStore(capacity=8, ttl=100)
    again.group("other", "x")  # ids differ in the new process: names decide
    assert again.load(tmp_path / "p.npz")
    assert again.find("a", 0, now=6)[0] == DUPLICATE
    status, slot = again.find("a", 1, now=6)
    assert status == FOUND and again.group_names[again.groups[slot]] == ("r", "candidate")
    assert again.values[slot] == 0.2 and len(again) == 2
    assert not PredictionStore(capacity=16).load(tmp_path / "p.npz")  # another capacity: fresh


def test_a_save_writes_the_used_part_of_the_ring_and_loads_whole(tmp_path):
    store = PredictionStore(capacity=1000, ttl=100)
    put(store, ["a", "b"], [3, 2], at=0)
    store.save(tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz") as z:
        assert z["keys"].shape == (5,)  # five rows written, not the thousand slots
    again = PredictionStore(capacity=1000, ttl=100)
    assert again.load(tmp_path / "p.npz")
    assert again.find("a", 2, now=1)[0] == FOUND and again.find("b", 1, now=1)[0] == FOUND
    put(again, ["c"], [1], at=2)  # the ring goes on where it stopped
    assert again.find("c", 0, now=3)[0] == FOUND and again.find("a", 0, now=3)[0] == FOUND
    small = PredictionStore(capacity=4, ttl=100)
    put(small, ["x", "y", "z"], [2, 2, 2], at=0)  # wrapped: every slot is saved
    small.save(tmp_path / "s.npz")
    back = PredictionStore(capacity=4, ttl=100)
    assert back.load(tmp_path / "s.npz")
    assert [back.find(k, r, now=1)[0] for k, r in (("y", 0), ("z", 1), ("x", 0))] == [
        FOUND, FOUND, UNKNOWN]
