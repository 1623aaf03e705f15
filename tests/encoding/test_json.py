"""The JSON twin: names, base64url, generic values, lossless round trips, precise errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


_json_values = st.recursive(
    st.one_of(
        st.integers(-(1 << 70), 1 << 70),
        st.floats(allow_nan=False),
        st.text(max_size=10),
        st.booleans(),
        st.none(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "token",
                    "bstr",
                    "map",
                    "tag",
                    "value",
                    "simple",
                    "err-code",
                    "99",
                    "tc-list",
                    "supported-teep-cipher-suites",
                    "extra-positional",
                    "float",
                    "undefined",
                ]
            ),
            children,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        _json_values,
        st.fixed_dictionaries(
            {"type": st.sampled_from([1, 2, 3, 5, 6])},
            optional={
                "token": _json_values,
                "99": _json_values,
                "err-code": _json_values,
                "tc-list": _json_values,
                "supported-teep-cipher-suites": _json_values,
                "extra-positional": _json_values,
            },
        ),
    )
)
def test_random_json_only_raises_teep_json_error(doc: object) -> None:
    try:
        msg = from_jsonable(doc)
    except TeepJsonError:
        return
    assert from_json(to_json(msg)) == msg


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_random_json_text(text: str) -> None:
    try:
        msg = from_json(text)
    except TeepJsonError:
        return
    assert from_json(to_json(msg)) == msg
