"""`bench dtls-burst` sorts failed clients by their last error line: the marks must match the texts
the CoAP transport really writes, or every failure would land in "other"."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import teep_coap
from teep_coap.bench.dtls_burst import byte_compile_package, classify_failure
from teep_coap.profiles.session import SessionFailed
from teep_coap.transport.base import PeerRejected
from teep_coap.transport.coap.diagnosis import explain_error, explain_timeout

URI = "coaps://127.0.0.1:50353/teep"


def _cli_line(reason: str) -> str:
    """What `agent run` prints last for a failed session (cli: "teep-coap: error: ...")."""
    return f"teep-coap: error: {SessionFailed(f'session 1 with {URI} failed: transport error: {reason}')}"


def test_each_transport_diagnosis_gets_its_kind() -> None:
    refused = explain_error(ConnectionRefusedError(111, "refused"), URI, "dev-1")
    assert refused is not None
    cases = {
        refused: "tam-gone",
        explain_timeout(URI, 20, handshaking=True, heard=3): "handshake-unfinished",
        explain_timeout(URI, 20, handshaking=True, heard=0): "handshake-unanswered",
        explain_timeout(URI, 20, handshaking=False, heard=0): "request-timeout",
        str(PeerRejected("5.03", "TAM overloaded (Max-Age 2)")): "overloaded-5.03",
        f"{URI} did not acknowledge (retransmissions exhausted)": "retransmissions-exhausted",
    }
    for reason, kind in cases.items():
        assert classify_failure(_cli_line(reason)) == kind, reason


def test_a_port_number_is_not_a_code_and_unknown_lines_are_other() -> None:
    assert classify_failure("teep-coap: error: something else at coaps://127.0.0.1:5035/teep") == "other"
    assert classify_failure("exit -11") == "other"


def test_package_is_byte_compiled_before_a_burst() -> None:
    """The clients must not each compile teep_coap from source (PYTHONDONTWRITEBYTECODE=1 here)."""
    assert byte_compile_package()
    agent_cli = Path(teep_coap.__file__).parent / "cli" / "agent.py"
    cached = Path(importlib.util.cache_from_source(str(agent_cli)))
    assert cached.is_file() and cached.stat().st_mtime >= agent_cli.stat().st_mtime
