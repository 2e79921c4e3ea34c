"""The benchmark runs: a smoke test with a small N. No timing assertions here
(machines are shared and noisy); the figures come from running it by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "tests.benchmark.run", "--json", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_end_to_end_scenario_reports_every_figure():
    [report] = run("--scenario", "e2e", "--requests", "40", "--concurrency", "4")["reports"]
    assert report["statuses"] == {"200": 40}
    assert report["line_items"] == report["enrolled_at_end"] == 40
    # each learner in exactly one call; calls carry several (batches)
    assert report["lms_learners"] == 40 and report["lms_learners_per_enrolled_item"] == 1.0
    assert 1 <= report["lms_calls"] <= 40
    assert report["first_delivery_to_last_enrollment_s"] > 0
    for key in ("accepted_per_second", "p50_ms", "p90_ms", "p99_ms", "max_ms"):
        assert report[key] > 0
    assert report["p50_ms"] <= report["p90_ms"] <= report["p99_ms"] <= report["max_ms"]
    assert 10 < report["peak_rss_mb"] < 1000


def test_bare_yardstick_runs():
    output = run("--scenario", "bare", "--requests", "40", "--concurrency", "4")
    [report] = output["reports"]
    assert report["statuses"] == {"200": 40}
    assert "cores" in output["machine"]
