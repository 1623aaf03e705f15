"""The agent/tam CLI scripts a whole session by hand, exactly as the libcoap interop tests drive it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from teep_coap.store.agentdir import load_agent_state


def run(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-c", "from teep_coap.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def out(*args: str, cwd: Path) -> Any:
    return json.loads(run(*args, cwd=cwd).stdout)


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    from teep_coap.security.keys import load_signing_key
    from teep_coap.security.suit import build_envelope

    out("tam", "init", "--dir", "tam", cwd=tmp_path)
    info = out("agent", "init", "--state", "agent", "--tam-key", "tam/keys/esp256/public.pem", cwd=tmp_path)
    assert len(info["kid"]) == 64
    dev = out(
        "tam",
        "device",
        "add",
        "--dir",
        "tam",
        "--key",
        "agent/key/public.pem",
        "--kid",
        info["kid"],
        "--psk-identity",
        "dev1",
        cwd=tmp_path,
    )
    assert dev["kid"] == info["kid"]
    st = load_agent_state(tmp_path / "agent")
    signer = load_signing_key(tmp_path / "tam/keys/esp256/private.pem")
    for seq in (1, 2):
        env = build_envelope(
            f"TA v{seq}".encode(),
            key=signer,
            component_id=(b"TEEP-Device", b"SecureFS", b"\x07" * 16, b"ta"),
            sequence_number=seq,
            vendor_id=st.config.vendor_id,
            class_id=st.config.class_id,
        )
        (tmp_path / f"ta{seq}.suit").write_bytes(env)
    return tmp_path


def test_scripted_session(folders: Path) -> None:
    d = folders
    added = out("tam", "component", "add", "--dir", "tam", "ta1.suit", "--audience", "all", cwd=d)
    assert added["sequence_number"] == 1 and added["component_id"][0] == "TEEP-Device"
    qr = out(
        "tam", "process", "--dir", "tam", "--connect", "--transport-identity", "dev1", "-o", "1.cbor", cwd=d
    )
    assert qr["response"]["cose"] == "COSE_Sign1" and qr["response"]["message"]["type"] == 1
    r = out("agent", "process", "--state", "agent", "1.cbor", "-o", "2.cbor", cwd=d)
    assert r["response"]["message"]["type"] == 2
    u = out("tam", "process", "--dir", "tam", "2.cbor", "--transport-identity", "dev1", "-o", "3.cbor", cwd=d)
    assert u["response"]["message"]["type"] == 3 and len(u["response"]["message"]["manifest-list"]) == 1
    s = out("agent", "process", "--state", "agent", "3.cbor", "-o", "4.cbor", cwd=d)
    assert s["response"]["message"]["type"] == 5 and s["note"] == "Update applied"
    end = out("tam", "process", "--dir", "tam", "4.cbor", "-o", "5.cbor", cwd=d)
    assert end == {"response": None} and (d / "5.cbor").read_bytes() == b""
    # a duplicate of the Success is ignored
    assert out("tam", "process", "--dir", "tam", "4.cbor", cwd=d) == {"response": None}
    status = out("agent", "status", "--state", "agent", cwd=d)
    assert [c["sequence_number"] for c in status["installed"]] == [1]
    devices = out("tam", "device", "list", "--dir", "tam", cwd=d)
    assert devices[0]["components"][0]["installed_seq"] == 1
    sessions = out("tam", "sessions", "--dir", "tam", "--audit", cwd=d)
    assert sessions[0]["outcome"] == "success" and sessions[0]["audit"][0]["event"] == "session-start"


def test_agent_answers_error_with_exit_0(folders: Path) -> None:
    d = folders
    (d / "junk.bin").write_bytes(b"\xd2\x84\x40")
    r = out("agent", "process", "--state", "agent", "junk.bin", "-o", "err.cbor", cwd=d)
    assert r["response"]["message"]["type"] == 6 and r["response"]["message"]["err-code"] == 1
    assert (d / "err.cbor").read_bytes()[:1] == b"\xd2"


def test_agent_processes_unsigned_vector_when_asked(folders: Path) -> None:
    from tests.conftest import VECTORS_DIR

    vec = str(VECTORS_DIR / "query_request.hex.txt")
    r = out("agent", "process", "--state", "agent", vec, cwd=folders)
    assert r["response"]["message"]["err-msg"] == "message is not COSE-signed"
    r = out("agent", "process", "--state", "agent", "--accept-unsigned", vec, cwd=folders)
    assert r["response"]["message"]["type"] == 2


def test_errors_are_one_line_exit_2(folders: Path) -> None:
    d = folders
    p = run("tam", "process", "--dir", "tam", "ta1.suit", cwd=d, ok=False)  # not a TEEP message
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not a signed TEEP message" in p.stderr
    p = run("tam", "process", "--dir", "tam", cwd=d, ok=False)
    assert p.returncode == 2 and "either --connect or a message FILE" in p.stderr
    p = run("agent", "process", "--state", "nowhere", "x", cwd=d, ok=False)
    assert p.returncode == 2
    p = run("agent", "process", "--state", "tam", "ta1.suit", cwd=d, ok=False)  # a TAM folder, not an Agent
    assert p.returncode == 2 and "not an Agent folder" in p.stderr and "Traceback" not in p.stderr
    p = run("tam", "device", "add", "--dir", "tam", "--key", "agent/key/public.pem", cwd=d, ok=False)
    assert p.returncode == 2 and "already registered" in p.stderr
    p = run(
        "tam",
        "device",
        "add",
        "--dir",
        "tam",
        "--key",
        "agent/key/public.pem",
        "--kid",
        "00",
        cwd=d,
        ok=False,
    )
    assert p.returncode == 2 and "does not match" in p.stderr
    p = run("agent", "init", "--state", "agent", "--tam-key", "tam/keys/esp256/public.pem", cwd=d, ok=False)
    assert p.returncode == 2 and "already holds an Agent" in p.stderr


def test_policy_sync_and_request(folders: Path) -> None:
    d = folders
    (d / "tam" / "policy.toml").write_text(
        '[[component]]\nname = "seven"\nenvelope = "../ta2.suit"\naudience = "request"\n'
    )
    assert out("tam", "policy-sync", "--dir", "tam", "tam/policy.toml", cwd=d)["components"] == 1
    req = out(
        "agent",
        "request-ta",
        "--state",
        "agent",
        "--tam-uri",
        "coap://t/tam",
        "TEEP-Device",
        "SecureFS",
        "hex:" + "07" * 16,
        "ta",
        cwd=d,
    )
    assert req == {"tam_uri": "coap://t/tam"}
    run("tam", "process", "--dir", "tam", "--connect", "-o", "1.cbor", cwd=d)
    run("agent", "process", "--state", "agent", "1.cbor", "-o", "2.cbor", cwd=d)
    run("tam", "process", "--dir", "tam", "2.cbor", "-o", "3.cbor", cwd=d)
    run("agent", "process", "--state", "agent", "3.cbor", "-o", "4.cbor", cwd=d)
    run("tam", "process", "--dir", "tam", "4.cbor", cwd=d)
    status = out("agent", "status", "--state", "agent", cwd=d)
    assert [c["sequence_number"] for c in status["installed"]] == [2] and status["requested"] == []


def test_bench_engine_json(tmp_path: Path) -> None:
    r = out("bench", "engine", "--sessions", "2", "--json", cwd=tmp_path)
    assert r["sessions"] == 2 and r["sessions_per_s"] > 0 and r["messages_per_session"] == 4
    assert 0 < r["crypto_share"] < 1 and r["signatures_per_session"] == 7
