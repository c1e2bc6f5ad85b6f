"""Bad input is counted, never raised out of update()."""

import numpy as np
import pytest

from stats.baseline import fit_baseline
from stats.state import StreamState


@pytest.fixture(scope="module")
def schema():
    rng = np.random.default_rng(0)
    base = {"age": list(rng.normal(40, 10, 500)), "income": list(rng.normal(50, 5, 500)),
            "plan": list(rng.choice(["basic", "premium"], 500))}
    return fit_baseline(base)[0]


def test_every_kind_of_bad_value_is_counted(schema):
    state = StreamState(schema)
    state.update([
        {"age": 30, "income": 51.0, "plan": "basic"},
        {"age": None, "income": float("nan"), "plan": "basic"},
        {"age": "thirty", "income": float("inf"), "plan": None},
        {"income": 50.0, "plan": "gold", "extra": 1},   # age absent, unseen plan, unknown key
        {"age": [1, 2], "income": "49.5", "plan": {"x": 1}},
    ])
    kinds = state.missing_by_kind()
    assert kinds["age"] == {"null": 1, "absent": 1, "wrong_type": 2, "nan": 0, "inf": 0}
    assert kinds["income"] == {"null": 0, "absent": 0, "wrong_type": 0, "nan": 1, "inf": 1}
    assert kinds["plan"]["null"] == 1 and kinds["plan"]["wrong_type"] == 1
    assert state.n_rows == 5
    assert state.rows[3] == 1  # one value under an unknown name
    plan = schema.index["plan"]
    assert state.histogram[plan, len(schema.features[plan].categories)] == 1  # "gold" -> other
    assert state.n_present[schema.index["income"]] == 3  # 51.0, 50.0 and the string "49.5"


def test_ragged_rows_empty_batches_and_wrong_widths(schema):
    state = StreamState(schema)
    state.update([])
    state.update(np.empty((0, 3)))
    state.update({})
    assert state.n_rows == 0
    state.update([[30, 50.0], [31, 52.0, "basic", "surplus"], [32, 49.0, "premium"]])
    assert state.n_rows == 3 and state.rows[2] == 2  # two ragged rows
    assert state.missing_by_kind()["plan"]["absent"] == 1
    state.update(np.array([[1.0, 2.0]]))  # numeric matrix one column short
    assert state.missing_by_kind()["plan"]["absent"] == 2
    state.update({"age": [1, 2, 3], "income": [1.0]})  # columns of different lengths
    kinds = state.missing_by_kind()
    assert kinds["income"]["absent"] >= 2 and kinds["plan"]["absent"] >= 5


def test_garbage_never_raises(schema):
    state = StreamState(schema)
    for junk in ([None, None], [[None] * 3], [{"age": object()}], [[b"bytes", 1, 2]],
                 [["1e400", "-1e400", "nan"]], {"age": "not a list"}):
        state.update(junk)
    assert state.n_rows >= 5
