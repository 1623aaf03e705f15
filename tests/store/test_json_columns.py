"""The store's JSON columns through orjson read back exactly what `json` wrote and read before."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teep_coap.store import json_columns

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_round_trip_is_json_s_own(value: Any) -> None:
    """Any JSON value, integers of any size included: what json.dumps/json.loads would give."""
    text = json_columns.dumps(value)
    assert json_columns.loads(text) == json.loads(json.dumps(value, sort_keys=True))
    assert json.loads(text) == json_columns.loads(text)  # the text is plain JSON for any reader


@given(JSON_VALUES, st.sampled_from([(", ", ": "), (",", ":")]))
def test_text_any_writer_wrote_reads_as_json_reads_it(value: Any, separators: tuple[str, str]) -> None:
    """Rows `json` wrote, with or without blanks: integers beyond 64 bits in compact text too, which
    orjson reads as floats and writes back otherwise."""
    text = json.dumps(value, sort_keys=True, separators=separators)
    assert json_columns.loads(text) == json.loads(text)


def test_a_compact_integer_beyond_64_bits_is_read_exactly() -> None:
    assert json_columns.loads('{"seq":' + str(2**70) + "}") == {"seq": 2**70}


@pytest.mark.parametrize(
    "value",
    [
        2**64 - 1,
        2**64,  # beyond what orjson writes: json writes it
        -(2**63) - 1,
        {"seq": 10**30, "hex": "1" * 40},  # a long run of digits in a string: json reads it
        [-(2**70), 2**200],
    ],
)
def test_integers_beyond_64_bits_come_back_exactly(value: Any) -> None:
    assert json_columns.loads(json_columns.dumps(value)) == value


def test_sorted_keys_and_non_string_keys_as_json_wrote_them() -> None:
    text = json_columns.dumps({"b": 1, "a": {2: "x", 1: [1.5, None, True]}})
    assert text == '{"a":{"1":[1.5,null,true],"2":"x"},"b":1}'


def test_nan_and_infinities_are_written_as_null_valid_json() -> None:
    """`json` wrote NaN and Infinity, which are not JSON; what is written now any JSON reader takes."""
    text = json_columns.dumps({"x": float("nan"), "y": float("inf"), "z": float("-inf")})
    assert text == '{"x":null,"y":null,"z":null}'


def test_rows_json_wrote_with_nan_and_infinity_still_read() -> None:
    old = json.dumps({"x": float("nan"), "y": float("inf")}, sort_keys=True)  # 'NaN', 'Infinity'
    value = json_columns.loads(old)
    assert math.isnan(value["x"]) and value["y"] == float("inf")


def test_text_that_is_not_json_is_refused_as_json_refuses_it() -> None:
    with pytest.raises(json.JSONDecodeError):
        json_columns.loads("{not json")
