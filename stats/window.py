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


class _SliceRing:
    """The stepping both windows share: which slot a time falls in, and which slots are live."""

    def __init__(self, slices: int, slice_seconds: float, clock: Callable[[], float]) -> None:
        if slices < 1 or slice_seconds <= 0:
            raise ValueError("a window needs at least one slice of positive length")
        self.slices = slices
        self.slice_seconds = slice_seconds
        self.clock = clock
        self.steps = np.full(slices, -(2 ** 62), dtype=np.int64)  # time step each slot holds

    @property
    def span_seconds(self) -> float:
        return self.slices * self.slice_seconds

    def _step(self, now: float | None) -> int:
        return math.floor((self.clock() if now is None else now) / self.slice_seconds)

    def _claim(self, now: float | None) -> tuple[int, bool]:
        """(slot of `now`'s slice, whether it held an older slice and must be reset first)."""
        step = self._step(now)
        slot = step % self.slices
        stale = self.steps[slot] != step
        self.steps[slot] = step
        return slot, stale

    def _live(self, now: float | None, last: int | None = None) -> np.ndarray:
        """Mask of the slots in the window ending at `now` (or in its `last` slices)."""
        step = self._step(now)
        span = self.slices if last is None else max(1, min(last, self.slices))
        return (self.steps > step - span) & (self.steps <= step)

    def live_slices(self, now: float | None = None) -> int:
        return int(self._live(now).sum())


class SlidingWindow(_SliceRing):
    def __init__(self, schema: Schema, slices: int = 60, slice_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(slices, slice_seconds, clock)
        self.schema = schema
        self._states = [StreamState(schema) for _ in range(slices)]

    def slice_for(self, now: float | None = None) -> StreamState:
        """The state of the slice `now` falls in, reset first if its slot held an older one."""
        slot, stale = self._claim(now)
        if stale:
            self._states[slot].reset()
        return self._states[slot]

    def update(self, data, now: float | None = None) -> None:
        self.slice_for(now).update(data)

    def update_matrix(self, x: np.ndarray, now: float | None = None) -> None:
        self.slice_for(now).update_matrix(x)

    def state(self, now: float | None = None, last: int | None = None) -> StreamState:
        """Merged state of the live slices: the whole window, or only its `last` slices."""
        live = self._live(now, last)
        return StreamState.merged(self.schema, [st for st, on in zip(self._states, live) if on])

    def snapshot(self) -> tuple[np.ndarray, list[StreamState]]:
        """(time step of each slot, slot states): what `restore` takes back, e.g. after a restart."""
        return self.steps.copy(), list(self._states)

    def restore(self, steps: np.ndarray, states: list[StreamState]) -> None:
        if len(states) != self.slices or len(steps) != self.slices:
            raise ValueError(f"snapshot of {len(states)} slices, window has {self.slices}")
        self.steps[:] = steps
        self._states = [st.copy() for st in states]


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


class VectorWindow(_SliceRing):
    """A ring of time slices of one flat vector (e.g. a stats.quality tally): same stepping
    rules as SlidingWindow, for state that is a plain sum."""

    def __init__(self, size: int, slices: int = 60, slice_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(slices, slice_seconds, clock)
        self.data = np.zeros((slices, size))

    def slice_for(self, now: float | None = None) -> np.ndarray:
        """The slice vector `now` falls in (a view, add to it), reset if its slot was older."""
        slot, stale = self._claim(now)
        if stale:
            self.data[slot] = 0.0
        return self.data[slot]

    def slice_at(self, t: float) -> np.ndarray | None:
        """The slice holding time `t` if it still does (not reused since, never claimed here:
        for late additions, e.g. a label for an earlier prediction); else None."""
        step = self._step(t)
        slot = step % self.slices
        return self.data[slot] if self.steps[slot] == step else None

    def total(self, now: float | None = None, last: int | None = None) -> np.ndarray:
        return self.data[self._live(now, last)].sum(axis=0)
