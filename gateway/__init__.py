"""driftgate's running service: the proxy, config, metrics, admin API, CLI and demo."""

__version__ = "0.1.0"
