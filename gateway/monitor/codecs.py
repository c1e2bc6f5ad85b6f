"""Read features (inputs) and predictions (outputs) out of the payloads the gateway carries.

Works on the monitoring copy only, off the request path. Every decoder returns a table as
columns ({name: [values]}) or raises DecodeError with a reason from a small fixed set (it labels
a metric). Feature names come from the payload (object keys, V2 input names, dataframe
columns) or, for positional rows, from the route's `features:` list, else `f0, f1, ...`.

Protocols: kserve-v1 (`instances` / `inputs` -> `predictions`), v2 (Open Inference Protocol:
KServe V2, Triton, MLServer), mlflow (`/invocations`: dataframe_split, dataframe_records,
instances, inputs, text/csv), tfserving (`instances` rows, `inputs` columns ->
`predictions` / `outputs`), json (a list of objects, an object of columns, or a dotted path),
and auto (by the shape of the body).

Decoding costs time and memory linear in the bytes carried, whatever the payload claims: at
most `max_features` columns (values under further names are dropped and counted in
`Columns.dropped`), a tensor's shape is checked against its data before anything is built, and
a table of rows whose keys or widths differ is refused (`too_sparse`) when its cells would
outnumber the values present several times over.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Sequence

import orjson

PROTOCOLS = ("auto", "kserve-v1", "v2", "mlflow", "tfserving", "json")
REASONS = ("empty_body", "too_large", "not_json", "binary_extension", "bad_encoding",
           "unsupported_content_type", "unknown_shape", "shape_mismatch", "no_rows", "streamed",
           "too_sparse")
MAX_FEATURES = 256
# A ragged or keyed table may hold this many cells per value present (plus a little): beyond
# it the payload is mostly holes, and building it would cost far more than its bytes.
SPARSE_CELLS_PER_VALUE = 4
SPARSE_SLACK = 4096


class Columns(dict):
    """{name: [values]}; `dropped`: values under names past the feature cap, not decoded."""

    dropped = 0


def _capped(columns: dict, dropped: int) -> Columns:
    out = Columns(columns)
    out.dropped = dropped
    return out


def _check_dense(cells: int, present: int) -> None:
    if cells > SPARSE_CELLS_PER_VALUE * present + SPARSE_SLACK:
        raise DecodeError("too_sparse", f"{cells} cells for {present} values")


class DecodeError(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _json(body: bytes):
    if not body or not body.strip():
        raise DecodeError("empty_body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("not_json", str(exc)[:80]) from None


def _names(width: int, configured: Sequence[str] | None, prefix: str = "f") -> list[str]:
    if configured and len(configured) >= width:
        return list(configured[:width])
    return [f"{prefix}{i}" for i in range(width)]  # callers cap `width` first


def rows_to_columns(rows: list, configured: Sequence[str] | None = None,
                    scalar_name: str = "f0", max_features: int = MAX_FEATURES) -> Columns:
    """Rows as objects (by key), lists (positional) or scalars (one column)."""
    if not isinstance(rows, list):
        raise DecodeError("unknown_shape", "expected a list of rows")
    if not rows:
        raise DecodeError("no_rows")
    first = rows[0]
    if isinstance(first, dict):
        return _object_rows(rows, max_features)
    if isinstance(first, list):
        width = len(first)
        if width <= max_features and all(type(r) is list and len(r) == width for r in rows):
            # the common case: one C-level transpose. Nested values (an image, a sequence)
            # pass through and are counted as wrong-typed by stats/.
            return dict(zip(_names(width, configured), map(list, zip(*rows))))
        return _ragged_rows(rows, configured, max_features)
    return {configured[0] if configured else scalar_name: rows}


def _object_rows(rows: list, max_features: int) -> Columns:
    keys: dict[str, None] = {}
    present = dropped = 0
    for r in rows:
        if not isinstance(r, dict):
            continue
        present += len(r)
        for k in r:
            if k not in keys:
                if len(keys) < max_features:
                    keys[k] = None
                else:
                    dropped += 1
    _check_dense(len(keys) * len(rows), present)
    return _capped({k: [r.get(k) if isinstance(r, dict) else None for r in rows] for k in keys},
                   dropped)


def _ragged_rows(rows: list, configured: Sequence[str] | None, max_features: int) -> Columns:
    lengths = [len(r) if isinstance(r, list) else 1 for r in rows]
    width = max(lengths)
    kept = min(width, max_features)
    _check_dense(kept * len(rows), sum(lengths))
    names = _names(kept, configured)
    cols: Columns = _capped({n: [] for n in names}, sum(max(0, n - kept) for n in lengths))
    for r in rows:
        r = r if isinstance(r, list) else [r]
        for j, n in enumerate(names):
            cols[n].append(r[j] if j < len(r) else None)
    return cols


def columns_from_mapping(obj: dict, max_features: int = MAX_FEATURES) -> Columns:
    """An object of equal-length columns (TF Serving `inputs`, MLflow `inputs`)."""
    cols = _capped({}, max(0, len(obj) - max_features))
    for k, v in list(obj.items())[:max_features]:
        if isinstance(v, list):
            cols[str(k)] = [x if not isinstance(x, (list, dict)) else None for x in v]
        else:
            cols[str(k)] = [v]
    if not cols:
        raise DecodeError("no_rows")
    if len({len(v) for v in cols.values()}) > 1:
        raise DecodeError("shape_mismatch", "columns differ in length")
    return cols


def _flatten(data) -> list:
    if not isinstance(data, list):
        return [data]
    if data and isinstance(data[0], list):
        out: list = []
        stack = [data]
        while stack:  # iterative: a deeply nested tensor must not hit the recursion limit
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(reversed(item))
            else:
                out.append(item)
        return out
    return data


def v2_tensors_to_columns(tensors: list, configured: Sequence[str] | None = None,
                          max_features: int = MAX_FEATURES) -> Columns:
    """Open Inference Protocol tensors: [N] or [N,1] -> one column; [N,K] -> K columns, named
    `f0..` for one tensor, `<tensor>_<j>` for several. Configured names, when they count as
    many as the columns, name them in order (by tensor, then by column)."""
    if not isinstance(tensors, list) or not tensors:
        raise DecodeError("no_rows", "no tensors")
    cols: Columns = Columns()
    positional = False  # some columns are named by their place in a tensor, not by the client
    for t in tensors:
        params = t.get("parameters") if isinstance(t, dict) else None
        if isinstance(params, dict) and "binary_data_size" in params:
            raise DecodeError("binary_extension")
        if not isinstance(t, dict) or "data" not in t:
            raise DecodeError("unknown_shape", "tensor without data")
        name = str(t.get("name", f"input{len(cols)}"))
        shape = _shape(t.get("shape"), name)
        data = _flatten(t["data"])
        if t.get("datatype") == "BYTES":
            data = [d.decode(errors="replace") if isinstance(d, bytes) else d for d in data]
        total = 1
        for s in shape:
            total *= s
        if shape and total != len(data):
            raise DecodeError("shape_mismatch", f"{name}: shape {shape} vs {len(data)} values")
        if not data:
            raise DecodeError("no_rows", f"{name}: no values")
        if len(shape) <= 1 or (len(shape) == 2 and shape[1] == 1):
            if len(cols) < max_features:
                cols[name] = data
            else:
                cols.dropped += len(data)
        elif len(shape) != 2:
            raise DecodeError("unknown_shape", f"{name}: rank {len(shape)}")
        else:  # width <= len(data) here: the shape matched the data
            width = shape[1]
            kept = max(0, min(width, max_features - len(cols)))
            names = [f"{name}_{j}" for j in range(kept)] if len(tensors) > 1 else \
                _names(kept, configured if configured and len(configured) >= width else None)
            positional = True
            for j, col in enumerate(names):
                cols[col] = data[j::width]
            cols.dropped += (width - kept) * shape[0]
    if len({len(v) for v in cols.values()}) > 1:
        raise DecodeError("shape_mismatch", "tensors differ in batch size")
    if positional and configured and len(configured) == len(cols) and list(cols) != list(
            configured):  # the configured names, in order: by tensor, then by column
        return _capped(dict(zip(configured, cols.values())), cols.dropped)
    return cols


def _shape(shape, name: str) -> list[int]:
    if shape is None:
        return []
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
        raise DecodeError("shape_mismatch", f"{name}: shape {str(shape)[:40]} is not a list of "
                                            "sizes")
    return shape


def _csv_columns(body: bytes, max_features: int = MAX_FEATURES) -> Columns:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise DecodeError("bad_encoding", "CSV is not UTF-8") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise DecodeError("empty_body")
    rows = [r for r in reader if r]
    if not rows:
        raise DecodeError("no_rows")
    kept = header[:max_features]
    _check_dense(len(kept) * len(rows), sum(map(len, rows)))
    return _capped({h: [r[j] if j < len(r) else None for r in rows] for j, h in enumerate(kept)},
                   max(0, len(header) - max_features) * len(rows))


def _path(obj, path: str):
    for part in path.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            raise DecodeError("unknown_shape", f"no {path!r} in the body")
    return obj


def _table(obj, configured: Sequence[str] | None, max_features: int) -> Columns:
    """A list of rows or an object of columns."""
    if isinstance(obj, list):
        return rows_to_columns(obj, configured, max_features=max_features)
    if isinstance(obj, dict):
        return columns_from_mapping(obj, max_features)
    raise DecodeError("unknown_shape")


def decode_request(protocol: str, body: bytes, content_type: str | None = None,
                   features: Sequence[str] | None = None, json_path: str | None = None,
                   max_features: int = MAX_FEATURES) -> Columns:
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "text/csv":
        if protocol not in ("mlflow", "auto", "json"):
            raise DecodeError("unsupported_content_type", ctype)
        return _csv_columns(body, max_features)
    if ctype and ctype not in ("application/json", "text/json") and not ctype.endswith("+json"):
        raise DecodeError("unsupported_content_type", ctype)
    obj = _json(body)
    if json_path:
        return _table(_path(obj, json_path), features, max_features)
    if protocol == "auto":
        protocol = detect(obj)
    if protocol in ("kserve-v1", "tfserving"):
        if isinstance(obj, dict) and "instances" in obj:
            return rows_to_columns(obj["instances"], features, max_features=max_features)
        if isinstance(obj, dict) and "inputs" in obj:
            return _table(obj["inputs"], features, max_features)
        raise DecodeError("unknown_shape", "expected instances or inputs")
    if protocol == "v2":
        if not isinstance(obj, dict) or "inputs" not in obj:
            raise DecodeError("unknown_shape", "expected inputs")
        return v2_tensors_to_columns(obj["inputs"], features, max_features)
    if protocol == "mlflow":
        if not isinstance(obj, dict):
            raise DecodeError("unknown_shape", "expected an object")
        if "dataframe_split" in obj:
            split = obj["dataframe_split"]
            if not isinstance(split, dict):
                raise DecodeError("unknown_shape", "dataframe_split must be an object")
            columns = split.get("columns") or features
            return rows_to_columns(split.get("data", []), columns, max_features=max_features)
        if "dataframe_records" in obj:
            return rows_to_columns(obj["dataframe_records"], features, max_features=max_features)
        if "instances" in obj:
            return rows_to_columns(obj["instances"], features, max_features=max_features)
        if "inputs" in obj:
            return _table(obj["inputs"], features, max_features)
        raise DecodeError("unknown_shape", "expected dataframe_split, dataframe_records, "
                                           "instances or inputs")
    return _table(obj, features, max_features)  # json


def detect(obj) -> str:
    if isinstance(obj, dict):
        if "dataframe_split" in obj or "dataframe_records" in obj:
            return "mlflow"
        inputs = obj.get("inputs")
        if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) and "datatype" in inputs[0]:
            return "v2"
        if "instances" in obj or "inputs" in obj:
            return "kserve-v1"
    return "json"


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo gzip/deflate on the monitoring copy, never beyond `limit` bytes."""
    enc = (content_encoding or "").strip().lower()
    if not enc or enc == "identity":
        return body
    if enc not in ("gzip", "x-gzip", "deflate"):
        raise DecodeError("bad_encoding", enc)
    try:
        d = zlib.decompressobj(zlib.MAX_WBITS | 32 if enc != "deflate" else zlib.MAX_WBITS)
        out = d.decompress(body, limit + 1)
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise DecodeError("bad_encoding", str(exc)[:60]) from None
    if len(out) > limit:
        raise DecodeError("too_large", "decompressed body over the capture limit")
    return out


def decode_response(protocol: str, body: bytes, content_type: str | None = None,
                    json_path: str | None = None, max_features: int = MAX_FEATURES) -> Columns:
    """Predictions as columns: `prediction` for a list of scalars, output names for V2."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise DecodeError("unsupported_content_type", ctype)
    obj = _json(body)
    if json_path:
        return _predictions(_path(obj, json_path), max_features)
    if isinstance(obj, dict) and isinstance(obj.get("outputs"), list) and obj["outputs"] and \
            isinstance(obj["outputs"][0], dict) and "data" in obj["outputs"][0]:
        return v2_tensors_to_columns(obj["outputs"], None, max_features)
    for key in ("predictions", "outputs", "prediction", "scores", "data"):
        if isinstance(obj, dict) and key in obj:
            return _predictions(obj[key], max_features)
    if isinstance(obj, list):
        return _predictions(obj, max_features)
    raise DecodeError("unknown_shape", "no predictions in the response")


def _predictions(value, max_features: int) -> Columns:
    if isinstance(value, dict):
        return columns_from_mapping(value, max_features)
    if not isinstance(value, list):
        return {"prediction": [value]}
    if not value:
        raise DecodeError("no_rows")
    if isinstance(value[0], list):  # per-class scores
        if len(value[0]) == 1:
            return {"prediction": [r[0] if isinstance(r, list) and r else None for r in value]}
        names = [f"prediction_{j}" for j in range(min(len(value[0]), max_features))]
        return rows_to_columns(value, names, max_features=max_features)
    if isinstance(value[0], dict):
        return rows_to_columns(value, None, max_features=max_features)
    return {"prediction": value}
