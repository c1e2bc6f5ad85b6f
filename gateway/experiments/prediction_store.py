"""The predictions waiting for their ground truth: a fixed-size ring, keyed by request id.

Each prediction row the monitor decodes is kept (route x variant, time, predicted class,
value, score) until its label arrives, the ring wraps over it (capacity, default 1,000,000
rows; counted as an eviction) or it is older than the TTL (default 24 h; answered 410).
Request ids are hashed to 64 bits (row i of a request: the id's hash plus i times an odd
constant), so memory is fixed: 37 bytes of arrays per row plus numba's typed dict. Measured with
benchmarks/feedback_store_memory.py: the process grows by ~180 MB at the default capacity
(numba's compiled code included) and stays there however many predictions follow.
"""

from __future__ import annotations

import hashlib

import numba
import numpy as np
from numba import types
from numba.typed import Dict

from stats.state import write_npz

ROW_STRIDE = np.int64(-7046029254386353131)  # 0x9E3779B97F4A7C15 as int64: spreads row keys
EMPTY = np.int64(0)

FOUND, UNKNOWN, EXPIRED, DUPLICATE = 0, 1, 2, 3


def request_key(request_id: str | bytes) -> int:
    """64-bit key of a request id (never 0, which marks an empty slot)."""
    if isinstance(request_id, str):
        request_id = request_id.encode()
    key = int.from_bytes(hashlib.blake2b(request_id, digest_size=8).digest(), "little", signed=True)
    return key or 1


def row_key(base: int, row: int) -> int:
    """What _put computes in int64 arithmetic (wrapping), in Python ints."""
    key = (base + row * int(ROW_STRIDE)) & 0xFFFFFFFFFFFFFFFF
    key = key - (1 << 64) if key >= 1 << 63 else key
    return key or 1


@numba.njit(cache=True)
def _put(index, keys, times, groups, classes, values, scores, confidences, labelled, head,
         capacity, base_keys, rows, at, group, klass, value, score, confidence):
    evicted = 0
    j = 0
    for i in range(base_keys.size):
        for r in range(rows[i]):
            key = base_keys[i] + np.int64(r) * ROW_STRIDE
            if key == EMPTY:
                key = np.int64(1)
            slot = head
            old = keys[slot]
            if old != EMPTY:
                if index.get(old, -1) == slot:
                    del index[old]
                    if not labelled[slot]:
                        evicted += 1
            keys[slot] = key
            times[slot] = at[i]
            groups[slot] = group[i]
            classes[slot] = klass[j]
            values[slot] = value[j]
            scores[slot] = score[j]
            confidences[slot] = confidence[j]
            labelled[slot] = False
            index[key] = slot
            head = (head + 1) % capacity
            j += 1
    return head, evicted


@numba.njit(cache=True)
def _reindex(index, keys) -> None:
    for slot in range(keys.size):
        if keys[slot] != EMPTY:
            index[keys[slot]] = slot


class PredictionStore:
    def __init__(self, capacity: int = 1_000_000, ttl: float = 86_400.0) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self.keys = np.zeros(capacity, np.int64)
        self.times = np.zeros(capacity, np.float64)
        self.groups = np.zeros(capacity, np.int32)   # route x variant, see `group_names`
        self.classes = np.zeros(capacity, np.int32)  # predicted class, -1 when not a class
        self.values = np.zeros(capacity, np.float64)  # the prediction itself
        self.scores = np.zeros(capacity, np.float32)  # P(class 1), NaN when not a probability
        # multi-class: the probability of the predicted class (NaN otherwise)
        self.confidence = np.zeros(capacity, np.float32)
        self.labelled = np.zeros(capacity, np.bool_)
        self.index = Dict.empty(types.int64, types.int64)
        self.head = 0
        self.filled = 0  # slots ever written: the ring's used prefix, all once it wrapped
        self.evicted = 0
        self.group_names: list[tuple[str, str]] = []
        self._group_ids: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self.index)

    def group(self, route: str, variant: str) -> int:
        gid = self._group_ids.get((route, variant))
        if gid is None:
            gid = self._group_ids[(route, variant)] = len(self.group_names)
            self.group_names.append((route, variant))
        return gid

    def put(self, base_keys: np.ndarray, rows: np.ndarray, at: np.ndarray, groups: np.ndarray,
            classes: np.ndarray, values: np.ndarray, scores: np.ndarray,
            confidence: np.ndarray | None = None) -> None:
        """Requests (base key, row count, time, group), then their rows' predictions."""
        before = self.head
        if confidence is None:
            confidence = np.full(classes.size, np.nan)
        self.head, evicted = _put(
            self.index, self.keys, self.times, self.groups, self.classes, self.values, self.scores,
            self.confidence, self.labelled, self.head, self.capacity, base_keys.astype(np.int64),
            rows.astype(np.int64), at.astype(np.float64), groups.astype(np.int32),
            classes.astype(np.int32), values.astype(np.float64), scores.astype(np.float32),
            confidence.astype(np.float32))
        self.evicted += evicted
        wrapped = self.head < before or int(rows.sum()) >= self.capacity
        self.filled = self.capacity if wrapped else max(self.filled, self.head)

    # -- persistence: a clean stop keeps the predictions still waiting for labels -----------
    _ARRAYS = ("keys", "times", "groups", "classes", "values", "scores", "confidence",
               "labelled")

    def save(self, path) -> None:
        """The used prefix of the ring (all of it once it wrapped: 37 MB at 1,000,000 rows)."""
        n = self.filled
        write_npz(path, {"head": np.array(self.head), "evicted": np.array(self.evicted),
                         "capacity": np.array(self.capacity),
                         "group_names": np.array(["\t".join(g) for g in self.group_names] or [""]),
                         **{name: getattr(self, name)[:n] for name in self._ARRAYS}},
                  compress=False)  # uncompressed: 37 MB at the cap, written in ~50 ms

    def load(self, path) -> bool:
        """Bring back a saved store of the same capacity; groups are matched by name."""
        if not path.exists():
            return False
        with np.load(path) as z:
            capacity = int(z["capacity"]) if "capacity" in z else z["keys"].shape[0]
            if capacity != self.capacity:
                return False
            n = z["keys"].shape[0]
            for name in self._ARRAYS:
                # (a store saved before `confidence` existed: unknown, NaN)
                getattr(self, name)[:n] = z[name] if name in z.files else np.nan
            self.head, self.evicted, self.filled = int(z["head"]), int(z["evicted"]), n
            saved = [tuple(str(g).split("\t")) for g in z["group_names"] if str(g)]
        remap = np.array([self.group(route, variant) for route, variant in saved] or [0], np.int32)
        self.groups[:] = remap[self.groups]
        _reindex(self.index, self.keys)
        return True

    def find(self, request_id: str, row: int, now: float) -> tuple[int, int]:
        """(status, slot) of one prediction row: FOUND, UNKNOWN, EXPIRED or DUPLICATE."""
        slot = self.index.get(row_key(request_key(request_id), row), -1)
        if slot < 0:
            return UNKNOWN, -1
        if now - self.times[slot] > self.ttl:
            return EXPIRED, slot
        if self.labelled[slot]:
            return DUPLICATE, slot
        return FOUND, slot
