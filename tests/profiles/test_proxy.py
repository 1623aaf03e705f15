"""`agent run --proxy`: a whole session through aiocoap's CoAP forward proxy (a real second process)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from teep_coap.bench.sessions import make_world, tam_process
from tests.conftest import venv_tool

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]
CLI = [sys.executable, "-c", "from teep_coap.cli import main; main()"]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_run(uri: str, state: Path, *extra: str, profile: str = "coap") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "agent", "run", "--profile", profile, "--tam", uri, "--state", str(state), *extra],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("profile", ["coap"])
def test_session_through_a_forward_proxy(tmp_path: Path, profile: str) -> None:
    proxy_tool = venv_tool("aiocoap-proxy")
    if proxy_tool is None:
        pytest.fail("aiocoap-proxy not found in the virtualenv (it comes with aiocoap)")
    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 800)
    port = free_udp_port()
    proxy = subprocess.Popen(
        [proxy_tool, "--forward", "--bind", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(0.5)
        with tam_process(profile, world.tam_dir) as (uri, _pid):
            # no proxy listens there: the run must fail, so a success below went through the proxy
            dead = agent_run(
                uri, world.agent_dirs[0], "--proxy", f"coap://127.0.0.1:{free_udp_port()}", "--timeout", "2",
                profile=profile,
            )  # fmt: skip
            assert dead.returncode == 2
            done = agent_run(uri, world.agent_dirs[0], "--proxy", f"coap://127.0.0.1:{port}", profile=profile)
            assert done.returncode == 0, done.stderr
            assert len(json.loads(done.stdout)["installed"]) == 1
    finally:
        proxy.terminate()
        proxy.wait(10)


def test_proxy_refuses_dtls_and_other_schemes() -> None:
    from teep_coap.profiles import load_profile
    from teep_coap.profiles.stack import coap_options
    from teep_coap.transport.base import TransportError
    from teep_coap.transport.coap.client import CoapClient
    from teep_coap.transport.coap.credentials import DeviceCredentials

    creds = DeviceCredentials("d", "d", bytes(16))
    for name in ("coap-oscore", "coap-edhoc"):
        with pytest.raises(TransportError, match=r"is not implemented: .* OSCORE through aiocoap's proxy"):
            CoapClient(
                coap_options(load_profile(name)), "coap://127.0.0.1:9/teep", creds, proxy="coap://127.0.0.1:9"
            )
    with pytest.raises(TransportError, match=r"--proxy with 'coaps-psk' \(dtls-psk\) is not implemented"):
        CoapClient(
            coap_options(load_profile("coaps-psk")),
            "coaps://127.0.0.1:9/teep",
            creds,
            proxy="coap://127.0.0.1:9",
        )
    with pytest.raises(TransportError, match="must be a coap:// URI"):
        CoapClient(
            coap_options(load_profile("coap")), "coap://127.0.0.1:9/teep", None, proxy="http://127.0.0.1:9"
        )
