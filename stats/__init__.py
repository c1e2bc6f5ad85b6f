"""Streaming statistics for monitoring: numba histograms, windows, drift, outliers, quality.

Numbers only (numpy, numba, scipy): no web, no config, no I/O beyond its own save/load.

    schema, reference = fit_baseline(training_rows)        # bins, ranges, HBOS from a baseline
    window = SlidingWindow(schema, slices=60, slice_seconds=5)
    window.update(batch)                                   # rows, objects, columns or a matrix
    report = evaluate(reference, window.state(last=6))     # the last 30 s against the baseline
    report.drifted_features, report.integrity_features, report.to_dict()

States on one schema merge exactly (`a + b`): histograms add, moments combine by Chan's
formula, so workers, replicas and time slices sum to the state of the whole stream.
"""

from stats.baseline import fit_baseline
from stats.drift import DriftConfig, DriftReport, evaluate
from stats.schema import FeatureSpec, Schema
from stats.state import StreamState, load_states, save_states
from stats.window import FrozenReference, SlidingWindow

__all__ = ["DriftConfig", "DriftReport", "FeatureSpec", "FrozenReference", "Schema",
           "SlidingWindow", "StreamState", "evaluate", "fit_baseline", "load_states",
           "save_states"]
