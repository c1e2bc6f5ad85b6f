"""Locust users that call the gateway the way real clients do.

    locust -f benchmarks/locustfile.py --host http://127.0.0.1:8080 \\
        --headless -u 20 -r 20 -t 60s --json-file out [--drift-at 30] [--tags v1 v2]

Scenarios (tags): `v1` KServe V1 `instances`, `v2` Open Inference Protocol V2 (one tensor per
feature), `mlflow` `/invocations` dataframe_split, `feedback` posts the true labels of an earlier
answer (drawn from the demo world's ground truth; skipped with one warning where the gateway has
no /feedback; 404 unknown for a route without monitoring is not a failure), `drift` marks the
requests sent after `--drift-at` seconds, whose monthly_charges are 15% higher. Rows come from
the demo model's feature distribution; every user has a sticky `X-User-Id`.
"""

from __future__ import annotations

import random
import time

import numpy as np
from locust import FastHttpUser, events, tag, task

from gateway.tools.demo_model import FEATURES, draw_labels, synthetic_rows

_warned = {"feedback": False, "unknown": False}
_started = {"at": None}


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--model-name", default="churn", help="model name in the URLs")
    parser.add_argument("--drift-at", type=float, default=0.0,
                        help="seconds into the run after which monthly_charges drift +15% (0: never)")
    parser.add_argument("--think-time", type=float, default=0.02,
                        help="seconds each user waits between requests")


@events.test_start.add_listener
def _start(environment, **kwargs) -> None:
    _started["at"] = time.monotonic()
    # benchmarks/run_load.py times the drift alert from this line
    print(f"driftgate-locust: test started at {time.time():.3f}", flush=True)


class ModelClient(FastHttpUser):
    def wait_time(self) -> float:
        return self.environment.parsed_options.think_time

    def on_start(self) -> None:
        self.user_id = f"user-{random.randrange(1_000_000)}"
        self.rng = np.random.default_rng(random.randrange(1 << 30))
        self.answered: list[tuple[str, list[int]]] = []  # (request id, true labels), bounded
        self.model = self.environment.parsed_options.model_name

    def _drifting(self) -> bool:
        at = self.environment.parsed_options.drift_at
        return bool(at) and _started["at"] is not None and time.monotonic() - _started["at"] >= at

    def _rows(self) -> tuple[list[list], str]:
        rows = synthetic_rows(random.randint(1, 4), self.rng)
        if self._drifting():
            j = FEATURES.index("monthly_charges")
            for r in rows:
                r[j] = round(r[j] * 1.15, 2)
            return rows, " (drift)"
        return rows, ""

    def _post(self, path: str, body: dict, name: str, rows: list[list]) -> None:
        with self.client.post(path, json=body, name=name, catch_response=True,
                              headers={"x-user-id": self.user_id}) as r:
            if r.status_code == 200:
                rid = r.headers.get("x-request-id")
                if rid:  # the truth arrives later, as it would from a CRM or a label queue
                    self.answered = (self.answered + [(rid, draw_labels(rows, self.rng))])[-100:]
                r.success()
            else:
                r.failure(f"HTTP {r.status_code}")

    @tag("v1", "drift")
    @task(4)
    def kserve_v1(self) -> None:
        rows, suffix = self._rows()
        self._post(f"/v1/models/{self.model}:predict", {"instances": rows}, "v1" + suffix, rows)

    @tag("v2", "drift")
    @task(3)
    def open_inference_v2(self) -> None:
        rows, suffix = self._rows()
        body = {"inputs": [{"name": f, "shape": [len(rows)],
                            "datatype": "BYTES" if f == "plan" else "FP64",
                            "data": [r[j] for r in rows]} for j, f in enumerate(FEATURES)]}
        self._post(f"/v2/models/{self.model}/infer", body, "v2" + suffix, rows)

    @tag("mlflow", "drift")
    @task(2)
    def mlflow(self) -> None:
        rows, suffix = self._rows()
        self._post("/invocations", {"dataframe_split": {"columns": list(FEATURES), "data": rows}},
                   "mlflow" + suffix, rows)

    @tag("feedback")
    @task(1)
    def feedback(self) -> None:
        if not self.answered or _warned["feedback"] == "absent":
            return
        rid, labels = self.answered.pop(0)
        body = {"request_id": rid, "label": labels}
        with self.client.post("/feedback", json=body, name="feedback", catch_response=True) as r:
            if r.status_code == 404 and "unknown" in r.text:
                # the prediction came from a route without monitoring: nothing to join to
                r.success()
                if not _warned["unknown"]:
                    print("note: labels for unmonitored routes answer 404 unknown (not failures)")
                    _warned["unknown"] = True
            elif r.status_code == 404 and "no route" in r.text:
                # a gateway without /feedback: not a failure of the system under test
                r.success()
                if not _warned["feedback"]:
                    print("warning: the gateway has no /feedback route; feedback posts skipped")
                _warned["feedback"] = "absent"
            elif r.status_code < 300:
                r.success()
            else:
                r.failure(f"HTTP {r.status_code}")
