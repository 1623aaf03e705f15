"""`tam serve` names its environment variables in --help and refuses a bad commit delay in one line,
before it serves anything (a real `teep-coap` process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

CLI = [sys.executable, "-c", "from teep_coap.cli import main; main()"]


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=30, env={**os.environ, **env}, check=False
    )


def test_help_names_the_environment_variables() -> None:
    out = run(["tam", "serve", "--help"])
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "TEEP_COAP_ENGINE_THREADS=N" in text and "TEEP_COAP_COMMIT_DELAY_MS=N" in text


@pytest.mark.parametrize("value", ["abc", "-3", "250"])
def test_a_bad_commit_delay_stops_the_server_in_one_line(tmp_path: Path, value: str) -> None:
    tam_dir = tmp_path / "tam"
    assert run(["tam", "init", "--dir", str(tam_dir)]).returncode == 0
    out = run(
        ["tam", "serve", "--profile", "coap", "--dir", str(tam_dir), "--bind", "127.0.0.1:0"],
        TEEP_COAP_COMMIT_DELAY_MS=value,
    )
    assert out.returncode == 2
    assert "TAM serving" not in out.stdout
    assert f"TEEP_COAP_COMMIT_DELAY_MS={value!r}" in out.stderr and "milliseconds from 0" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
