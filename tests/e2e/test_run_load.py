"""benchmarks/run_load.py: demo + locust headless + one report with the drift alert's delay."""

import re
import subprocess
import sys

import pytest

from tests.servers import ROOT


@pytest.mark.slow
def test_run_load_reports_clean_run_and_drift_alert(tmp_path):
    out = tmp_path / "load.md"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_load.py"), "--users", "5",
                           "--seconds", "12", "--drift-at", "5", "--out", str(out)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = out.read_text()
    assert "locust exit code 0" in report
    total = re.search(r"^\| all \| (\d+) \| (\d+) \|", report, re.M)
    assert total and int(total.group(1)) > 200 and int(total.group(2)) == 0, report
    counted = re.search(r"requests counted by the gateway: (\d+) \(locust's predictions: (\d+)\)",
                        report)
    # nothing lost: the gateway may count up to one request per user more (locust leaves the
    # requests still in flight when its run time ends out of its statistics)
    assert counted and 0 <= int(counted.group(1)) - int(counted.group(2)) <= 5, report
    delay = re.search(r"reached the webhook ([\d.]+) s after the drift phase began", report)
    assert delay and float(delay.group(1)) < 30, report
    assert "alerts before the drift phase (false alarms): 0" in report
    assert re.search(r"feedback items: accepted \d+", report)
