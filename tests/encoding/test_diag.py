"""CBOR diagnostic notation: `decode --diag` names CDDL members and `encode --diag` gives the bytes back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cbor2
import pytest

from teep_coap.encoding.diag import DiagError, cbor_to_diag, diag_to_cbor
from teep_coap.encoding.errors import NotCbor
from teep_coap.security import cose
from teep_coap.security.keys import generate_key
from tests.conftest import VECTORS_DIR, read_hex_vector

VECTORS = ("query_request", "query_response", "update", "teep_success", "teep_error")
CLI = [sys.executable, "-c", "from teep_coap.cli import main; main()"]


def run(args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(CLI + args, input=stdin, capture_output=True, timeout=60, check=False)


@pytest.mark.parametrize("name", VECTORS)
def test_vectors_round_trip_byte_exact(name: str) -> None:
    data = read_hex_vector(name)
    text = cbor_to_diag(data)
    assert "/ token / 20:" in text
    assert diag_to_cbor(text) == data


def test_names_where_they_fit() -> None:
    text = cbor_to_diag(read_hex_vector("query_request"))
    assert "/ type: query-request / 1" in text
    assert "/ supported-teep-cipher-suites / [[[18, -9]], [[18, -19]]]" in text
    assert "/ data-item-requested / 3" in text
    assert "/ err-code / 17" in cbor_to_diag(read_hex_vector("teep_error"))


def test_cose_sign1_shows_headers_and_embedded_message() -> None:
    message = read_hex_vector("teep_success")
    signed = cose.sign1(message, generate_key("esp256"))
    text = cbor_to_diag(signed)
    assert text.startswith("/ COSE_Sign1 / 18([")
    assert "/ protected / << {" in text and "/ alg / 1: -9" in text
    assert "/ payload: TEEP message / << [" in text and "/ type: teep-success / 5" in text
    assert diag_to_cbor(text) == signed


def test_not_shortest_encodings_survive() -> None:
    # a non-shortest integer, an indefinite array and an indefinite byte string: printed with
    # cbor-diag's encoding indicators and read back exactly
    for data in (bytes.fromhex("82180101"), bytes.fromhex("9f0102ff"), bytes.fromhex("5f4101ff")):
        assert diag_to_cbor(cbor_to_diag(data)) == data


def test_any_cbor_item() -> None:
    data = cbor2.dumps({"a": [1.5, None, True]})
    assert diag_to_cbor(cbor_to_diag(data)) == data


def test_bad_inputs_are_typed_errors() -> None:
    with pytest.raises(NotCbor):
        cbor_to_diag(b"\x82\x01")
    with pytest.raises(DiagError, match="line 1"):
        diag_to_cbor("[1,")


def test_cli_decode_encode_diag(tmp_path: Path) -> None:
    done = run(["decode", "--diag", str(VECTORS_DIR / "update.hex.txt")])
    assert done.returncode == 0, done.stderr
    assert b"/ manifest-list / 10:" in done.stdout
    out = tmp_path / "update.cbor"
    again = run(["encode", "--diag", "-", "-o", str(out)], stdin=done.stdout)
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == read_hex_vector("update")
    bad = run(["encode", "--diag", "-"], stdin=b"[1,")
    assert bad.returncode == 2
    assert bad.stderr.startswith(b"teep-coap: error: not CBOR diagnostic notation")
    assert len(bad.stderr.splitlines()) == 1
