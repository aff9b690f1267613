"""`make demo` runs the main jobs against the local stack and exits 0 with a readable report."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_runs_end_to_end():
    """The demo verifies, plans, applies, flags renamed users and stops what it started."""
    done = subprocess.run([sys.executable, "-m", "devhost.demo"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "NOT COMPLIANT" in out and "COMPLIANT: 13 passed, 0 failed" in out
    assert "second apply: no-op" in out
    assert "2 user(s) flagged" in out and "resolved" in out
    assert "Demo finished: everything worked as expected." in out
    assert "Traceback" not in done.stderr
