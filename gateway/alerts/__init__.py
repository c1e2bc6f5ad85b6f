"""Alert rules and the sinks that deliver their notifications (monitor process)."""
