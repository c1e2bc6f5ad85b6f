"""A small real model server for the demo, the tests and the benchmarks.

A numpy logistic regression trained at start on synthetic customer-churn data (four numeric
features and one categorical), served the way the real servers in front of which driftgate sits
speak: KServe V1, Open Inference Protocol V2 (KServe V2 / Triton / MLServer) and MLflow's
`/invocations`. Predictions are the churn probability (V1, MLflow) or a label plus a probability
(V2 outputs `predict` and `probability`).
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
from dataclasses import dataclass

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

NUMERIC_FEATURES = ("tenure_months", "monthly_charges", "support_calls", "usage_gb")
PLANS = ("basic", "standard", "premium")
FEATURES = (*NUMERIC_FEATURES, "plan")


def synthetic_rows(n: int, rng: np.random.Generator, shift: float = 0.0) -> list[list]:
    """Rows in FEATURES order. `shift` moves monthly_charges and usage_gb up by that fraction."""
    tenure = rng.gamma(2.0, 12.0, n).clip(0, 72).round()
    charges = rng.normal(70.0, 20.0, n).clip(18, 150) * (1 + shift)
    calls = rng.poisson(1.5, n).astype(float)
    usage = rng.lognormal(3.0, 0.5, n) * (1 + shift)
    plan = rng.choice(PLANS, n, p=[0.5, 0.3, 0.2])
    return [[float(t), round(float(c), 2), float(k), round(float(u), 2), str(p)]
            for t, c, k, u, p in zip(tenure, charges, calls, usage, plan)]


def true_churn_logit(x_num: np.ndarray, plan: np.ndarray) -> np.ndarray:
    """The synthetic world's truth: short tenure, high charges and many support calls churn;
    premium stays."""
    return (-0.06 * x_num[:, 0] + 0.03 * x_num[:, 1] + 0.6 * x_num[:, 2]
            - 0.8 * (plan == "premium") - 2.0)


def draw_labels(rows: list[list], rng: np.random.Generator) -> list[int]:
    """Ground truth for demo rows (did the customer churn?): the labels feedback posts."""
    x_num = np.array([r[:4] for r in rows], dtype=float)
    plan = np.array([r[4] for r in rows])
    p = 1 / (1 + np.exp(-true_churn_logit(x_num, plan)))
    return (rng.random(len(rows)) < p).astype(int).tolist()


class BadInput(ValueError):
    """A request body the model cannot read; answered 400 with the reason."""


@dataclass
class ChurnModel:
    weights: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def train(cls, seed: int = 0, rows: int = 4000) -> ChurnModel:
        rng = np.random.default_rng(seed)
        data = synthetic_rows(rows, rng)
        x_num = np.array([r[:4] for r in data], dtype=float)
        mean, std = x_num.mean(0), x_num.std(0) + 1e-9
        plan = np.array([r[4] for r in data])
        y = (rng.random(rows) < 1 / (1 + np.exp(-true_churn_logit(x_num, plan)))).astype(float)
        model = cls(np.zeros(4 + len(PLANS)), 0.0, mean, std)
        x = model._design(x_num, plan)
        for _ in range(300):  # plain batch gradient descent: small, deterministic, no sklearn
            p = 1 / (1 + np.exp(-(x @ model.weights + model.bias)))
            grad = p - y
            model.weights -= 0.5 * (x.T @ grad) / rows
            model.bias -= 0.5 * grad.mean()
        return model

    def _design(self, x_num: np.ndarray, plan: np.ndarray) -> np.ndarray:
        onehot = np.stack([(plan == p).astype(float) for p in PLANS], axis=1)
        return np.hstack([(x_num - self.mean) / self.std, onehot])

    def predict_proba(self, rows: list[list]) -> np.ndarray:
        if not rows:
            return np.zeros(0)
        try:
            x_num = np.array([[float(v) for v in r[:4]] for r in rows], dtype=float)
            plan = np.array([str(r[4]) if len(r) > 4 else "basic" for r in rows])
        except (TypeError, ValueError, IndexError) as exc:
            raise BadInput(f"each row needs {len(FEATURES)} values {list(FEATURES)}: {exc}") from None
        if x_num.shape[1] != 4 or not np.isfinite(x_num).all():
            raise BadInput(f"each row needs 4 finite numeric values then a plan: {list(FEATURES)}")
        return 1 / (1 + np.exp(-(self._design(x_num, plan) @ self.weights + self.bias)))


def rows_from_records(records: list) -> list[list]:
    """Objects keyed by feature name, or positional lists, into FEATURES-ordered rows."""
    rows = []
    for rec in records:
        if isinstance(rec, dict):
            try:
                rows.append([rec[f] for f in FEATURES])
            except KeyError as exc:
                raise BadInput(f"missing feature {exc.args[0]!r}") from None
        elif isinstance(rec, list):
            rows.append(rec)
        else:
            raise BadInput("each instance must be a list or an object")
    return rows


def rows_from_columns(columns: dict) -> list[list]:
    try:
        cols = [columns[f] for f in FEATURES]
    except KeyError as exc:
        raise BadInput(f"missing column {exc.args[0]!r}") from None
    if len({len(c) for c in cols}) != 1:
        raise BadInput("columns differ in length")
    return [list(r) for r in zip(*cols)]


def rows_from_v2_inputs(inputs: list) -> list[list]:
    """V2 `inputs`: one [N,4] or [N,5] tensor (+ optional BYTES `plan`), or one tensor per feature."""
    if not isinstance(inputs, list) or not inputs:
        raise BadInput("`inputs` must be a non-empty list of tensors")
    tensors = {}
    for t in inputs:
        if not isinstance(t, dict) or "name" not in t or "data" not in t or "shape" not in t:
            raise BadInput("each input needs name, shape, datatype and data")
        data = np.asarray(t["data"], dtype=object).reshape(-1)
        shape = t["shape"]
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
            raise BadInput(f"input {t['name']!r}: shape must be a list of sizes")
        if int(np.prod(shape)) != data.size:
            raise BadInput(f"input {t['name']!r}: shape {shape} does not match {data.size} values")
        tensors[t["name"]] = (data, shape)
    if all(f in tensors for f in FEATURES):
        return [list(r) for r in zip(*(tensors[f][0] for f in FEATURES))]
    (data, shape), *rest = tensors.values()
    width = shape[-1] if len(shape) > 1 else 1
    matrix = data.reshape(-1, width).tolist()
    if width == 4:
        plans = tensors.get("plan", (np.array(["basic"] * len(matrix), dtype=object), None))[0]
        matrix = [[*r, p.decode() if isinstance(p, bytes) else p] for r, p in zip(matrix, plans)]
    return matrix


def parse_csv(text: str) -> list[list]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise BadInput("empty CSV body")
    records = [dict(zip(header, row)) for row in reader if row]
    return rows_from_records(records)


def _json(payload, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


def build_model_app(name: str, version: str = "v1", latency_ms: float = 0.0,
                    error_rate: float = 0.0, seed: int = 0, bias_shift: float = 0.0) -> Starlette:
    """`bias_shift` moves the trained model's logit: a worse-calibrated, less accurate variant
    for experiments."""
    model = ChurnModel.train(seed)
    model.bias += bias_shift
    chaos = random.Random(seed)

    async def delay_or_fail() -> Response | None:
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000)
        if error_rate > 0 and chaos.random() < error_rate:
            return _json({"error": "injected failure (--error-rate)"}, 500)
        return None

    async def parse_json(request: Request):
        try:
            return orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise BadInput(f"body is not JSON: {exc}") from None

    def check_name(request: Request) -> Response | None:
        if request.path_params["model"] != name:
            return _json({"error": f"Model with name {request.path_params['model']} not found"}, 404)
        return None

    async def v1_predict(request: Request) -> Response:
        if (wrong := check_name(request)) or (wrong := await delay_or_fail()):
            return wrong
        try:
            body = await parse_json(request)
            if isinstance(body, dict) and "instances" in body:
                rows = rows_from_records(body["instances"])
            elif isinstance(body, dict) and isinstance(body.get("inputs"), dict):
                rows = rows_from_columns(body["inputs"])
            elif isinstance(body, dict) and isinstance(body.get("inputs"), list):
                rows = rows_from_records(body["inputs"])
            else:
                raise BadInput("expected {\"instances\": [...]} or {\"inputs\": ...}")
            proba = model.predict_proba(rows)
        except BadInput as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"predictions": [round(float(p), 6) for p in proba]})

    async def v2_infer(request: Request) -> Response:
        if (wrong := check_name(request)) or (wrong := await delay_or_fail()):
            return wrong
        try:
            body = await parse_json(request)
            if not isinstance(body, dict):
                raise BadInput("body must be an object with `inputs`")
            proba = model.predict_proba(rows_from_v2_inputs(body.get("inputs")))
        except BadInput as exc:
            return _json({"error": str(exc)}, 400)
        n = len(proba)
        out = {"model_name": name, "model_version": version, "outputs": [
            {"name": "predict", "shape": [n], "datatype": "INT64",
             "data": [int(p >= 0.5) for p in proba]},
            {"name": "probability", "shape": [n], "datatype": "FP64",
             "data": [round(float(p), 6) for p in proba]},
        ]}
        if "id" in body:
            out["id"] = body["id"]
        return _json(out)

    async def invocations(request: Request) -> Response:
        if wrong := await delay_or_fail():
            return wrong
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if ctype == "text/csv":
                rows = parse_csv((await request.body()).decode())
            elif ctype == "application/json":
                body = await parse_json(request)
                if not isinstance(body, dict):
                    raise BadInput("body must be an object")
                if "dataframe_split" in body:
                    split = body["dataframe_split"]
                    if not isinstance(split, dict) or not isinstance(split.get("data"), list) \
                            or not all(isinstance(r, list) for r in split["data"]):
                        raise BadInput("dataframe_split needs `data`: a list of rows (lists)")
                    cols = split.get("columns") or list(FEATURES)
                    rows = rows_from_records([dict(zip(cols, r)) for r in split["data"]])
                elif "dataframe_records" in body:
                    rows = rows_from_records(body["dataframe_records"])
                elif "instances" in body:
                    rows = rows_from_records(body["instances"])
                elif isinstance(body.get("inputs"), dict):
                    rows = rows_from_columns(body["inputs"])
                elif "inputs" in body:
                    rows = rows_from_records(body["inputs"])
                else:
                    raise BadInput("expected dataframe_split, dataframe_records, instances "
                                   "or inputs")
            else:
                return _json({"error_code": "BAD_REQUEST", "message":
                              f"Content type must be application/json or text/csv, got {ctype!r}"},
                             415)
            proba = model.predict_proba(rows)
        except BadInput as exc:
            return _json({"error_code": "BAD_REQUEST", "message": str(exc)}, 400)
        return _json({"predictions": [round(float(p), 6) for p in proba]})

    async def v2_ready(request: Request) -> Response:
        return _json({"ready": True})

    async def v2_live(request: Request) -> Response:
        return _json({"live": True})

    async def v2_metadata(request: Request) -> Response:
        if wrong := check_name(request):
            return wrong
        return _json({
            "name": name, "versions": [version], "platform": "driftgate-demo-numpy",
            "inputs": [{"name": f, "datatype": "BYTES" if f == "plan" else "FP64", "shape": [-1]}
                       for f in FEATURES],
            "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]},
                        {"name": "probability", "datatype": "FP64", "shape": [-1]}],
        })

    async def v2_model_ready(request: Request) -> Response:
        if wrong := check_name(request):
            return wrong
        return _json({"name": name, "ready": True})

    async def v1_model(request: Request) -> Response:
        if wrong := check_name(request):
            return wrong
        return _json({"name": name, "ready": True})

    async def ping(request: Request) -> Response:
        return Response("\n", media_type="application/json")

    return Starlette(routes=[
        Route("/v1/models/{model}:predict", v1_predict, methods=["POST"]),
        Route("/v1/models/{model}", v1_model),
        Route("/v2/health/live", v2_live),
        Route("/v2/health/ready", v2_ready),
        Route("/v2/models/{model}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/{model}/ready", v2_model_ready),
        Route("/v2/models/{model}", v2_metadata),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/ping", ping),
        Route("/health", ping),
    ])
