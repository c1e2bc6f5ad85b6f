"""The README's main command: `driftgate demo` starts models + gateway, sends traffic, stops clean."""

import contextlib
import re
import socket

import pytest

from tests.servers import run_cli


@pytest.mark.slow
def test_demo_runs_shows_metrics_and_stops_everything():
    with contextlib.ExitStack() as held:
        with contextlib.suppress(OSError):  # 8080 taken: the demo must say where it went
            s = held.enter_context(socket.socket())
            s.bind(("127.0.0.1", 8080))
            s.listen()
        done = run_cli("demo", "--duration", "25", "--rate", "40", timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "gateway           http://127.0.0.1:" in out
    assert re.search(r"^port 8080 is taken: the gateway listens on \d+ instead \(point clients "
                     r"and locust --host at http://127.0.0.1:\d+\)$", out, re.M), out[:3000]
    rows = [(m.group(1), m.group(2), int(m.group(3))) for m in re.finditer(
        r"^(churn-\S+)\s+(\S+)\s+churn-v\d\s+200\s+(\d+)\s+\d+%$", out, re.M)]
    assert {route for route, _, _ in rows} == {"churn-v1-protocol", "churn-v2-protocol",
                                               "churn-mlflow"}, out
    assert sum(n for *_, n in rows) >= 100
    # the 50/50 split shows
    split = {variant: n for route, variant, n in rows if route == "churn-v2-protocol"}
    assert 0.3 < split["control"] / (split["control"] + split["candidate"]) < 0.7, split
    assert re.search(r"gateway's own time per request \(Server-Timing\): p50 [\d.]+ ms", out)
    assert "demo stopped: gateway and both models are down" in out
    # labels were posted and the experiment's report printed, with a verdict on accuracy
    assert "--- the 50/50 experiment so far" in out
    verdicts = re.findall(r"^  candidate vs control, accuracy \(two-proportion z\): (.*)$", out, re.M)
    assert len(verdicts) == 2, out[-3000:]
    sentences = re.findall(r"^  in words: candidate (.*)\.$", out, re.M)
    assert len(sentences) == 2 and all("the sequential test" in s for s in sentences), out[-3000:]
    labels = [int(n) for n in re.findall(r"^  (?:control|candidate)\s+\d+\s+\S+\s+\S+\s+\S+\s+\S+"
                                         r"\s+(\d+)\s+0\.\d+", out, re.M)]
    assert len(labels) == 4 and min(labels) > 50, out[-3000:]
    # the shift of monthly_charges reaches the local webhook as a drift alert, and nothing else
    alerts = re.findall(r"^ALERT firing (\S+) (\S+) feature=(\S+): .*\(([\d.]+) s after the shift\)$",
                        out, re.M)
    assert alerts, out[-3000:]
    assert {feature for _, _, feature, _ in alerts} == {"monthly_charges"}
    assert min(float(delay) for *_, delay in alerts) < 30
