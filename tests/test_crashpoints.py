"""The crash-point test hook: names, one crash per arming, nothing when unarmed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from teep_coap import crashpoints
from teep_coap.model.teep import QueryResponse


def test_point_names_are_kebab_case_message_types() -> None:
    assert crashpoints.message_point("tam.received", QueryResponse()) == "tam.received.query-response"
    assert crashpoints.message_point("agent.answered", "Success") == "agent.answered.success"


def test_simulate_raises_once_at_the_armed_point_only() -> None:
    crashpoints.reached("store.index-replaced")  # unarmed: nothing happens
    with crashpoints.simulate("store.index-replaced"):
        crashpoints.reached("store.index-written")  # another point: nothing
        assert not crashpoints.was_reached()
        with pytest.raises(crashpoints.SimulatedCrash):
            crashpoints.reached("store.index-replaced")
        assert crashpoints.was_reached()
        crashpoints.reached("store.index-replaced")  # spent: a dead process does not die twice
    assert crashpoints.armed is None


def test_the_environment_variable_ends_the_process_with_137() -> None:
    code = "from teep_coap import crashpoints; crashpoints.reached('x.y'); print('after')"
    env = {**os.environ, crashpoints.ENV: "x.y"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == crashpoints.EXIT_STATUS and "after" not in proc.stdout


def test_the_pause_variable_stops_the_process_there_for_a_real_sigkill(tmp_path: Path) -> None:
    marker = tmp_path / "paused"
    code = (
        "from teep_coap import crashpoints; crashpoints.reached('a.b'); crashpoints.reached('x.y');"
        " print('after')"
    )
    env = {**os.environ, crashpoints.PAUSE_ENV: "x.y", crashpoints.MARKER_ENV: str(marker)}
    env.pop(crashpoints.ENV, None)
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "never paused"
            time.sleep(0.02)
        assert marker.read_text() == f"{proc.pid} x.y\n"
        assert proc.poll() is None  # still there, waiting
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL and "after" not in out


def test_a_crash_point_wins_over_a_pause() -> None:
    code = "from teep_coap import crashpoints; crashpoints.reached('x.y'); print('after')"
    env = {**os.environ, crashpoints.ENV: "x.y", crashpoints.PAUSE_ENV: "x.y"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == crashpoints.EXIT_STATUS and "after" not in proc.stdout
