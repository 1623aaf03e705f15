"""Strict decoding: each malformed shape is a SuitParseError that names the problem."""

from __future__ import annotations

import cbor2
import pytest

from teep_coap.security.suit import SuitParseError, parse_envelope
from teep_coap.security.suit.codec import decode_sequence
from tests.security.test_suit_support import envelope


def env_with_manifest(manifest: object) -> bytes:
    return cbor2.dumps({2: cbor2.dumps([cbor2.dumps([-16, bytes(32)])]), 3: cbor2.dumps(manifest)})


GOOD_COMMON = cbor2.dumps({2: [[b"a"]]})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x81" * 100_000 + b"\x00", "nesting"),
        (b"\x9b" + b"\xff" * 8, "not valid CBOR"),
        (b"\x5b\x7f" + b"\xff" * 7, "not valid CBOR"),
        (envelope(1) + b"\x00", "trailing"),
        (cbor2.dumps(cbor2.CBORTag(1070, {})), "tag 1070"),
        (cbor2.dumps([1, 2]), "expected a map"),
        (cbor2.dumps({3: b""}), "authentication-wrapper"),
        (cbor2.dumps({2: cbor2.dumps([cbor2.dumps([-16, bytes(32)])])}), "no manifest"),
        (cbor2.dumps({2: b"\xa0", 3: b""}), "authentication-wrapper"),
        (cbor2.dumps({True: b""}), "neither an integer"),
        (env_with_manifest({1: 1, 2: 0}), "common"),
        (env_with_manifest({1: 2, 2: 0, 3: GOOD_COMMON}), "manifest-version 2"),
        (env_with_manifest({1: 1, 2: -1, 3: GOOD_COMMON}), "unsigned"),
        (env_with_manifest({1: 1, 2: 0, 3: GOOD_COMMON, 20: [1, 2, 3]}), "severed"),
        (env_with_manifest({1: 1, 2: 0, 3: GOOD_COMMON, 20: "x"}), "byte string"),
        (env_with_manifest({1: 1, 2: 0, 3: cbor2.dumps({2: []})}), "non-empty"),
        (env_with_manifest({1: 1, 2: 0, 3: cbor2.dumps({2: [["a"]]})}), "byte string"),
        (env_with_manifest({1: 1, 2: 0, 3: GOOD_COMMON, 4: b"uri"}), "reference-uri"),
    ],
)
def test_malformed_envelopes(data: bytes, message: str) -> None:
    with pytest.raises(SuitParseError, match=message):
        parse_envelope(data)


@pytest.mark.parametrize(
    ("seq", "message"),
    [
        (b"\x9b\x00\x00\x00\x01\x00\x00\x00\x00", "claims"),
        (b"\x9f\x01\x0f\xff", "indefinite"),
        (cbor2.dumps([]), "non-empty"),
        (cbor2.dumps([1]), "pairs"),
        (cbor2.dumps(["x", 1]), "not an integer"),
        (cbor2.dumps([1, -1]), "unsigned"),
        (cbor2.dumps([20, {1: b"short"}]), "16-byte UUID"),
        (cbor2.dumps([20, {3: b"\x00"}]), "SUIT_Digest"),
        (cbor2.dumps([20, {14: "big"}]), "unsigned"),
        (cbor2.dumps([20, {21: b"not text"}]), "text string"),
        (cbor2.dumps([20, {"k": 1}]), "not an integer"),
        (cbor2.dumps([12, []]), "empty"),
        (cbor2.dumps([15, [cbor2.dumps([14, 0])]]), "at least two"),
        (cbor2.dumps([32, "x"]), "byte string"),
    ],
)
def test_malformed_sequences(seq: bytes, message: str) -> None:
    with pytest.raises(SuitParseError, match=message):
        decode_sequence(seq, "test")


def test_nesting_limit() -> None:
    inner = cbor2.dumps([14, 0])
    for _ in range(8):
        inner = cbor2.dumps([32, inner])
    assert len(decode_sequence(inner, "ok")) == 1
    inner = cbor2.dumps([32, inner])
    with pytest.raises(SuitParseError, match="nested deeper"):
        decode_sequence(inner, "too deep")


def test_try_each_with_trailing_nil_and_offsets() -> None:
    a, b = cbor2.dumps([1, 15]), cbor2.dumps([2, 15])
    seq = decode_sequence(cbor2.dumps([15, [a, b, None], 3, 15]), "s")
    alts = seq.commands[0].arg
    assert alts[2] is None and [c.code for c in alts[0]] == [1]
    assert [c.offset for c in seq] == [1, 1 + len(cbor2.dumps(15)) + len(cbor2.dumps([a, b, None]))]
    assert [c.code for c in seq.walk()] == [15, 1, 2, 3]
