"""interop/http/teep_http_broker.py against our own TAM through a real HTTPS connection on loopback."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from teep_coap.bench.scenario import COMPONENT_ID, engine_handler, teep_world
from teep_coap.profiles import load_profile
from teep_coap.profiles.probe import FAIL, PASS, probe_tam
from teep_coap.profiles.stack import make_server
from teep_coap.security import certs
from teep_coap.store.agentdir import load_agent_state

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
    world = teep_world(profile, tmp_path, 500)  # the wire follows the profile's encoding
    assert (world.tam.wire.encoding == "json") == json_flag
    bundle = certs.write_bundle(tmp_path / "certs")
    async with make_server(profile, engine_handler(world.tam), certs_path=bundle.directory) as server:
        assert server.uri.startswith("https://127.0.0.1:")
        args = ["--tam", server.uri, "--state", str(world.agent_dir), "--ca", str(bundle.ca_cert)]
        code, out = await run_script(*args, *(["--json"] if json_flag else []))
    assert code == 0, out
    assert "[fail]" not in out
    assert "<- 200" in out and "QueryRequest" in out and "Update" in out
    assert "-> POST" in out and "Success" in out and "<- 204" in out
    assert load_agent_state(world.agent_dir).components.get(COMPONENT_ID) is not None


async def test_probe_reports_each_rule(tmp_path: Path) -> None:
    profile = load_profile("teep-cbor-https")
    world = teep_world(profile, tmp_path, 20)
    bundle = certs.write_bundle(tmp_path / "certs")
    async with make_server(profile, engine_handler(world.tam), certs_path=bundle.directory) as server:
        checks = await probe_tam(server.uri, ssl_context=certs.client_ssl_context(bundle.ca_cert))
        untrusted = await probe_tam(server.uri, ssl_context=certs.client_ssl_context(None), timeout=5)
    assert all(c.outcome == PASS for c in checks), checks
    assert any("QueryRequest (COSE_Sign1)" in c.detail for c in checks)
    assert len(checks) >= 9
    assert untrusted[0].outcome == FAIL and "certificate" in untrusted[0].detail.lower()


async def test_script_fails_cleanly_when_no_tam_listens(tmp_path: Path) -> None:
    code, out = await run_script("--tam", "http://127.0.0.1:9/tam", "--probe-only", "--timeout", "3")
    assert code == 1 and "[fail]" in out


async def test_two_processes_cli_made_folders(tmp_path: Path) -> None:
    """The by-hand recipe of interop/http/README.md: folders made with the CLI, our TAM served by
    serve_our_tam.py in one process, the Broker script in another, HTTPS between them."""
    from click.testing import CliRunner

    from teep_coap.cli import root

    def cli(*args: str) -> str:
        result = CliRunner().invoke(root, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    cli("certs", "generate", "--out", str(tmp_path / "certs"))
    cli("tam", "init", "--dir", str(tmp_path / "tam"), "--alg", "esp256")
    cli(
        "agent",
        "init",
        "--state",
        str(tmp_path / "agent"),
        "--tam-key",
        str(tmp_path / "tam/keys/esp256/public.pem"),
    )
    cfg = load_agent_state(tmp_path / "agent").config
    (tmp_path / "ta.bin").write_bytes(bytes(range(256)) * 8)
    cli(
        "suit",
        "build",
        str(tmp_path / "ta.bin"),
        "--key",
        str(tmp_path / "tam/keys/esp256/private.pem"),
        "--vendor-id",
        str(__import__("uuid").UUID(bytes=cfg.vendor_id)),
        "--class-id",
        str(__import__("uuid").UUID(bytes=cfg.class_id)),
        "--component-id",
        "ta-1",
        "-o",
        str(tmp_path / "ta.suit"),
    )
    cli(
        "tam",
        "component",
        "add",
        "--dir",
        str(tmp_path / "tam"),
        "--audience",
        "all",
        str(tmp_path / "ta.suit"),
    )
    cli(
        "tam",
        "device",
        "add",
        "--dir",
        str(tmp_path / "tam"),
        "--key",
        str(tmp_path / "agent/key/public.pem"),
    )
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT.parent / "serve_our_tam.py"),
        "--tam-dir",
        str(tmp_path / "tam"),
        "--certs",
        str(tmp_path / "certs"),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        line = (await asyncio.wait_for(server.stdout.readline(), 20)).decode()
        uri = line.split()[2]
        assert uri.startswith("https://127.0.0.1:")
        code, out = await run_script(
            "--tam", uri, "--state", str(tmp_path / "agent"), "--ca", str(tmp_path / "certs/ca.pem")
        )
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)
    assert code == 0, out
    assert "Success" in out and "<- 204" in out
    assert load_agent_state(tmp_path / "agent").components.get((b"ta-1",)) is not None
