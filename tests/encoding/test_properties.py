"""Property tests: random valid messages round-trip through CBOR and JSON; random and mutated bytes
only ever raise TeepDecodeError."""

from __future__ import annotations

import dataclasses

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teep_coap.encoding import decode, encode
from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.encoding.json_codec import from_json, to_json
from teep_coap.model import TeepMessage
from tests.conftest import read_hex_vector
from tests.encoding.strategies import messages

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VECTORS = [
    read_hex_vector(n) for n in ("query_request", "query_response", "update", "teep_success", "teep_error")
]


@SETTINGS
@given(messages)
def test_cbor_round_trip(msg: TeepMessage) -> None:
    data = encode(msg)
    again = decode(data)
    assert again == msg
    assert encode(again) == data


@SETTINGS
@given(messages, st.randoms(use_true_random=False))
def test_label_order_round_trip(msg: TeepMessage, rnd: object) -> None:
    labels = list(decode(encode(msg)).label_order or ())
    rnd.shuffle(labels)  # type: ignore[attr-defined]
    shuffled = dataclasses.replace(msg, label_order=tuple(labels))
    data = encode(shuffled)
    again = decode(data)
    assert again.label_order == tuple(labels)
    assert encode(again) == data


@SETTINGS
@given(messages)
def test_json_round_trip(msg: TeepMessage) -> None:
    decoded = decode(encode(msg))
    again = from_json(to_json(decoded))
    assert again == msg
    assert again.label_order == decoded.label_order
    assert encode(again) == encode(decoded)


def _only_decode_errors(data: bytes) -> None:
    try:
        msg = decode(data)
    except TeepDecodeError:
        return
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__} escaped decode({data.hex()}): {exc}") from exc
    assert encode(msg) == data  # whatever is accepted re-encodes byte for byte


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    _only_decode_errors(data)


@SETTINGS
@given(st.binary(max_size=40).map(lambda b: bytes([0x82 + (len(b) % 4), 1 + len(b) % 6]) + b))
def test_random_arrays(data: bytes) -> None:
    _only_decode_errors(data)


@SETTINGS
@given(
    st.sampled_from(VECTORS),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255), st.integers(0, 2)), min_size=1, max_size=4),
)
def test_mutated_vectors(vector: bytes, edits: list[tuple[int, int, int]]) -> None:
    data = bytearray(vector)
    for pos, value, op in edits:
        pos %= len(data) + 1
        if op == 0 and pos < len(data):
            data[pos] = value
        elif op == 1:
            data.insert(pos, value)
        elif pos < len(data):
            del data[pos]
    _only_decode_errors(bytes(data))


# Arbitrary CBOR, including tags cbor2 interprets (dates, bignums, rationals, value sharing, string
# references, ...), big integers, non-finite floats, placed where a message has known fields or
# extensions: decode must only ever raise TeepDecodeError, and what it accepts re-encodes exactly.
_SEMANTIC_TAGS = [0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 100, 256, 258, 260, 261, 1004, 43000, 55799]
_wild_leaf = st.one_of(
    st.integers(-(1 << 80), 1 << 80),
    st.floats(),
    st.binary(max_size=20),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
)


def _wild_containers(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.integers(-30, 30), st.text(max_size=3)), children, max_size=3),
        st.builds(cbor2.CBORTag, st.sampled_from(_SEMANTIC_TAGS) | st.integers(0, (1 << 64) - 1), children),
    )


wild = st.recursive(_wild_leaf, _wild_containers, max_leaves=10)


@st.composite
def wild_messages(draw: st.DrawFn) -> bytes:
    mtype = draw(st.sampled_from([1, 2, 3, 5, 6, 4, 0]))
    options = draw(
        st.dictionaries(
            st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 19, 20, 21, 22, 23, 24, 99]),
            wild,
            max_size=3,
        )
    )
    tail = draw(st.lists(wild, max_size=4))
    try:
        return cbor2.dumps([mtype, options, *tail])
    except Exception:
        return bytes([0x82, mtype, 0xA0])


@SETTINGS
@given(wild_messages())
def test_wild_cbor_values(data: bytes) -> None:
    _only_decode_errors(data)
