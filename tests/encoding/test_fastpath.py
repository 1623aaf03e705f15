"""The decoder's short way must return exactly what its checked way returns (message or error).

`decode` first tries a short way (the C determinism check `_plaincbor.plain` instead of the
re-encoding, kept cbor2 decoder, inline checks of the simple kinds, one-loop tc-list /
requested-tc-list); `_decode_checked` is the reference order. These tests run both on valid,
mutated and hostile inputs and compare the outcome: the same message (all fields, `label_order`
included) or the same error class and text.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teep_coap.encoding import decode, encode, values
from teep_coap.encoding.cbor_codec import DEFAULT_MAX_DEPTH, DEFAULT_MAX_SIZE, _decode_checked
from teep_coap.encoding.errors import NotDeterministic, UnsupportedValue
from teep_coap.encoding.fields import OPTION_FIELDS, POSITIONAL_FIELDS
from teep_coap.encoding.values import CHECKERS, FAST_CHECKS, Invalid
from teep_coap.model import QueryResponse, Success
from tests.conftest import read_hex_vector
from tests.encoding.strategies import messages
from tests.encoding.test_properties import wild_messages

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VECTORS = [
    read_hex_vector(n) for n in ("query_request", "query_response", "update", "teep_success", "teep_error")
]


def _fields(value: Any) -> Any:
    """Everything of a decoded value, `label_order` included (it is left out of `==`)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, sorted((k, _fields(v)) for k, v in vars(value).items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_fields(v) for v in value])
    if isinstance(value, dict):
        return ("dict", [(_fields(k), _fields(v)) for k, v in value.items()])
    return (type(value).__name__, repr(value))


def _outcome(fn: Any, data: bytes, max_depth: int) -> Any:
    try:
        return ("ok", _fields(fn(data, max_depth)))
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))


def _same(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    short = _outcome(lambda d, m: decode(d, max_depth=m), data, max_depth)
    checked = _outcome(lambda d, m: _decode_checked(d, DEFAULT_MAX_SIZE, m), data, max_depth)
    assert short == checked, data.hex()


def _mutants(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(data)
    for pos, value, op in edits:
        pos %= len(out) + 1
        if op == 0 and pos < len(out):
            out[pos] = value
        elif op == 1:
            out.insert(pos, value)
        elif op == 2 and pos < len(out):
            del out[pos]
        elif op == 3 and pos < len(out) and out[pos] & 31 < 24 and out[pos] >> 5 != 7:
            out[pos : pos + 1] = bytes([(out[pos] & 0xE0) | 24, out[pos] & 31])  # a longer head
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255), st.integers(0, 3)), max_size=3)


@SETTINGS
@given(messages, EDITS)
def test_short_way_matches_checked_way_on_messages(msg: Any, edits: list[tuple[int, int, int]]) -> None:
    data = encode(msg)
    _same(data)
    _same(_mutants(data, edits))


@SETTINGS
@given(st.sampled_from(VECTORS), EDITS, st.sampled_from([6, 7, 16, 398]))
def test_short_way_matches_checked_way_on_vectors(vector: bytes, edits: Any, max_depth: int) -> None:
    _same(_mutants(vector, edits), max_depth)


@SETTINGS
@given(wild_messages(), EDITS)
def test_short_way_matches_checked_way_on_wild_cbor(data: bytes, edits: list[tuple[int, int, int]]) -> None:
    _same(data)
    _same(_mutants(data, edits))


# The decoder checks the simple kinds inline (values.FAST_CHECKS) and calls the kind's checker only
# for what the inline check does not accept: both must agree on every value.
_EDGES = [b"x" * 7, b"x" * 8, b"x" * 64, b"x" * 65, b"x" * 512, b"x" * 513, b"", "a" * 35, "a" * 36]
_EDGES += ["a" * 128, "a" * 129, "\u00e9" * 17, "\u00e9" * 18, "\u00e9" * 64, "\u00e9" * 65, "", "\U0001f600"]
_EDGES += [0, -1, (1 << 32) - 1, 1 << 32, (1 << 64) - 1, 1 << 64, True, None, 1.5]
_EDGES += [[0xFFFFFFFF], [0x100000000], [(1 << 64) - 1], [1 << 64], [-1], [], [b""], [True], [0, "x"]]
_EDGES += [[b"a", b"b"], [b"a", 1], (b"a",), {0: 1}, [[b"a"], []], [[b"a", 1]], [[b"a"], "x"], [[[b"a"]]]]
_EDGE_VALUES = st.one_of(
    st.binary(max_size=70),
    st.text(max_size=140),
    st.integers(-(1 << 65), 1 << 65),
    st.lists(st.one_of(st.integers(-2, (1 << 32) + 2), st.binary(max_size=3), st.booleans()), max_size=3),
    st.sampled_from(_EDGES),
)
_FAST_OPTIONS = [
    (int(mtype), label, attr, kind)
    for mtype, specs in OPTION_FIELDS.items()
    for label, attr, kind in specs
    if kind in FAST_CHECKS
]
_REST = {1: [[[[18, -9]]], [[-16, -9, -29, 1]], 0], 6: [1]}  # positional members after the options


def _checker_says(kind: str, value: object) -> Any:
    try:
        return ("ok", _fields(CHECKERS[kind](value, 3, DEFAULT_MAX_DEPTH)))
    except Invalid as exc:
        return ("error", exc.cls.__name__)


def _decode_says(data: bytes, attr: str) -> Any:
    try:
        return ("ok", _fields(getattr(decode(data), attr)))
    except Exception as exc:
        return ("error", type(exc).__name__)


def _option_agrees(spec: tuple[int, int, str, str], value: object) -> None:
    mtype, label, attr, kind = spec
    data = cbor2.dumps([mtype, {label: value}, *_REST.get(mtype, [])])
    assert _decode_says(data, attr) == _checker_says(kind, value), (spec, value)


def test_inline_option_checks_agree_with_checkers_on_edges() -> None:
    for spec in _FAST_OPTIONS:
        for value in _EDGES:
            _option_agrees(spec, value)


@SETTINGS
@given(st.sampled_from(_FAST_OPTIONS), _EDGE_VALUES)
def test_inline_option_checks_agree_with_checkers(spec: tuple[int, int, str, str], value: object) -> None:
    _option_agrees(spec, value)


@pytest.mark.parametrize("mtype", [1, 6])
def test_inline_positional_checks_agree_with_checkers(mtype: int) -> None:
    attr, kind, _name = POSITIONAL_FIELDS[mtype][-1]  # data-item-requested, err-code: uint
    for value in _EDGES:
        data = cbor2.dumps([mtype, {}, *_REST[mtype][:-1], value])
        assert _decode_says(data, attr) == _checker_says(kind, value), value


@pytest.mark.parametrize(
    "value",
    [
        b"1234567",  # token too short
        b"12345678",
        b"x" * 64,
        b"x" * 65,  # too long
        "12345678",  # text, not bytes
        True,
        [b"12345678"],
    ],
)
def test_inline_token_check_agrees(value: object) -> None:
    _same(cbor2.dumps([5, {20: value}]))


@pytest.mark.parametrize(
    "value",
    ["", "a", "a" * 128, "a" * 129, "é" * 64, "é" * 65, "\u00e9", b"text", 5],
)
def test_inline_text_check_agrees(value: object) -> None:
    _same(cbor2.dumps([5, {11: value}]))  # msg: 1..128 UTF-8 bytes


@pytest.mark.parametrize(
    "value",
    [[0], [0xFFFFFFFF], [0x100000000], [], [True], [-1], [1, "x"], (1 << 64) - 1, 5, [b""]],
)
def test_inline_uint_list_check_agrees(value: object) -> None:
    _same(cbor2.dumps([2, {3: value, 9: value}]))  # query-response: versions is no label, ext-list is


@pytest.mark.parametrize(
    "tc_list",
    [
        [{0: [b"a"], 3: b"d"}],
        [{0: [b"a"]}],  # no parameter
        [{3: b"d"}],  # no component-id
        [{0: [b"a"], 3: [1, {2: 3.5}]}],
        [{False: [b"a"], 3: b"d"}],
        [{0: (b"a",), 3: b"d"}],
        [{0: [b"a", 5], 3: b"d"}],
        [{0: [b"a"], -3: b"d", 1 << 70: 1}],
        [{0: [b"a"], -(1 << 64) - 1: 1}],
        [{0: [b"a"], -(1 << 64): 1, (1 << 64) - 1: -(1 << 64)}],
        [[0, b"a"]],
    ],
)
def test_fast_tc_list_agrees(tc_list: object) -> None:
    _same(cbor2.dumps([2, {8: tc_list}]))
    _lists_agree("tc_list", values._claims, cbor2.loads(cbor2.dumps(tc_list)))


def _lists_agree(kind: str, item: Any, value: object) -> None:
    """The one-loop fast path of a list kind gives what the item-by-item checker gives."""

    def run(fn: Any) -> Any:
        try:
            return ("ok", _fields(fn(value, 3, DEFAULT_MAX_DEPTH)))
        except Invalid as exc:
            return ("error", exc.cls.__name__, exc.detail)

    assert run(CHECKERS[kind]) == run(values._list_of(item)), value


_maps = st.dictionaries(
    st.one_of(st.integers(-3, 20), st.sampled_from([0, 16, 17, 18, 1 << 64, -(1 << 64) - 1]), st.booleans()),
    st.one_of(
        st.lists(st.one_of(st.binary(max_size=3), st.integers(0, 2)), max_size=2),
        st.binary(max_size=3),
        st.text(max_size=3),
        st.integers(-(1 << 65), 1 << 65),
        st.booleans(),
        st.lists(st.lists(st.integers(0, 3), max_size=2), max_size=2),
    ),
    max_size=4,
)


@SETTINGS
@given(st.lists(_maps, min_size=1, max_size=3))
def test_fast_map_lists_agree_with_item_checkers(maps: list[dict[Any, Any]]) -> None:
    value = cbor2.loads(cbor2.dumps(maps))
    _lists_agree("tc_list", values._claims, value)
    _lists_agree("rtc_list", values._rtc, value)


@pytest.mark.parametrize(
    "rtc_list",
    [
        [{16: [b"a"], 17: 3, 18: True, 99: "x"}],
        [{17: 3}],
        [{16: [b"a"], 17: -1}],
        [{16: [b"a"], 18: 1}],
        [{16: [b"a"], -1: 0}],
        [{15: [b"a"]}],
        [{16: [b"a"], 15: [b"b"], 19: b"x", 1 << 64: 0}],
        [{16: [b"a"], 20: [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}],
    ],
)
def test_fast_requested_tc_list_agrees(rtc_list: object) -> None:
    _same(cbor2.dumps([2, {14: rtc_list}]))
    _lists_agree("rtc_list", values._rtc, cbor2.loads(cbor2.dumps(rtc_list)))


def test_short_form_head_check_is_exact() -> None:
    # element 0 in a two-byte form: only the map is compared on the short way, so this must still fail
    data = bytes.fromhex("821805a0")
    _same(data)
    with pytest.raises(NotDeterministic):
        decode(data)
    _same(bytes.fromhex("82051818"))  # not a map
    _same(bytes.fromhex("8205a000"))  # trailing byte
    # [type, {options}, err-code]: only the map is re-encoded when the last byte is below 0x18
    for hexdata in ("8306a005", "8306a01818", "8306a0190005", "8306a0626105", "8306a1010105", "8306a00500"):
        _same(bytes.fromhex(hexdata))
    assert decode(bytes.fromhex("8306a005")).err_code == 5  # type: ignore[union-attr]
    with pytest.raises(NotDeterministic):
        decode(bytes.fromhex("8306a0190005"))


def test_kept_decoder_carries_nothing_over() -> None:
    success = read_hex_vector("teep_success")
    shared = cbor2.dumps([5, cbor2.CBORTag(28, {20: b"12345678"})])  # value sharing: refused
    with pytest.raises(UnsupportedValue):
        decode(shared)
    with pytest.raises(Exception):  # noqa: B017  # truncated input: any decode error
        decode(success[:-3])
    msg = decode(success)
    assert isinstance(msg, Success) and encode(msg) == success


def test_threads_decode_independently() -> None:
    vectors = VECTORS * 50
    expected = [encode(decode(v)) for v in vectors]
    results: dict[int, list[bytes]] = {}

    def work(index: int) -> None:
        results[index] = [encode(decode(v)) for v in vectors]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(results[i] == expected for i in range(4))


def test_decoded_models_behave_like_constructed_ones() -> None:
    data = read_hex_vector("query_response")
    msg = decode(data)
    assert isinstance(msg, QueryResponse)
    built = QueryResponse(**{f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)})
    assert msg == built and repr(msg) == repr(built)
    assert msg.tc_list is not None and msg.tc_list[0] == built.tc_list[0]  # type: ignore[index]
    again = dataclasses.replace(msg, token=b"\x01" * 8)
    assert again.token == b"\x01" * 8 and again.tc_list == msg.tc_list
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.token = b"x"  # type: ignore[misc]
