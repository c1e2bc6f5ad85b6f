"""Streaming statistics for monitoring: histograms, windows, drift, outliers (numpy/numba/scipy).

Numbers only: no web, no config, no I/O beyond its own save/load. Built out by the stats issue.
"""
