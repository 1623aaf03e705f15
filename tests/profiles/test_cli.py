"""The programs: `teep-coap profiles`, `tam serve` + `agent run` as real processes, `demo`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import run_cli

from teep_coap.bench.sessions import COMPONENT_ID, make_world, tam_process

pytestmark = pytest.mark.timeout(120)


cli = run_cli


def test_profiles_lists_the_coap_profiles() -> None:
    out = cli("profiles").stdout
    for name in ("coap ", "coaps-psk", "coap-oscore", "coap-constrained"):
        assert name in out
    data = json.loads(cli("profiles", "--json").stdout)
    assert {"name": "coaps-psk", "scheme": "coaps", "security": "dtls-psk"}.items() <= next(
        p for p in data if p["name"] == "coaps-psk"
    ).items()


@pytest.mark.parametrize("profile", ["coaps-psk", "coap-oscore", "coap-edhoc"])
def test_serve_and_run(profile: str, tmp_path: Path) -> None:
    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 1500)
    with tam_process(profile, world.tam_dir) as (uri, _pid):
        run = cli("agent", "run", "--profile", profile, "--tam", uri, "--state", str(world.agent_dirs[0]))
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout)
        assert summary["installed"] == [{"component_id": [COMPONENT_ID[0].hex()], "sequence_number": 1}]
        again = cli("agent", "run", "--profile", profile, "--tam", uri, "--state", str(world.agent_dirs[0]))
        assert again.returncode == 0 and json.loads(again.stdout)["installed"] == []


def test_agent_run_without_tam_fails_clearly(tmp_path: Path) -> None:
    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 100)
    run = cli(
        "agent", "run", "--profile", "coaps-psk", "--tam", "coaps://127.0.0.1:9/teep",
        "--state", str(world.agent_dirs[0]), "--timeout", "1.5",
    )  # fmt: skip
    assert run.returncode == 2
    assert "teep-coap: error: session 1 with coaps://127.0.0.1:9/teep failed" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_serve_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 100)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from teep_coap.cli import main; main()", "tam", "serve", "--profile", "coap",
         "--dir", str(world.tam_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("TAM serving coap://127.0.0.1:")
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "TAM stopped: 0 sessions done" in err


def test_demo_runs() -> None:
    run = cli("demo", "--image-size", "600", timeout=90)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for needle in ("QueryRequest", "QueryResponse", "Update", "Success", "DTLS 1.2 PSK handshake", "demo OK"):
        assert needle in out
    assert "Installed 'demo-tc' sequence 1: 600 B" in out
