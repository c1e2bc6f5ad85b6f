"""Reading the monitor's state files (`state_dir`) so that a bad one never stops the gateway.

A power cut, a full disk or a hand edit can leave a state file empty, truncated or garbage.
Such a file is moved aside as `<name>.corrupt-<unix time>`, logged with its path and reason,
and the state starts anew: monitoring resumes at once instead of crash-looping. (Writing is
durable: stats.state.atomic_file fsyncs the file and its folder around the rename.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from gateway.logs import get_logger
from stats.state import atomic_file


def load_or_set_aside(path: Path, load: Callable[[], bool],
                      reset: Callable[[], None] | None = None) -> bool:
    """`load()` of the state in `path`; when it fails on the file's content: set the file
    aside, `reset()` whatever the failed load may have half filled, and return False."""
    if not path.exists():
        return False
    try:
        return load()
    except Exception as exc:  # any parse failure: a zip, npz or JSON error, a missing key
        if reset is not None:
            reset()
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        try:
            path.replace(aside)
        except OSError as move_error:
            get_logger().error("unreadable state file, and it cannot be moved aside",
                               path=str(path), error=str(exc), move_error=str(move_error))
            return False
        get_logger().error("unreadable state file set aside; starting without it",
                           path=str(path), moved_to=str(aside),
                           error=f"{type(exc).__name__}: {exc}"[:300])
        return False


def write_atomic(path: Path, data: bytes) -> None:
    """`data` in `path`, whole or not at all (stats.state.atomic_file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as fh:
        fh.write(data)
