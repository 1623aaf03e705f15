"""`teep-coap bench sessions --repeat N`: the same set-up N times, and the median of each figure."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

from teep_coap.bench.repeat import format_repeated, run_repeated
from teep_coap.bench.sessions import BenchResult

pytestmark = pytest.mark.timeout(180)


def _result(tam_cpu: float, seconds: float, failed: int = 0) -> BenchResult:
    return BenchResult(
        profile="coap",
        devices=10,
        concurrency=2,
        sessions=100,
        ok=100 - failed,
        failed=failed,
        seconds=seconds,
        latencies=[0.01] * (100 - failed),
        tam_cpu_seconds=tam_cpu,
        client_cpu_seconds=0.2,
    )


def test_the_summary_is_the_median_lowest_and_highest_of_the_runs() -> None:
    made = iter([_result(0.16, 1.0), _result(0.14, 0.8), _result(0.19, 1.25, failed=2)])
    rep = run_repeated(3, lambda: next(made))
    cpu = rep.summary()["tam_cpu_ms_per_session"]
    assert cpu == {"median": 1.6, "min": 1.4, "max": 1.94}  # 0.19 s over 98 sessions
    assert rep.summary()["sessions_per_second"]["median"] == 100.0
    assert rep.summary()["tam_to_device_cpu_ratio"] == {"median": 0.8, "min": 0.7, "max": 0.95}
    assert rep.failed() == 2
    text = format_repeated(rep)
    assert "3 runs back to back" in text and text.count("  run ") == 3
    assert "TAM CPU per session: 1.60 ms (1.40–1.94 ms)" in text
    assert "failed sessions over all runs: 2" in text
    assert "tam_engine_cpu_ms_per_session" not in rep.summary()  # no run reported it: left out


def test_repeat_needs_one_run_at_least() -> None:
    with pytest.raises(ValueError, match="at least once"):
        run_repeated(0, lambda: _result(0.1, 1.0))


def test_the_cli_runs_the_set_up_again_and_reports_each_run() -> None:
    cmd = [sys.executable, "-c", "from teep_coap.cli import main; main()", "bench", "sessions"]
    args = ["--profile", "coap", "--devices", "4", "--concurrency", "2", "--sessions", "6"]
    done = subprocess.run(
        [*cmd, *args, "--repeat", "2", "--json"], capture_output=True, text=True, timeout=150, check=False
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["repeat"] == 2 and len(out["runs"]) == 2 and out["failed"] == 0
    assert all(run["ok"] == 6 and run["tam_to_device_cpu_ratio"] > 0 for run in out["runs"])
    cpu = [run["tam_cpu_ms_per_session"] for run in out["runs"]]
    summary = out["summary"]["tam_cpu_ms_per_session"]
    assert summary["median"] == round(statistics.median(cpu), 3)
    assert (summary["min"], summary["max"]) == (min(cpu), max(cpu))
    refused = subprocess.run([*cmd, *args, "--repeat", "0"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--repeat" in refused.stderr
