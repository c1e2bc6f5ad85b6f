"""The demo model answers the real protocols (KServe V1, Open Inference V2, MLflow) consistently."""

import httpx
import pytest

from gateway.tools.demo_model import FEATURES, build_model_app
from tests.servers import AppServer

ROWS = [[2.0, 95.0, 5.0, 30.0, "basic"], [60.0, 40.0, 0.0, 10.0, "premium"]]


@pytest.fixture(scope="module")
def model():
    server = AppServer(build_model_app("churn", version="v7"))
    yield server
    server.stop()


def test_v1_predict_lists_and_objects_agree(model):
    r = httpx.post(f"{model.url}/v1/models/churn:predict", json={"instances": ROWS})
    assert r.status_code == 200
    p = r.json()["predictions"]
    assert len(p) == 2 and p[0] > 0.5 > p[1]  # short tenure, high charges churn; loyal premium stays
    objects = [dict(zip(FEATURES, row)) for row in ROWS]
    assert httpx.post(f"{model.url}/v1/models/churn:predict",
                      json={"instances": objects}).json()["predictions"] == p


def test_v2_infer_tensor_plus_bytes_and_per_feature_inputs(model):
    numeric = [v for row in ROWS for v in row[:4]]
    body = {"id": "req-1", "inputs": [
        {"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": numeric},
        {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["basic", "premium"]}]}
    r = httpx.post(f"{model.url}/v2/models/churn/infer", json=body)
    assert r.status_code == 200
    out = r.json()
    assert out["id"] == "req-1" and out["model_version"] == "v7"
    outputs = {o["name"]: o for o in out["outputs"]}
    assert outputs["predict"]["data"] == [1, 0] and outputs["predict"]["datatype"] == "INT64"
    per_feature = {"inputs": [
        {"name": f, "shape": [2], "datatype": "BYTES" if f == "plan" else "FP64",
         "data": [row[i] for row in ROWS]} for i, f in enumerate(FEATURES)]}
    again = httpx.post(f"{model.url}/v2/models/churn/infer", json=per_feature).json()
    assert {o["name"]: o for o in again["outputs"]}["probability"] == outputs["probability"]
    assert httpx.get(f"{model.url}/v2/health/ready").status_code == 200
    meta = httpx.get(f"{model.url}/v2/models/churn").json()
    assert [i["name"] for i in meta["inputs"]] == list(FEATURES)


def test_mlflow_invocations_all_formats(model):
    expected = httpx.post(f"{model.url}/v1/models/churn:predict", json={"instances": ROWS}).json()
    objects = [dict(zip(FEATURES, row)) for row in ROWS]
    bodies = [
        {"dataframe_split": {"columns": list(FEATURES), "data": ROWS}},
        {"dataframe_records": objects},
        {"instances": objects},
        {"inputs": {f: [row[i] for row in ROWS] for i, f in enumerate(FEATURES)}},
    ]
    for body in bodies:
        r = httpx.post(f"{model.url}/invocations", json=body)
        assert r.json() == expected, body
    csv = ",".join(FEATURES) + "\n" + "\n".join(",".join(str(v) for v in row) for row in ROWS)
    r = httpx.post(f"{model.url}/invocations", content=csv, headers={"content-type": "text/csv"})
    assert r.json() == expected
    r = httpx.post(f"{model.url}/invocations", content=b"{}", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error_code"] == "BAD_REQUEST"


def test_bad_inputs_get_400_with_reason(model):
    r = httpx.post(f"{model.url}/v1/models/churn:predict", json={"instances": [[1, "x", 2, 3, "basic"]]})
    assert r.status_code == 400
    assert "each row needs" in r.json()["error"]
    r = httpx.post(f"{model.url}/v2/models/churn/infer", content=b"not json")
    assert r.status_code == 400
    assert httpx.post(f"{model.url}/v2/models/other/infer", json={}).status_code == 404
    # once answered 500: a shape that is no list of sizes, a dataframe_split without data
    r = httpx.post(f"{model.url}/v2/models/churn/infer",
                   json={"inputs": [{"name": "x", "shape": "a", "data": [1, 2, 3, 4]}]})
    assert r.status_code == 400 and "shape" in r.json()["error"]
    r = httpx.post(f"{model.url}/invocations", json={"dataframe_split": {"columns": None,
                                                                         "data": None}})
    assert r.status_code == 400 and "dataframe_split" in r.json()["message"]  # MLflow's shape


def test_latency_and_error_injection():
    import time

    server = AppServer(build_model_app("churn", latency_ms=200, error_rate=0.5, seed=3))
    try:
        start = time.monotonic()
        codes = [httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": ROWS}).status_code
                 for _ in range(10)]
        assert time.monotonic() - start >= 2.0
        assert 0 < codes.count(500) < 10 and codes.count(200) + codes.count(500) == 10
    finally:
        server.stop()
