"""Prometheus exposition after a known number of requests, parsed as Prometheus would."""

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import GatewayServer, free_port, gateway_yaml


def scrape(admin_url: str) -> dict[str, list]:
    text = httpx.get(f"{admin_url}/metrics").text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples, name, **labels):
    found = [s.value for s in samples if s.name == name
             and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_counts_durations_sizes_and_errors(echo):
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = gateway_yaml({"echo": echo.url, "dead": dead},
                       [("model", "/v1/models/m", "echo"), ("gone", "/gone", "dead")])
    server = GatewayServer(cfg)
    try:
        with httpx.Client() as c:
            for _ in range(7):
                assert c.post(f"{server.url}/v1/models/m:predict", content=b"x" * 100).status_code == 200
            for _ in range(3):
                assert c.get(f"{server.url}/v1/models/m/status/503").status_code == 503
            for _ in range(2):
                assert c.post(f"{server.url}/gone", content=b"{}").status_code == 502
            assert c.get(f"{server.url}/unrouted").status_code == 404
        m = scrape(server.admin_url)
        req = m["driftgate_requests"]
        assert value(req, "driftgate_requests_total", route="model", variant="echo", upstream="echo",
                     method="POST", code="200") == 7
        assert value(req, "driftgate_requests_total", route="model", method="GET", code="503") == 3
        assert value(req, "driftgate_requests_total", route="gone", upstream="dead", code="502") == 2
        assert not any(s.labels.get("route") not in ("model", "gone") for s in req), \
            "unrouted paths must not create series"
        dur = m["driftgate_request_duration_seconds"]
        assert value(dur, "driftgate_request_duration_seconds_count", route="model",
                     code_class="2xx") == 7
        assert value(dur, "driftgate_request_duration_seconds_count", route="model",
                     code_class="5xx") == 3
        buckets = [s for s in dur if s.name.endswith("_bucket") and s.labels["code_class"] == "2xx"]
        assert min(float(s.labels["le"]) for s in buckets) == 0.0005
        assert value(dur, "driftgate_request_duration_seconds_bucket", route="model",
                     code_class="2xx", le="10.0") == 7
        up = m["driftgate_upstream_duration_seconds"]
        assert value(up, "driftgate_upstream_duration_seconds_count", route="model", upstream="echo") == 10
        errors = m["driftgate_upstream_errors"]
        assert value(errors, "driftgate_upstream_errors_total", upstream="dead", kind="connect") == 2
        size = m["driftgate_request_size_bytes"]
        assert value(size, "driftgate_request_size_bytes_sum", route="model") == 700
        assert value(size, "driftgate_request_size_bytes_count", route="model") == 10
        assert value(m["driftgate_requests_in_flight"], "driftgate_requests_in_flight",
                     route="model") == 0
        assert value(m["driftgate_unrouted_requests"], "driftgate_unrouted_requests_total") == 1
        build = [s for s in m["driftgate_build_info"] if s.name == "driftgate_build_info"]
        assert build and build[0].labels["version"]
    finally:
        server.stop()


def test_in_flight_gauge_counts_a_slow_request(echo):
    import threading

    server = GatewayServer(gateway_yaml({"echo": echo.url}, [("slow", "/slow", "echo")]))
    try:
        t = threading.Thread(target=lambda: httpx.get(f"{server.url}/slow?delay=1", timeout=5))
        t.start()
        import time
        time.sleep(0.4)
        m = scrape(server.admin_url)
        assert value(m["driftgate_requests_in_flight"], "driftgate_requests_in_flight", route="slow") == 1
        t.join()
        m = scrape(server.admin_url)
        assert value(m["driftgate_requests_in_flight"], "driftgate_requests_in_flight", route="slow") == 0
    finally:
        server.stop()
