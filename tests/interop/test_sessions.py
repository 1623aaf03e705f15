"""Whole TEEP sessions against our TAM where libcoap's or node-coap's client makes every exchange."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]
SCRIPT = Path(__file__).resolve().parents[2] / "interop" / "teep_session.py"
NODE_MODULES = SCRIPT.parent / "node" / "node_modules" / "coap"


def run(client: str, profile: str, block: int) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--client", client, "--profile", profile, "--block", str(block)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("block", [64, 1024])
@pytest.mark.parametrize("profile", ["coap", "coaps-psk"])
@pytest.mark.parametrize("client", ["libcoap-openssl", "libcoap-gnutls"])
def test_libcoap_session(client: str, profile: str, block: int) -> None:
    result = run(client, profile, block)
    assert result["installed"] is True
    steps = result["steps"]
    assert isinstance(steps, list)
    # connect → QueryRequest; QueryResponse → Update (block-wise); Success → 2.04 without payload
    assert steps[0].startswith("POST 0 B -> 2.04 with ")
    assert steps[-1].endswith("with 0 B")
    assert sum(s.startswith("POST") for s in steps) == 3


def test_node_coap_session() -> None:
    if not NODE_MODULES.is_dir():
        pytest.fail("node-coap is not installed: run `npm install` in interop/node (scripts/setup.sh does)")
    result = run("node", "coap-no-echo", 1024)  # node-coap cannot answer an RFC 9175 Echo
    assert result["installed"] is True
    assert sum(str(s).startswith("POST") for s in result["steps"]) == 3  # type: ignore[union-attr]
