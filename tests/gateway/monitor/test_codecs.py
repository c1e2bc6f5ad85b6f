"""Codecs on real example payloads of each protocol (as in their public docs), and bad bodies."""

import gzip
import tracemalloc

import orjson
import pytest

from gateway.monitor.codecs import DecodeError, decode_request, decode_response, decompress, detect

# KServe V1 (kserve.github.io, "V1 Inference Protocol"): iris instances
KSERVE_V1 = b'{"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}'
KSERVE_V1_OUT = b'{"predictions": [1, 1]}'
# Open Inference Protocol V2 (kserve.github.io / MLServer / Triton docs)
V2 = (b'{"id": "42", "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", '
      b'"data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}]}')
V2_NAMED = (b'{"inputs": [{"name": "age", "shape": [3], "datatype": "INT32", "data": [31, 45, 22]},'
            b'{"name": "city", "shape": [3], "datatype": "BYTES", "data": ["Paris", "Oslo", "Rome"]}]}')
V2_OUT = (b'{"model_name": "iris", "model_version": "v1", "id": "42", "outputs": [{"name": '
          b'"predict", "shape": [2, 1], "datatype": "INT64", "data": [1, 1]}]}')
V2_BINARY = (b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", '
             b'"parameters": {"binary_data_size": 16}}]}')
# MLflow scoring server (mlflow.org, "Deploy MLflow models"): the four JSON shapes
MLFLOW_SPLIT = b'{"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 2, 3], [4, 5, 6]]}}'
MLFLOW_RECORDS = b'{"dataframe_records": [{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]}'
MLFLOW_INSTANCES = b'{"instances": [{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]}'
MLFLOW_INPUTS = b'{"inputs": {"a": [1, 4], "b": [2, 5], "c": [3, 6]}}'
MLFLOW_OUT = b'{"predictions": [0.1, 0.9]}'
# TF Serving REST (tensorflow.org/tfx/serving/api_rest): row and columnar formats
TF_ROWS = (b'{"signature_name": "serving_default", '
           b'"instances": [{"tag": "foo", "x": 1.0}, {"tag": "bar", "x": 2.0}]}')
TF_COLUMNS = b'{"inputs": {"tag": ["foo", "bar"], "x": [1.0, 2.0]}}'
TF_OUT = b'{"predictions": [[0.2, 0.8], [0.6, 0.4]]}'
TF_OUT_COLUMNAR = b'{"outputs": {"score": [0.8, 0.4], "label": ["b", "a"]}}'


def test_kserve_v1_rows_with_configured_names():
    cols = decode_request("kserve-v1", KSERVE_V1, "application/json",
                          ["sepal_l", "sepal_w", "petal_l", "petal_w"])
    assert cols == {"sepal_l": [6.8, 6.0], "sepal_w": [2.8, 3.4], "petal_l": [4.8, 4.5],
                    "petal_w": [1.4, 1.6]}
    assert decode_request("kserve-v1", KSERVE_V1)["f3"] == [1.4, 1.6]
    assert decode_response("kserve-v1", KSERVE_V1_OUT) == {"prediction": [1, 1]}


def test_v2_nested_flat_named_and_bytes_inputs():
    cols = decode_request("v2", V2, "application/json", ["a", "b", "c", "d"])
    assert cols == {"a": [6.8, 6.0], "b": [2.8, 3.4], "c": [4.8, 4.5], "d": [1.4, 1.6]}
    flat = V2.replace(b"[[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]",
                      b"[6.8, 2.8, 4.8, 1.4, 6.0, 3.4, 4.5, 1.6]")
    assert decode_request("v2", flat, None, ["a", "b", "c", "d"]) == cols
    assert decode_request("v2", V2_NAMED) == {"age": [31, 45, 22], "city": ["Paris", "Oslo", "Rome"]}
    assert decode_response("v2", V2_OUT) == {"predict": [1, 1]}


def test_mlflow_all_json_shapes_and_csv_agree():
    expected = {"a": [1, 4], "b": [2, 5], "c": [3, 6]}
    for body in (MLFLOW_SPLIT, MLFLOW_RECORDS, MLFLOW_INSTANCES, MLFLOW_INPUTS):
        assert decode_request("mlflow", body, "application/json") == expected, body
    csv = decode_request("mlflow", b"a,b,c\n1,2,3\n4,5,6\n", "text/csv")
    assert csv == {"a": ["1", "4"], "b": ["2", "5"], "c": ["3", "6"]}
    assert decode_response("mlflow", MLFLOW_OUT) == {"prediction": [0.1, 0.9]}


def test_tf_serving_rows_columns_and_outputs():
    expected = {"tag": ["foo", "bar"], "x": [1.0, 2.0]}
    assert decode_request("tfserving", TF_ROWS) == expected
    assert decode_request("tfserving", TF_COLUMNS) == expected
    assert decode_response("tfserving", TF_OUT) == {"prediction_0": [0.2, 0.6],
                                                    "prediction_1": [0.8, 0.4]}
    assert decode_response("tfserving", TF_OUT_COLUMNAR) == {"score": [0.8, 0.4], "label": ["b", "a"]}


def test_plain_json_rows_columns_and_path():
    assert decode_request("json", b'[{"a": 1}, {"a": 2, "b": "x"}]') == {"a": [1, 2], "b": [None, "x"]}
    assert decode_request("json", b'{"a": [1, 2], "b": [3, 4]}') == {"a": [1, 2], "b": [3, 4]}
    body = b'{"meta": {"v": 1}, "payload": {"rows": [[1, 2], [3, 4]]}}'
    cols = decode_request("json", body, None, ["x", "y"], json_path="payload.rows")
    assert cols == {"x": [1, 3], "y": [2, 4]}


def test_auto_detects_each_protocol():
    assert detect(orjson.loads(V2)) == "v2"
    assert detect(orjson.loads(MLFLOW_SPLIT)) == "mlflow"
    assert detect(orjson.loads(KSERVE_V1)) == "kserve-v1"
    assert detect(orjson.loads(b"[1, 2]")) == "json"
    for body in (KSERVE_V1, V2, MLFLOW_RECORDS, TF_COLUMNS):
        assert decode_request("auto", body), body


@pytest.mark.parametrize("protocol, body, ctype, reason", [
    ("v2", b"", "application/json", "empty_body"),
    ("v2", b"   ", None, "empty_body"),
    ("kserve-v1", KSERVE_V1[:25], "application/json", "not_json"),          # truncated
    ("v2", V2_BINARY, "application/json", "binary_extension"),
    ("v2", V2.replace(b'"shape": [2, 4]', b'"shape": [3, 4]'), None, "shape_mismatch"),
    ("v2", b'{"inputs": [{"name": "x", "shape": [1, 2, 2, 2], "data": [1,2,3,4,5,6,7,8]}]}', None,
     "unknown_shape"),
    ("kserve-v1", b'{"instances": []}', None, "no_rows"),
    ("kserve-v1", b'{"something": 1}', None, "unknown_shape"),
    ("mlflow", b"a,b\n1,2", "application/x-www-form-urlencoded", "unsupported_content_type"),
    ("json", b'{"a": [1, 2], "b": [3]}', None, "shape_mismatch"),
    ("mlflow", b"\xff\xfe,\x00", "text/csv", "bad_encoding"),
])
def test_bad_bodies_give_the_right_reason(protocol, body, ctype, reason):
    with pytest.raises(DecodeError) as exc:
        decode_request(protocol, body, ctype)
    assert exc.value.reason == reason


def test_huge_and_deeply_nested_bodies_do_not_break():
    rows = [[float(i), float(i + 1)] for i in range(50_000)]
    cols = decode_request("kserve-v1", orjson.dumps({"instances": rows}))
    assert len(cols["f0"]) == 50_000
    deep = b'{"inputs": [{"name": "x", "shape": [1], "data": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}]}"
    with pytest.raises(DecodeError):
        decode_request("v2", deep)  # orjson refuses the depth: a reason, not a crash


def test_gzip_decompressed_on_the_copy_and_bounded():
    packed = gzip.compress(V2_OUT)
    assert decompress(packed, "gzip", 1 << 20) == V2_OUT
    with pytest.raises(DecodeError) as exc:
        decompress(gzip.compress(b"0" * 100_000), "gzip", 1000)
    assert exc.value.reason == "too_large"
    with pytest.raises(DecodeError) as exc:
        decompress(b"not gzip", "gzip", 1000)
    assert exc.value.reason == "bad_encoding"


def _peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
    except DecodeError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6


def test_a_shape_cannot_claim_more_than_its_data():
    """79 bytes once made the monitor build a column name per unit of a claimed shape."""
    bomb = orjson.dumps({"inputs": [{"name": "x", "shape": [0, 10**12], "datatype": "FP32",
                                     "data": []}]})
    with pytest.raises(DecodeError) as exc:
        decode_request("v2", bomb)
    assert exc.value.reason == "no_rows"
    assert _peak_mb(lambda: decode_request("v2", bomb)) < 1
    for shape in ([1, 10**12], [-1, 2], ["2", 1], "4"):
        body = orjson.dumps({"inputs": [{"name": "x", "shape": shape, "data": [1.0, 2.0]}]})
        with pytest.raises(DecodeError) as exc:
            decode_request("v2", body)
        assert exc.value.reason == "shape_mismatch", shape


def test_wide_tensors_and_rows_keep_the_feature_cap_and_count_the_rest():
    wide = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 300], "datatype": "FP64",
                                     "data": list(range(600))}]})
    cols = decode_request("v2", wide, max_features=256)
    assert len(cols) == 256 and cols.dropped == 2 * 44
    assert cols["f255"] == [255, 555]
    rows = orjson.dumps({"instances": [{f"k{j}": j for j in range(300)} for _ in range(3)]})
    cols = decode_request("kserve-v1", rows, max_features=256)
    assert len(cols) == 256 and cols.dropped == 3 * 44
    lists = orjson.dumps({"instances": [list(range(300)), list(range(300))]})
    cols = decode_request("kserve-v1", lists, max_features=10)
    assert list(cols) == [f"f{j}" for j in range(10)] and cols.dropped == 2 * 290


def test_rows_with_differing_keys_cost_memory_linear_in_the_body():
    """20,000 object rows each with its own key (~300 KB) once built a keys x rows table
    (+1.1 GB); now the table is refused before it is built."""
    body = orjson.dumps({"instances": [{f"key{i}": i} for i in range(20_000)]})
    with pytest.raises(DecodeError) as exc:
        decode_request("kserve-v1", body)
    assert exc.value.reason == "too_sparse"
    assert _peak_mb(lambda: decode_request("kserve-v1", body)) < 40
    ragged = orjson.dumps({"instances": [list(range(200))] + [[] for _ in range(50_000)]})
    with pytest.raises(DecodeError) as exc:
        decode_request("kserve-v1", ragged)
    assert exc.value.reason == "too_sparse"
    # a few holes are normal data, and decode as such
    holes = orjson.dumps({"instances": [{"a": 1, "b": 2}, {"a": 3}, {"b": 4, "c": 5}]})
    assert decode_request("kserve-v1", holes) == {"a": [1, 3, None], "b": [2, None, 4],
                                                  "c": [None, None, 5]}


def test_configured_names_apply_to_several_tensors_in_order():
    """One [N,4] tensor plus a BYTES `plan` came out x_0..x_3, plan: the configured names
    never applied. They apply by position (by tensor, then by column) when they count as
    many as the columns; tensors the client named keep their names."""
    body = orjson.dumps({"inputs": [
        {"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6, 7, 8]},
        {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["basic", "premium"]}]})
    names = ["tenure", "charges", "calls", "usage", "plan"]
    assert decode_request("v2", body, features=names) == {
        "tenure": [1, 5], "charges": [2, 6], "calls": [3, 7], "usage": [4, 8],
        "plan": ["basic", "premium"]}
    assert list(decode_request("v2", body, features=names[:2])) == ["x_0", "x_1", "x_2", "x_3",
                                                                    "plan"]
    named = orjson.dumps({"inputs": [{"name": "b", "shape": [1], "data": [1]},
                                     {"name": "a", "shape": [1], "data": [2]}]})
    assert decode_request("v2", named, features=["a", "b"]) == {"b": [1], "a": [2]}
