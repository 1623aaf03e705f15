"""The generated per-type builders of the decoder's short way (`teep_coap.encoding.builders`).

`test_fastpath.py` shows that `decode` (builders included) and the checked way agree on valid,
mutated and hostile input. Here: every message type has a builder, the usual messages really go
through it (or decoding would silently lose its speed), and a builder returns either what the
generic way returns or None, never something else and never an exception.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teep_coap.encoding import decode, encode
from teep_coap.encoding._plaincbor import plain
from teep_coap.encoding.builders import BUILDERS, builder_source
from teep_coap.encoding.cbor_codec import DEFAULT_MAX_DEPTH, _message_from_obj
from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.encoding.fields import MESSAGE_CLASS, OPTION_FIELDS
from tests.conftest import read_hex_vector
from tests.encoding.strategies import messages
from tests.encoding.test_fastpath import _fields

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VECTORS = ("query_request", "query_response", "update", "teep_success", "teep_error")


def _generic(obj: Any) -> Any:
    try:
        return ("ok", _fields(_message_from_obj(obj, DEFAULT_MAX_DEPTH)))
    except TeepDecodeError as exc:
        return ("error", type(exc).__name__)


def _agrees(obj: Any) -> Any:
    """The builder's answer for a decoded array, checked against the generic builder."""
    build = BUILDERS[obj[0]]
    msg = build(obj, DEFAULT_MAX_DEPTH)
    if msg is not None:
        assert ("ok", _fields(msg)) == _generic(obj)
    return msg


def test_every_message_type_has_a_builder() -> None:
    assert set(BUILDERS) == set(MESSAGE_CLASS)


@pytest.mark.parametrize("mtype", sorted(MESSAGE_CLASS))
def test_builder_source_names_every_label(mtype: int) -> None:
    source = builder_source(mtype)
    for label, attr, _kind in OPTION_FIELDS[mtype]:  # type: ignore[index]
        assert f"label == {int(label)}:" in source and repr(attr) in source


@pytest.mark.parametrize("name", VECTORS)
def test_working_group_examples_take_the_builder(name: str) -> None:
    data = read_hex_vector(name)
    msg = _agrees(cbor2.loads(data))
    assert msg is not None, "the usual message fell back to the generic way"
    assert msg == decode(data) and encode(msg) == data


@SETTINGS
@given(messages)
def test_builder_equals_generic_on_valid_messages(msg: Any) -> None:
    data = encode(msg)
    built = _agrees(cbor2.loads(data))
    if plain(data) and not msg.extra_positional:
        assert built is not None  # only extra positional members or non-plain values leave the short way


# What plain CBOR can hold (the builders' precondition): integers within the CBOR range, no floats.
_ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(1 << 32, (1 << 64) - 1),
    st.integers(-(1 << 64), -(1 << 32)),
    st.binary(max_size=70),
    st.text(max_size=130),
    st.lists(
        st.one_of(st.integers(-2, 2), st.binary(max_size=2), st.lists(st.binary(max_size=2))), max_size=3
    ),
    st.dictionaries(st.integers(-1, 20), st.binary(max_size=2), max_size=2),
)


@SETTINGS
@given(messages, st.integers(0, 25), _ODD_VALUES, st.integers(0, 6), _ODD_VALUES)
def test_builder_returns_generic_result_or_none_on_odd_values(
    msg: Any, label: int, value: Any, index: int, positional: Any
) -> None:
    obj = cbor2.loads(encode(msg))
    obj[1][label] = value
    if index < len(obj) and index >= 2:
        obj[index] = positional
    _agrees(obj)
