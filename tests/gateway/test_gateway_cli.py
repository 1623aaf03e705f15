"""The README's gateway commands as real processes: Agent → `gateway serve` (coaps-psk) → `tam serve` (HTTP).

If this test fails, the README's gateway section is wrong: fix both together.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

VENDOR = "c0ddd5f1-5243-5660-87db-4f5b0aa26c2f"
CLASS = "db42f709-3d8c-55ba-a8c5-265fc5820f4e"
TC_UUID = "8d82573a-926d-4754-9353-32dc29997f74"
CLI = [sys.executable, "-c", "from teep_coap.cli import main; main()"]


def teep(cwd: Path, *args: str, timeout: float = 60, ok: bool = True) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert (run.returncode == 0) == ok, f"teep-coap {' '.join(args)}: {run.returncode} {run.stderr}"
    assert "Traceback" not in run.stderr
    return run


@contextmanager
def serving(cwd: Path, *args: str) -> Iterator[str]:
    """A long-running `teep-coap …` process; yields its first stdout line, stops it with SIGINT."""
    proc = subprocess.Popen([*CLI, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_gateway_commands_install_a_component(tmp_path: Path) -> None:
    teep(tmp_path, "tam", "init", "--dir", "tam")
    teep(tmp_path, "agent", "init", "--state", "agent", "--tam-key", "tam/keys/esp256/public.pem",
         "--vendor-id", VENDOR, "--class-id", CLASS)  # fmt: skip
    (tmp_path / "tc.bin").write_bytes(os.urandom(3000))
    teep(tmp_path, "suit", "build", "tc.bin", "--key", "tam/keys/esp256/private.pem", "--tc-uuid", TC_UUID,
         "--seq", "1", "--vendor-id", VENDOR, "--class-id", CLASS, "-o", "tc.suit")  # fmt: skip
    teep(tmp_path, "tam", "component", "add", "--dir", "tam", "--audience", "all", "tc.suit")
    teep(tmp_path, "tam", "device", "add", "--dir", "tam", "--key", "agent/key/public.pem", "--name", "dev1")

    teep(tmp_path, "gateway", "init", "--dir", "gw")
    teep(tmp_path, "gateway", "device", "add", "--dir", "gw", "--name", "dev1", "--agent-state", "agent")
    with serving(tmp_path, "tam", "serve", "--profile", "teep-cbor-http", "--dir", "tam") as tam_line:
        assert tam_line.startswith("TAM serving http://127.0.0.1:"), tam_line
        tam_uri = tam_line.split()[2]
        with serving(tmp_path, "gateway", "serve", "--dir", "gw", "--profile", "coaps-psk",
                     "--bind", "127.0.0.1:0", "--tam", tam_uri) as gw_line:  # fmt: skip
            assert gw_line.startswith("gateway serving coaps://127.0.0.1:"), gw_line
            gw_uri = gw_line.split()[2]
            run = teep(
                tmp_path, "agent", "run", "--profile", "coaps-psk", "--tam", gw_uri, "--state", "agent"
            )
            done = json.loads(run.stdout)
            assert [c["sequence_number"] for c in done["installed"]] == [1]
    status = json.loads(teep(tmp_path, "agent", "status", "--state", "agent").stdout)
    assert [(c["sequence_number"], c["image_size"]) for c in status["installed"]] == [(1, 3000)]
    sessions = json.loads(teep(tmp_path, "tam", "sessions", "--dir", "tam").stdout)
    assert [s["outcome"] for s in sessions][:2] == ["success", "up-to-date"]


def test_gateway_command_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    run = teep(tmp_path, "gateway", "device", "add", "--dir", "empty", "--name", "d", ok=False)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "gateway init" in run.stderr, run.stderr
    teep(tmp_path, "gateway", "init", "--dir", "gw")
    run = teep(tmp_path, "gateway", "init", "--dir", "gw", ok=False)
    assert run.returncode == 2 and "already a gateway folder" in run.stderr
    run = teep(tmp_path, "gateway", "serve", "--dir", "gw", "--profile", "coaps-psk", "--tam", "ftp://x/",
               ok=False)  # fmt: skip
    assert run.returncode == 2 and run.stderr.startswith("teep-coap: error: cannot reach a TAM"), run.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_uri_component_is_fetched_once_through_the_gateway_cache(tmp_path: Path) -> None:
    """A SUIT manifest naming its image by URI: two devices install it, the origin serves it once."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "tc.bin").write_bytes(os.urandom(5000))
    origin_port = _free_port()
    origin = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", str(origin_port)],
        cwd=images, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert origin.stdout is not None and "Serving HTTP" in origin.stdout.readline()
        image_uri = f"http://127.0.0.1:{origin_port}/tc.bin"
        teep(tmp_path, "tam", "init", "--dir", "tam")
        teep(tmp_path, "gateway", "init", "--dir", "gw")
        for name in ("dev1", "dev2"):
            teep(tmp_path, "agent", "init", "--state", name, "--tam-key", "tam/keys/esp256/public.pem",
                 "--vendor-id", VENDOR, "--class-id", CLASS)  # fmt: skip
            teep(
                tmp_path,
                "tam",
                "device",
                "add",
                "--dir",
                "tam",
                "--key",
                f"{name}/key/public.pem",
                "--name",
                name,
            )
            teep(tmp_path, "gateway", "device", "add", "--dir", "gw", "--name", name, "--agent-state", name)
        teep(tmp_path, "suit", "build", "images/tc.bin", "--key", "tam/keys/esp256/private.pem", "--tc-uuid",
             TC_UUID, "--seq", "1", "--vendor-id", VENDOR, "--class-id", CLASS, "--uri", image_uri,
             "-o", "tc.suit")  # fmt: skip
        assert (tmp_path / "tc.suit").stat().st_size < 1000  # the image is not in the envelope
        teep(tmp_path, "tam", "component", "add", "--dir", "tam", "--audience", "all", "tc.suit")
        with serving(tmp_path, "tam", "serve", "--profile", "teep-cbor-http", "--dir", "tam") as tam_line:
            tam_uri = tam_line.split()[2]
            with serving(tmp_path, "gateway", "serve", "--dir", "gw", "--profile", "coaps-psk",
                         "--tam", tam_uri, "--image-origin", image_uri) as gw_line:  # fmt: skip
                gw_uri = gw_line.split()[2]
                for name in ("dev1", "dev2"):
                    run = teep(
                        tmp_path, "agent", "run", "--profile", "coaps-psk", "--tam", gw_uri, "--state", name
                    )
                    assert [c["sequence_number"] for c in json.loads(run.stdout)["installed"]] == [1]
        for name in ("dev1", "dev2"):
            status = json.loads(teep(tmp_path, "agent", "status", "--state", name).stdout)
            assert [c["image_size"] for c in status["installed"]] == [5000]
    finally:
        origin.send_signal(signal.SIGINT)
        _out, log = origin.communicate(timeout=30)
    fetches = [line for line in log.splitlines() if '"GET /tc.bin' in line]
    assert len(fetches) == 1, log  # fetched once upstream, served to both devices by the gateway
