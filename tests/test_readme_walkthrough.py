"""The README's step-by-step session, command for command, as real processes over coaps (DTLS PSK).

If this test fails, the README is wrong: fix both together.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

VENDOR = "c0ddd5f1-5243-5660-87db-4f5b0aa26c2f"
CLASS = "db42f709-3d8c-55ba-a8c5-265fc5820f4e"
TC_UUID = "8d82573a-926d-4754-9353-32dc29997f74"


def teep(cwd: Path, *args: str, timeout: float = 60) -> str:
    run = subprocess.run(
        [sys.executable, "-c", "from teep_coap.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, f"teep-coap {' '.join(args)} failed: {run.stderr}"
    assert "Traceback" not in run.stderr
    return run.stdout


def test_readme_walkthrough(tmp_path: Path) -> None:
    teep(tmp_path, "tam", "init", "--dir", "tam")
    teep(tmp_path, "agent", "init", "--state", "agent", "--tam-key", "tam/keys/esp256/public.pem",
         "--vendor-id", VENDOR, "--class-id", CLASS)  # fmt: skip
    (tmp_path / "tc.bin").write_bytes(os.urandom(3000))
    teep(tmp_path, "suit", "build", "tc.bin", "--key", "tam/keys/esp256/private.pem", "--tc-uuid", TC_UUID,
         "--seq", "1", "--vendor-id", VENDOR, "--class-id", CLASS, "-o", "tc.suit")  # fmt: skip
    teep(tmp_path, "tam", "component", "add", "--dir", "tam", "--audience", "all", "tc.suit")
    teep(tmp_path, "tam", "device", "add", "--dir", "tam", "--key", "agent/key/public.pem",
         "--name", "dev1", "--psk-identity", "dev1")  # fmt: skip
    teep(tmp_path, "tam", "credentials", "--dir", "tam", "--name", "dev1", "--agent-state", "agent")

    server = subprocess.Popen(
        [sys.executable, "-c", "from teep_coap.cli import main; main()",
         "tam", "serve", "--profile", "coaps-psk", "--dir", "tam", "--bind", "127.0.0.1:0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        assert first.startswith("TAM serving coaps://127.0.0.1:"), first
        uri = first.split()[2]
        done = json.loads(teep(tmp_path, "agent", "run", "--profile", "coaps-psk", "--tam", uri,
                               "--state", "agent"))  # fmt: skip
        assert [c["sequence_number"] for c in done["installed"]] == [1]
        again = json.loads(teep(tmp_path, "agent", "run", "--profile", "coaps-psk", "--tam", uri,
                                "--state", "agent"))  # fmt: skip
        assert again["installed"] == [] and again["removed"] == []
    finally:
        server.send_signal(signal.SIGINT)
        _out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err

    status = json.loads(teep(tmp_path, "agent", "status", "--state", "agent"))
    assert [(c["sequence_number"], c["image_size"]) for c in status["installed"]] == [(1, 3000)]
    sessions = json.loads(teep(tmp_path, "tam", "sessions", "--dir", "tam"))
    assert [s["outcome"] for s in sessions][:2] == ["success", "up-to-date"]
