"""The JSON twin: names, base64url, generic values, lossless round trips, precise errors."""

from __future__ import annotations

import json

import pytest

from teep_coap.encoding import decode, encode
from teep_coap.encoding.json_codec import TeepJsonError, from_json, from_jsonable, to_json, to_jsonable
from tests.conftest import read_hex_vector


def test_query_request_json_names() -> None:
    obj = to_jsonable(decode(read_hex_vector("query_request")))
    assert list(obj) == [
        "type",
        "token",
        "versions",
        "supported-teep-cipher-suites",
        "supported-suit-cose-profiles",
        "data-item-requested",
    ]
    assert obj["token"] == "oKGio6SlpqeoqaqrrK2urw"  # base64url, no padding
    assert obj["supported-teep-cipher-suites"] == [[[18, -9]], [[18, -19]]]


def test_unknown_labels_and_order() -> None:
    data = bytes.fromhex(
        "8203 a3 1863 a2 6161 f5 01 82 40 f93e00 1450a0a1a2a3a4a5a6a7a8a9aaabacadaeaf 0a 81 4100".replace(
            " ", ""
        )
    )
    msg = decode(data)
    obj = to_jsonable(msg)
    assert list(obj) == ["type", "99", "token", "manifest-list"]
    assert obj["99"] == {"map": [["a", True], [1, [{"bstr": ""}, 1.5]]]}
    again = from_json(json.dumps(obj))
    assert again == msg and again.label_order == (99, 20, 10)
    assert encode(again) == data


@pytest.mark.parametrize(
    ("doc", "text"),
    [
        ("[1]", "is an object, got array"),
        ('{"token": "AAAAAAAAAAA"}', 'member "type" is missing'),
        ('{"type": 4}', "message type 4 is unknown"),
        ('{"type": 5, "token": "oKGio6SlpqeoqaqrrK2urw=="}', "member 'token': base64url string contains '='"),
        ('{"type": 5, "token": "AAAA"}', "token is 3 bytes, must be 8..64"),
        ('{"type": 5, "tokn": "AAAA"}', "unknown member 'tokn'"),
        ('{"type": 5, "20": {"bstr": "AAAAAAAAAAA"}}', "label 20 must be written 'token'"),
        ('{"type": 6}', "positional member 'err-code' is missing"),
        ('{"type": 6, "err-code": true}', "expected unsigned integer, got true"),
        ('{"type": 5, "99": {"weird": 1}}', "is not a generic CBOR value"),
        ('{"type": 5, "type": 5}', "duplicate JSON member 'type'"),
        ('{"type": 5, "99": NaN}', "JSON constant NaN is not allowed"),
        ('{"type": 5', "not valid JSON"),
        (
            '{"type": 1, "supported-teep-cipher-suites": [], "supported-suit-cose-profiles": [[1,2,3,4]], '
            '"data-item-requested": 0}',
            "array is empty",
        ),
    ],
)
def test_json_errors(doc: str, text: str) -> None:
    with pytest.raises(TeepJsonError) as info:
        from_json(doc)
    assert text in str(info.value)


def test_from_jsonable_rejects_non_object() -> None:
    with pytest.raises(TeepJsonError):
        from_jsonable("x")


def test_all_vectors_json_round_trip() -> None:
    for name in ("query_request", "query_response", "update", "teep_success", "teep_error"):
        data = read_hex_vector(name)
        assert encode(from_json(to_json(decode(data)))) == data
