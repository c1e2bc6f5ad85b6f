"""The typed contract between the proxy process and the monitor process.

Both processes import this package; neither imports the other's."""
