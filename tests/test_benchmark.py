"""The benchmark runs: a smoke test with a small N. No timing assertions here
(machines are shared and noisy); the figures come from running it by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

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
    assert report["cpu_ms_per_accepted"] > 0


def test_bare_yardstick_runs():
    output = run("--scenario", "bare", "--requests", "40", "--concurrency", "4")
    [report] = output["reports"]
    assert report["statuses"] == {"200": 40}
    assert "cores" in output["machine"]


def test_sustained_scenario_spreads_the_orders_and_enrolls_them_all():
    [report] = run("--scenario", "sustained", "--requests", "20", "--spread", "1")["reports"]
    assert report["statuses"] == {"200": 20} and report["spread_s"] == 1
    assert report["line_items"] == report["enrolled_at_end"] == 20
    assert report["lms_throttled"] == 0


def installed_venv() -> str | None:
    """This interpreter's environment, if edx_hooks imports there without
    this checkout on the path (as tox installs it)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as elsewhere:
        found = subprocess.run([str(Path(sys.prefix) / "bin" / "python"), "-c",
                                "import edx_hooks"], cwd=elsewhere, env=env,
                               capture_output=True)
    return sys.prefix if found.returncode == 0 else None


def test_against_pairs_two_versions_beside_the_yardstick():
    venv = installed_venv()
    if venv is None:
        pytest.skip("edx_hooks is not installed in this interpreter's environment")
    output = run("--against", venv, "--rounds", "2", "--requests", "30", "--concurrency", "4")
    [first, second] = output["rounds"]
    for one in (first, second):
        assert {one[k]["version"] for k in ("bare", "this", "other")} == {
            "bare", "this", "other"}
        for k in ("bare", "this", "other"):
            assert one[k]["statuses"] == {"200": 30} and one[k]["cpu_ms_per_accepted"] > 0
    summary = output["summary"]
    assert summary["rounds"] == 2 and len(summary["cpu_this_over_other"]) == 2
    assert summary["medians"]["this_over_bare"] > 0
