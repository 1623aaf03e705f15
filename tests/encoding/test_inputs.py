"""Hex-text input detection, the COSE view, model defaults, and the codec benchmark's plumbing."""

from __future__ import annotations

import cbor2
import pytest

from teep_coap.bench.codec import paired_rates, run_codec_bench
from teep_coap.encoding import decode, encode
from teep_coap.encoding.cose_view import CoseViewError, is_cose, join_cose, split_cose
from teep_coap.encoding.errors import NotCbor
from teep_coap.encoding.hextext import (
    InputError,
    looks_like_hex,
    parse_hex_text,
    read_cbor_input,
    read_source,
)
from teep_coap.model import QueryRequest
from tests.conftest import VECTORS_DIR, read_hex_vector


def test_hex_text_with_comments_is_detected() -> None:
    text = (VECTORS_DIR / "teep_error.hex.txt").read_bytes()
    assert looks_like_hex(text)
    assert read_cbor_input(text) == read_hex_vector("teep_error")


def test_raw_cbor_is_not_hex() -> None:
    for name in ("query_request", "query_response", "update", "teep_success", "teep_error"):
        raw = read_hex_vector(name)
        assert not looks_like_hex(raw)
        assert read_cbor_input(raw) == raw


def test_hex_variants_and_errors() -> None:
    assert parse_hex_text("0x82, 0x05 # c\n a0") == bytes.fromhex("8205a0")
    assert parse_hex_text("82:05:a0") == bytes.fromhex("8205a0")
    with pytest.raises(InputError, match="odd number of digits"):
        parse_hex_text("820")
    with pytest.raises(NotCbor, match="non-hex character 'g'"):
        parse_hex_text("82g5")
    with pytest.raises(InputError, match="cannot read /no/such"):
        read_source("/no/such")


def _sign1(payload: bytes) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(18, [bytes.fromhex("a10128"), {4: b"kid"}, payload, b"\x02" * 64]))


def test_cose_sign1_view_round_trip() -> None:
    data = _sign1(read_hex_vector("teep_success"))
    assert is_cose(data)
    view, payload = split_cose(data)
    assert view["type"] == "COSE_Sign1" and view["protected"] == {"1": -9}
    assert view["unprotected"] == {"4": {"bstr": "a2lk"}} and view["verified"] is False
    assert decode(payload) == decode(read_hex_vector("teep_success"))
    assert join_cose(view, payload) == data


def test_cose_sign_view_round_trip() -> None:
    payload = read_hex_vector("query_request")
    sigs = [
        [bytes.fromhex("a10128"), {4: b"a"}, b"\x01" * 64],
        [bytes.fromhex("a10132"), {4: b"b"}, b"\x03" * 64],
    ]
    data = cbor2.dumps(cbor2.CBORTag(98, [b"", {}, payload, sigs]))
    view, got = split_cose(data)
    assert view["type"] == "COSE_Sign" and len(view["signatures"]) == 2
    assert view["signatures"][1]["protected"] == {"1": -19}
    assert got == payload
    assert join_cose(view, got) == data


def test_cose_layout_errors() -> None:
    with pytest.raises(CoseViewError, match="array of 4 elements"):
        split_cose(cbor2.dumps(cbor2.CBORTag(18, [b"", {}])))
    with pytest.raises(CoseViewError, match="detached"):
        split_cose(cbor2.dumps(cbor2.CBORTag(18, [b"", {}, None, b"x"])))


def test_default_query_request_encodes() -> None:
    """The model's defaults (IntEnum members) encode like plain integers and match the example's suites."""
    msg = QueryRequest(token=bytes(range(0xA0, 0xB0)), versions=(0,), data_item_requested=3)
    assert encode(msg) == read_hex_vector("query_request")


def test_bench_runs_and_pairs() -> None:
    ours, ref = paired_rates(lambda: None, lambda: None, 0.01)
    assert ours > 0 and ref > 0
    results = run_codec_bench(seconds=0.01, vectors_dir=VECTORS_DIR)
    assert [r.name for r in results][-1] == "update_large"
    assert all(r.decode_ops > 0 and r.encode_ratio > 0 for r in results)
    assert results[0].as_dict()["size"] == 64


def test_hex_with_non_ascii_comment() -> None:
    assert looks_like_hex("82 05 # négatif\na0\n".encode())
    assert read_cbor_input("82 05 # négatif\na0\n".encode()) == bytes.fromhex("8205a0")
