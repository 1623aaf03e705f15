"""`teep-coap decode` / `encode`: exit codes, one-line stderr, decode->encode identity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest

from tests.conftest import VECTORS_DIR, read_hex_vector

VECTORS = ("query_request", "query_response", "update", "teep_success", "teep_error")
CLI = [sys.executable, "-c", "from teep_coap.cli import main; main()"]


def run(args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(CLI + args, input=stdin, capture_output=True, timeout=60, check=False)


@pytest.mark.parametrize("name", VECTORS)
def test_decode_then_encode_identity(name: str, tmp_path: Path) -> None:
    done = run(["decode", str(VECTORS_DIR / f"{name}.hex.txt")])
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert isinstance(doc["type"], int)
    out = tmp_path / "out.cbor"
    again = run(["encode", "-", "-o", str(out)], stdin=done.stdout)
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == read_hex_vector(name)


def test_raw_cbor_stdin_and_unknown_labels() -> None:
    data = bytes.fromhex("8205a21450a0a1a2a3a4a5a6a7a8a9aaabacadaeaf1863a1f6d8628140")
    done = run(["decode", "-"], stdin=data)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["99"] == {"map": [[None, {"tag": 98, "value": [{"bstr": ""}]}]]}
    assert run(["encode", "-"], stdin=done.stdout).stdout == data


def test_cose_sign1_wrapped() -> None:
    payload = read_hex_vector("teep_success")
    cose = cbor2.dumps(cbor2.CBORTag(18, [bytes.fromhex("a10128"), {4: b"kid"}, payload, b"\x01" * 64]))
    done = run(["decode", "-"], stdin=cose)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["cose"]["type"] == "COSE_Sign1"
    assert doc["cose"]["protected"] == {"1": -9}
    assert doc["cose"]["verified"] is False
    assert doc["message"]["type"] == 5
    assert run(["encode", "-"], stdin=done.stdout).stdout == cose


@pytest.mark.parametrize(
    ("args", "stdin", "text"),
    [
        (["decode", "-"], b"\x82\x04\xa0", "message type 4 is unknown"),
        (["decode", "-"], b"# only a comment\n82 05 a0 00\n", "1 bytes follow the end"),
        (["decode", "/nonexistent/file"], b"", "cannot read /nonexistent/file"),
        (["encode", "-"], b"{not json", "not valid JSON"),
        (["encode", "-"], b'{"type": 5, "token": "x"}', "member 'token'"),
    ],
)
def test_errors_one_line_exit_2(args: list[str], stdin: bytes, text: str) -> None:
    done = run(args, stdin)
    assert done.returncode == 2
    err = done.stderr.decode()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert text in err


def test_cose_payload_error_names_the_wrapper() -> None:
    cose = cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"\x82\x04\xa0", b"sig"]))
    done = run(["decode", "-"], stdin=cose)
    assert done.returncode == 2
    assert b"COSE_Sign1 payload: message type 4 is unknown" in done.stderr


def test_encode_refuses_duplicate_members() -> None:
    done = run(["encode", "-"], stdin=b'{"type": 5, "type": 6}')
    assert done.returncode == 2 and b"duplicate JSON member 'type'" in done.stderr


def test_encode_hex_and_decode_compact(tmp_path: Path) -> None:
    src = VECTORS_DIR / "teep_success.hex.txt"
    compact = run(["decode", "--compact", str(src)])
    assert compact.returncode == 0 and compact.stdout.count(b"\n") == 1
    out = run(["encode", "--hex", "-"], stdin=compact.stdout)
    assert out.returncode == 0
    assert bytes.fromhex(out.stdout.decode().strip()) == read_hex_vector("teep_success")


def test_bench_codec_json() -> None:
    done = run(["bench", "codec", "--seconds", "0.01", "--json"])
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["name"] for r in rows][:5] == list(VECTORS)
    assert all(r["decode_ops"] > 0 and r["cbor2_loads_ops"] > 0 for r in rows)
    assert all(r["plain_check_compiled"] is True for r in rows)  # CI measures the usual path
