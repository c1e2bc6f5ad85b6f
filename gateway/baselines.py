"""Baseline files (CSV, JSON lines) as columns: read by the monitor to fit a reference, and by
config checks (`check-config`, `serve`) to refuse a file it could not use. Imports nothing of
stats/, so checking a config costs no numba or scipy import."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson


def load_baseline_file(path: Path) -> dict[str, list] | None:
    """Columns of a CSV or JSON-lines baseline; None for npz (a saved schema + reference)."""
    if path.suffix == ".npz":
        return None
    if path.suffix in (".jsonl", ".ndjson"):
        rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
        names: dict[str, None] = {}
        for r in rows:
            names.update(dict.fromkeys(r))
        return {n: [r.get(n) for r in rows] for n in names}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return {n: [r.get(n) for r in rows] for n in reader.fieldnames or []}
