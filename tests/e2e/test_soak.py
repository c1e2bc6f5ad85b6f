"""A short run of benchmarks/soak.py (2.2 minutes: both kinds of reload happen once); the
30-minute run and its figures are in the README. CI runs this short one only."""

import subprocess
import sys

import pytest

from tests.servers import ROOT


@pytest.mark.slow
def test_a_short_soak_has_no_failure_no_failed_reload_and_no_dropped_capture(tmp_path):
    out = tmp_path / "soak.md"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--minutes",
                           "2.2", "--rate", "60", "--out", str(out)], capture_output=True,
                          text=True, timeout=400, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = out.read_text()
    assert "0 failed" in report and "reloads: 2 of 2 applied" in report, report
    assert "captures dropped: 0" in report, report
