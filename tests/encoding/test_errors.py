"""Each malformed input raises its specific TeepDecodeError subclass with a message saying what/where."""

from __future__ import annotations

import pytest

from teep_coap.encoding import decode, encode
from teep_coap.encoding import errors as E
from teep_coap.encoding.errors import TeepEncodeError
from teep_coap.model import Error, QueryRequest, QueryResponse, Success, SystemPropertyClaims, Update
from tests.conftest import read_hex_vector

TOK = "50a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"  # bstr(16)
SUITES_PROFILES = "81 8182 1228 81 84 2f 28 381c 01"

CASES = [
    ("", E.NotCbor, "empty input"),
    ("1c", E.NotCbor, "reserved additional information 28 at offset 0"),
    ("8205a0 00", E.TrailingBytes, "1 bytes follow the end of the CBOR item at offset 3"),
    ("8200", E.NotCbor, "truncated"),
    ("a0", E.NotAnArray, "got map"),
    ("80", E.MissingPositional, "element 0 (type)"),
    ("8204a0", E.UnknownMessageType, "message type 4 is unknown"),
    ("8218 63 a0", E.UnknownMessageType, "message type 99"),
    ("8241 05 a0", E.WrongType, "element 0 (type): expected unsigned integer, got byte string"),
    ("8105", E.MissingPositional, "success: element 1 (options map) is missing"),
    ("820580", E.WrongType, "success element 1 (options): expected map, got array"),
    ("8206a0", E.MissingPositional, "error: element 2 (err-code) is missing"),
    ("8306a0 20", E.WrongType, "error element 2 (err-code): expected unsigned integer, got negative integer"),
    ("8301a0 81 8182 1228", E.MissingPositional, "element 3 (supported-suit-cose-profiles) is missing"),
    (
        "8501a0 80 81 84 2f 28 381c 01 03",
        E.SizeOutOfRange,
        "element 2 (supported-teep-cipher-suites): array is empty",
    ),
    (
        "8501a0 81 8182 12 f5 81 84 2f 28 381c 01 03",
        E.WrongType,
        "item 0: operation 0: alg: expected integer",
    ),
    ("8501a0 81 8182 1228 81 83 2f 28 381c 03", E.WrongType, "SUIT COSE profile must be"),
    ("8501a0 " + SUITES_PROFILES + " 20", E.WrongType, "element 4 (data-item-requested)"),
    ("8205 a1 14 43 010203", E.SizeOutOfRange, "label 20 (token): token is 3 bytes, must be 8..64"),
    ("8205 a1 14 6461626364", E.WrongType, "label 20 (token): expected byte string of 8..64 bytes, got text"),
    ("8205 a1 0b 60", E.SizeOutOfRange, "label 11 (msg): text is 0 UTF-8 bytes, must be 1..128"),
    ("8306 a1 16 60 01", E.SizeOutOfRange, "label 22 (err-lang)"),
    (
        "8306 a1 02 4401020304 01",
        E.SizeOutOfRange,
        "label 2 (challenge): challenge is 4 bytes, must be 8..512",
    ),
    (
        "8501 a1 03 81 1b0000000100000000 " + SUITES_PROFILES + " 03",
        E.SizeOutOfRange,
        "label 3 (versions): item 0: 4294967296 does not fit in 4 bytes",
    ),
    ("8501 a1 03 80 " + SUITES_PROFILES + " 03", E.SizeOutOfRange, "label 3 (versions): array is empty"),
    ("8205 a1 61 61 00", E.WrongType, "key 'a' is a text string, expected an unsigned integer label"),
    (
        "8205 a1 c249010000000000000000 00",
        E.WrongType,
        "key <large integer> is a unsigned integer, expected an",
    ),
    ("8202 a1 0e 81 a2 10 80 c249010000000000000000 00", E.WrongType, "expected an unsigned integer label"),
    ("8202 a1 08 81 a2 00 80 c349010000000000000000 00", E.WrongType, "expected an integer label"),
    ("9f05a0ff", E.IndefiniteLength, "indefinite-length array at offset 0"),
    ("8205 bf ff", E.IndefiniteLength, "indefinite-length map at offset 2"),
    ("8205 a1 1863 5f 41 00 ff", E.IndefiniteLength, "indefinite-length byte string at offset 5"),
    ("8205 b800", E.NotDeterministic, "map head at offset 2 uses 2 bytes"),
    ("8205 a1 1814 " + TOK, E.NotDeterministic, "unsigned integer head at offset 3 uses 2 bytes"),
    ("8205 a2 14" + TOK + "14" + TOK, E.DuplicateKey, "duplicate map key at offset 21"),
    ("8205 a1 1863 fa3fc00000", E.NotDeterministic, "float at offset 5 is 4 bytes wide"),
    ("8202 a1 08 81 a2 00 80 03 fb3ff8000000000000", E.NotDeterministic, "float at offset 9 is 8 bytes wide"),
    (
        "8202 a1 0e 81 a2 10 80 1863 fb3ff8000000000000",
        E.NotDeterministic,
        "float at offset 10 is 8 bytes wide",
    ),
    ("8202 a1 05 fb3ff8000000000000", E.NotDeterministic, "float at offset 4 is 8 bytes wide"),
    ("8406 a0 01 fb3ff8000000000000", E.NotDeterministic, "float at offset 4 is 8 bytes wide"),
    ("8205 a1 1863 d81e820103", E.UnsupportedValue, "fractions.Fraction (from CBOR tag 30)"),
    ("8205 a1 1863 d81c 00", E.UnsupportedValue, "CBOR tag 28 (shareable value)"),
    (
        "8205 a1 1863 d8255001020304050607080910111213141516",
        E.UnsupportedValue,
        "uuid.UUID (from CBOR tag 37)",
    ),
    ("8205 a1 1863 62ffff", E.NotCbor, "not valid UTF-8"),
    ("8205 a1 1863 ff", E.NotCbor, "unexpected break byte 0xff"),
    ("8205 a1 1863 f818", E.NotCbor, "simple value 24"),
    ("8202 a1 08 81 a1 00 80", E.MissingMember, "at least one SUIT parameter"),
    ("8202 a1 0e 81 a1 11 01", E.MissingMember, "requested-tc-info has no label 16 (component-id)"),
    ("8202 a1 0e 81 a2 10 80 12 01", E.WrongType, "label 18 (have-binary): expected true or false"),
    (
        "8202 a1 0f 81 81 01",
        E.WrongType,
        "label 15 (unneeded-manifest-list): item 0: item 0: expected byte string",
    ),
]


@pytest.mark.parametrize(("hexdata", "cls", "text"), CASES)
def test_decode_error(hexdata: str, cls: type[Exception], text: str) -> None:
    with pytest.raises(cls) as info:
        decode(bytes.fromhex(hexdata.replace(" ", "")))
    assert type(info.value) is cls
    assert text in str(info.value)
    assert isinstance(info.value, E.TeepDecodeError) and isinstance(info.value, ValueError)


def test_too_large() -> None:
    data = read_hex_vector("update")
    with pytest.raises(E.TooLarge, match="360 bytes, over the limit of 100"):
        decode(data, max_size=100)


def test_too_deep() -> None:
    data = bytes.fromhex("8205a11863") + b"\x81" * 20 + b"\x00"
    with pytest.raises(E.TooDeep, match="nesting deeper than 16"):
        decode(data)
    assert decode(data, max_depth=30).extensions[99] == [[[[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]]]
    with pytest.raises(E.TooDeep):
        decode(bytes.fromhex("81" * 100000 + "00"))
    with pytest.raises(E.TooDeep):
        decode(read_hex_vector("query_request"), max_depth=3)


def test_not_bytes() -> None:
    with pytest.raises(E.NotCbor, match="input must be bytes"):
        decode("8205a0")  # type: ignore[arg-type]


def test_huge_lengths_fail_fast() -> None:
    for head in ("5bffffffffffffffff", "9bffffffffffffffff", "bb0fffffffffffffff", "7a7fffffff"):
        with pytest.raises(E.NotCbor, match="truncated"):
            decode(bytes.fromhex("8205a11863" + head))


# ---------------------------------------------------------------- legacy acceptance


def test_legacy_algorithms_accepted() -> None:
    legacy = bytearray(read_hex_vector("query_request"))
    legacy = bytearray(bytes(legacy).replace(bytes.fromhex("8212 28"), bytes.fromhex("8212 26")))
    legacy = bytearray(bytes(legacy).replace(bytes.fromhex("8212 32"), bytes.fromhex("8212 27")))
    msg = decode(bytes(legacy))
    assert isinstance(msg, QueryRequest)
    assert msg.supported_teep_cipher_suites == (((18, -7),), ((18, -8),))
    assert encode(msg) == bytes(legacy)


def test_legacy_label_5_query_response() -> None:
    data = bytes.fromhex("8202 a2 14" + TOK + "05 81 8212 26".replace(" ", ""))
    msg = decode(data)
    assert isinstance(msg, QueryResponse)
    assert msg.selected_teep_cipher_suite == [[18, -7]]
    assert msg.extensions == {}
    assert encode(msg) == data


def test_legacy_label_5_elsewhere_is_an_extension() -> None:
    data = bytes.fromhex("8205 a2 14" + TOK + "05 81 8212 26")
    msg = decode(data)
    assert isinstance(msg, Success) and msg.extensions == {5: [[18, -7]]}
    assert encode(msg) == data


def test_unknown_labels_round_trip() -> None:
    data = bytes.fromhex("8203 a3 1863 a2 6161 f5 01 82 40 f93e00 14" + TOK + "0a 81 4100")
    msg = decode(data)
    assert isinstance(msg, Update)
    assert msg.extensions == {99: {"a": True, 1: [b"", 1.5]}}
    assert msg.label_order == (99, 20, 10)
    assert encode(msg) == data


# ---------------------------------------------------------------- encoder checks


@pytest.mark.parametrize(
    ("msg", "text"),
    [
        (Success(token=b"short"), "label 20 (token): token is 5 bytes, must be 8..64"),
        (Success(msg=""), "label 11 (msg): text is 0 UTF-8 bytes"),
        (Success(msg="é" * 65), "text is 130 UTF-8 bytes, must be 1..128"),
        (Error(err_code=-1), "element 2 (err-code): expected unsigned integer, got negative integer"),
        (Error(err_code=1, err_lang="x" * 36), "label 22 (err-lang)"),
        (Error(err_code=1, versions=(1 << 32,)), "does not fit in 4 bytes"),
        (Error(err_code=1, challenge=b"1234567"), "challenge is 7 bytes"),
        (QueryRequest(supported_teep_cipher_suites=()), "array is empty"),
        (QueryRequest(data_item_requested=True), "expected unsigned integer, got true"),  # type: ignore[arg-type]
        (Success(extensions={20: b"x"}), "label 20 (token) is a known field"),
        (Success(extensions={99: object()}), "not supported"),
        (Success(extensions={99: 1 << 70}), "64-bit CBOR range"),
        (QueryResponse(tc_list=(SystemPropertyClaims(component_id=(), parameters={}),)), "at least one SUIT"),
        (Update(manifest_list=("text",)), "expected byte string"),  # type: ignore[arg-type]
    ],
)
def test_encode_rejects_invalid_models(msg: object, text: str) -> None:
    with pytest.raises(TeepEncodeError) as info:
        encode(msg)  # type: ignore[arg-type]
    assert text in str(info.value)


# ---------------------------------------------------------------- bounded cost


def test_costly_tags_are_refused_before_cbor2_interprets_them() -> None:
    """A 200 KB bignum inside tag 4 takes cbor2 seconds (quadratic Decimal); we refuse it at once."""
    import time

    big = bytes(range(256)) * 800
    for tag in ("c4", "c5", "d81e"):
        data = (
            bytes.fromhex(f"8205a11863{tag}82 01 c25a".replace(" ", "")) + len(big).to_bytes(4, "big") + big
        )
        start = time.perf_counter()
        with pytest.raises(E.UnsupportedValue, match="is not supported"):
            decode(data)
        assert time.perf_counter() - start < 1.0


def test_value_sharing_and_string_references_refused() -> None:
    for body, text in (("d81c8100", "tag 28"), ("d90100 8163616263", "tag 256"), ("d9001c8100", "longer")):
        with pytest.raises((E.UnsupportedValue, E.NotDeterministic)) as info:
            decode(bytes.fromhex(("8205a11863" + body).replace(" ", "")))
        assert text in str(info.value) or "fewer suffice" in str(info.value)
