"""`./dev bench` works: the report runs a benchmark as a process, prints the table and
saves a JSON report whose ratio is computed from a floor measured in the same run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.report import ratio, table

ROOT = Path(__file__).resolve().parents[2]


def test_ratio_direction_and_table():
    up = {"figure": "a", "value": 50.0, "floor": 100.0, "unit": "msg/s", "higher_is_better": True}
    down = {"figure": "b", "value": 2.0, "floor": 1.0, "unit": "ms", "higher_is_better": False}
    assert ratio(up) == 0.5 and ratio(down) == 0.5
    assert ratio({"figure": "c", "value": None, "floor": 1.0}) is None
    text = table([up, down])
    assert "0.50" in text and text.splitlines()[0].split()[:2] == ["figure", "evsite"]


def test_report_runs_the_outbox_replay_quick(tmp_path):
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "bench.report", "--quick", "outbox_replay", "--save", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    [result] = report["results"]
    assert result["value"] > 0 and result["floor"] > 0
    assert report["machine"]["cores"] >= 1
    assert "outbox replay" in proc.stdout and "ratio" in proc.stdout
