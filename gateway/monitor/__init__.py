"""The monitor process: decodes captured payloads into stats/ state, evaluates, alerts.

Started by gateway.link.proxy_end as `python -P -m gateway.monitor.service`."""
