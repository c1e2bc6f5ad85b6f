"""A/B experiments and ground truth: the experiment book, feedback, the prediction store
(monitor process)."""
