"""interop/http/teep_http_broker.py against our own TAM through a real HTTPS connection on loopback."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from teep_coap.bench.scenario import COMPONENT_ID, engine_handler, teep_world
from teep_coap.profiles import load_profile
from teep_coap.protocol.agentstate import AgentState
from teep_coap.protocol.json_binding import json_teep_world
from teep_coap.security import certs
from teep_coap.transport.http import HttpServer
from teep_coap.transport.http.probe import FAIL, PASS, probe_tam

SCRIPT = Path(__file__).resolve().parents[2] / "interop" / "http" / "teep_http_broker.py"


async def run_script(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


@pytest.mark.parametrize(
    ("profile_name", "json_flag"), [("teep-cbor-https", False), ("teep-json-https", True)]
)
async def test_script_runs_a_session_against_our_https_tam(
    profile_name: str, json_flag: bool, tmp_path: Path
) -> None:
    profile = load_profile(profile_name)
    world = (json_teep_world if json_flag else teep_world)(profile, tmp_path, 500)
    bundle = certs.write_bundle(tmp_path / "certs")
    async with HttpServer(profile, engine_handler(world.tam), certs_path=bundle.directory) as server:
        assert server.uri.startswith("https://127.0.0.1:")
        args = ["--tam", server.uri, "--state", str(world.agent_dir), "--ca", str(bundle.ca_cert)]
        code, out = await run_script(*args, *(["--json"] if json_flag else []))
    assert code == 0, out
    assert "[fail]" not in out
    assert "<- 200" in out and "QueryRequest" in out and "Update" in out
    assert "-> POST" in out and "Success" in out and "<- 204" in out
    assert AgentState.load(world.agent_dir).components.get(COMPONENT_ID) is not None


async def test_probe_reports_each_rule(tmp_path: Path) -> None:
    profile = load_profile("teep-cbor-https")
    world = teep_world(profile, tmp_path, 20)
    bundle = certs.write_bundle(tmp_path / "certs")
    async with HttpServer(profile, engine_handler(world.tam), certs_path=bundle.directory) as server:
        checks = await probe_tam(server.uri, ssl_context=certs.client_ssl_context(bundle.ca_cert))
        untrusted = await probe_tam(server.uri, ssl_context=certs.client_ssl_context(None), timeout=5)
    assert all(c.outcome == PASS for c in checks), checks
    assert any("QueryRequest (COSE_Sign1)" in c.detail for c in checks)
    assert len(checks) >= 9
    assert untrusted[0].outcome == FAIL and "certificate" in untrusted[0].detail.lower()


async def test_script_fails_cleanly_when_no_tam_listens(tmp_path: Path) -> None:
    code, out = await run_script("--tam", "http://127.0.0.1:9/tam", "--probe-only", "--timeout", "3")
    assert code == 1 and "[fail]" in out
