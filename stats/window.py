"""Windows over time: a ring of time slices with an injected clock, and a frozen reference.

The current window is the merge of its live slices. A slice belongs to the time step
floor(t / slice_seconds); a slot is reused (reset) when a later step lands on it, and slices
older than the window are never counted, so a quiet hour leaves an empty window, not stale data.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from stats.schema import Schema
from stats.state import StreamState
from stats.table import to_batch


class SlidingWindow:
    def __init__(self, schema: Schema, slices: int = 60, slice_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if slices < 1 or slice_seconds <= 0:
            raise ValueError("a window needs at least one slice of positive length")
        self.schema = schema
        self.slices = slices
        self.slice_seconds = slice_seconds
        self.clock = clock
        self._states = [StreamState(schema) for _ in range(slices)]
        self._steps = np.full(slices, -(2 ** 62), dtype=np.int64)  # time step each slot holds

    @property
    def span_seconds(self) -> float:
        return self.slices * self.slice_seconds

    def _step(self, now: float | None) -> int:
        return math.floor((self.clock() if now is None else now) / self.slice_seconds)

    def slice_for(self, now: float | None = None) -> StreamState:
        """The state of the slice `now` falls in, reset first if its slot held an older one."""
        step = self._step(now)
        slot = step % self.slices
        if self._steps[slot] != step:
            self._states[slot].reset()
            self._steps[slot] = step
        return self._states[slot]

    def update(self, data, now: float | None = None) -> None:
        self.slice_for(now).update(data)

    def update_matrix(self, x: np.ndarray, now: float | None = None) -> None:
        self.slice_for(now).update_matrix(x)

    def state(self, now: float | None = None, last: int | None = None) -> StreamState:
        """Merged state of the live slices: the whole window, or only its `last` slices."""
        step = self._step(now)
        span = self.slices if last is None else max(1, min(last, self.slices))
        live = [self._states[i] for i in range(self.slices)
                if step - span < self._steps[i] <= step]
        return StreamState.merged(self.schema, live)

    def snapshot(self) -> tuple[np.ndarray, list[StreamState]]:
        """(time step of each slot, slot states): what `restore` takes back, e.g. after a restart."""
        return self._steps.copy(), list(self._states)

    def restore(self, steps: np.ndarray, states: list[StreamState]) -> None:
        if len(states) != self.slices or len(steps) != self.slices:
            raise ValueError(f"snapshot of {len(states)} slices, window has {self.slices}")
        self._steps[:] = steps
        self._states = [st.copy() for st in states]

    def live_slices(self, now: float | None = None) -> int:
        step = self._step(now)
        return int(((self._steps > step - self.slices) & (self._steps <= step)).sum())


class FrozenReference:
    """A reference learned from the first `rows` rows of traffic, then frozen."""

    def __init__(self, schema: Schema, rows: int) -> None:
        self.state = StreamState(schema)
        self.target = rows

    @property
    def frozen(self) -> bool:
        return self.state.n_rows >= self.target

    def update(self, data) -> None:
        if self.frozen:
            return
        batch = to_batch(data, self.state.schema)
        room = self.target - self.state.n_rows
        if batch.matrix.shape[0] > room:
            batch.matrix = batch.matrix[:room]
        self.state.update(batch)


class VectorWindow:
    """A ring of time slices of one flat vector (e.g. a stats.quality tally): same stepping
    rules as SlidingWindow, for state that is a plain sum."""

    def __init__(self, size: int, slices: int = 60, slice_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if slices < 1 or slice_seconds <= 0:
            raise ValueError("a window needs at least one slice of positive length")
        self.slices = slices
        self.slice_seconds = slice_seconds
        self.clock = clock
        self.data = np.zeros((slices, size))
        self.steps = np.full(slices, -(2 ** 62), dtype=np.int64)

    def _step(self, now: float | None) -> int:
        return math.floor((self.clock() if now is None else now) / self.slice_seconds)

    def slice_for(self, now: float | None = None) -> np.ndarray:
        """The slice vector `now` falls in (a view, add to it), reset if its slot was older."""
        step = self._step(now)
        slot = step % self.slices
        if self.steps[slot] != step:
            self.data[slot] = 0.0
            self.steps[slot] = step
        return self.data[slot]

    def total(self, now: float | None = None, last: int | None = None) -> np.ndarray:
        step = self._step(now)
        span = self.slices if last is None else max(1, min(last, self.slices))
        live = (self.steps > step - span) & (self.steps <= step)
        return self.data[live].sum(axis=0)
