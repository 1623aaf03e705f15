"""The C walk `_plaincbor.untrusted_ok` against the Python walker it stands in for.

`check_untrusted_cbor` returns at once when the C walk says yes, so a yes the Python walker would not
give lets unchecked bytes reach cbor2 before authentication. The two must agree on every input: hand-
made edge cases of each rule, signed messages, and random and mutated bytes.
"""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teep_coap.encoding import untrusted
from teep_coap.encoding._plaincbor import untrusted_ok
from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.encoding.untrusted import COSE_TAGS, DEFAULT_MAX_DEPTH
from teep_coap.security import cose
from teep_coap.security.keys import generate_key
from tests.conftest import read_hex_vector
from tests.encoding.test_fastpath import EDITS, _mutants

SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NO_TAGS: frozenset[int] = frozenset()


def python_accepts(data: bytes, tags: frozenset[int], depth: int) -> bool:
    """The Python walker alone (the C walk switched off for the call)."""
    saved, untrusted._untrusted_ok = untrusted._untrusted_ok, None
    try:
        untrusted.check_untrusted_cbor(data, allowed_tags=tags, max_depth=depth)
    except TeepDecodeError:
        return False
    finally:
        untrusted._untrusted_ok = saved
    return True


def agree(data: bytes, tags: frozenset[int] = COSE_TAGS, depth: int = DEFAULT_MAX_DEPTH) -> None:
    assert untrusted_ok(data, tags, depth) == python_accepts(data, tags, depth), data.hex()


def test_check_untrusted_cbor_uses_the_c_walk() -> None:
    assert untrusted._untrusted_ok is untrusted_ok, "_plaincbor is not compiled: run `pip install -e .`"


@pytest.mark.parametrize(
    ("hex_item", "accepted"),
    [
        ("00", True),
        ("1bffffffffffffffff", True),
        ("3bffffffffffffffff", True),
        ("1c", False),  # reserved additional information
        ("1f", False),
        ("5f", False),  # indefinite byte string
        ("9f00ff", False),
        ("ff", False),  # a lone break
        ("f4", True),
        ("f6", True),
        ("f7", False),  # undefined
        ("f0", False),  # simple value 16
        ("f814", True),  # false in a two-byte head: well-formed, and allowed
        ("f820", False),
        ("f93c00", False),  # floats
        ("fa3f800000", False),
        ("fb3ff0000000000000", False),
        ("d28440a0f640", True),  # tag 18 around a COSE_Sign1 shape
        ("c249010000000000000000", False),  # bignum
        ("d9d9f700", False),  # self-described CBOR tag 55799
        ("4201", False),  # byte string longer than what is left
        ("7b0000000000000001", False),
        ("5bffffffffffffffff00", False),
        ("9bffffffffffffffff", False),
        ("bb7fffffffffffffff", False),  # map count that overflows when doubled
        ("bbffffffffffffffff", False),
        ("a10102", True),
        ("a101", False),
        ("820102", True),
        ("82010203", False),  # trailing byte
        ("8080", False),
        ("80", True),
        ("a0", True),
        ("", False),
        ("18", False),  # truncated head
        ("1900", False),
    ],
)
def test_edge_cases(hex_item: str, accepted: bool) -> None:
    data = bytes.fromhex(hex_item)
    assert python_accepts(data, COSE_TAGS, DEFAULT_MAX_DEPTH) is accepted
    agree(data)


@pytest.mark.parametrize("depth", [0, 1, 2, 3, 16, 64])
def test_depth_limit(depth: int) -> None:
    for nesting in range(0, 70):
        agree(b"\x81" * nesting + b"\x00", COSE_TAGS, depth)
        agree(b"\xd2" * nesting + b"\x00", COSE_TAGS, depth)
        agree(b"\xa1\x00" * nesting + b"\x00", COSE_TAGS, depth)


def test_limits_it_does_not_take_go_to_the_python_walker() -> None:
    deep = b"\x81" * 80 + b"\x00"
    assert untrusted_ok(deep, COSE_TAGS, 100) is False  # beyond its stack: not its call
    untrusted.check_untrusted_cbor(deep, max_depth=100)  # the Python walker accepts it
    assert untrusted_ok(bytearray(b"\x00"), COSE_TAGS, 16) is False  # type: ignore[arg-type]
    untrusted.check_untrusted_cbor(bytearray(b"\x00"))  # type: ignore[arg-type]


@pytest.mark.parametrize("tags", [NO_TAGS, frozenset({18}), COSE_TAGS, frozenset({2, 24, 55799})])
def test_signed_messages_and_vectors(tags: frozenset[int]) -> None:
    key = generate_key(-9)
    for name in ("query_request", "query_response", "update", "teep_success", "teep_error"):
        vector = read_hex_vector(name)
        agree(vector, tags)
        agree(bytes(cose.sign1(vector, key)), tags)
        agree(bytes(cose.sign(vector, [key, generate_key(-19)])), tags)


@SETTINGS
@given(st.binary(max_size=60), st.sampled_from([NO_TAGS, COSE_TAGS]), st.integers(0, 20))
def test_random_bytes(data: bytes, tags: frozenset[int], depth: int) -> None:
    agree(data, tags, depth)


@SETTINGS
@given(st.sampled_from(["query_request", "query_response", "update", "teep_success"]), EDITS)
def test_mutated_signed_messages(name: str, edits: list[tuple[int, int, int]]) -> None:
    signed = bytes(cose.sign1(read_hex_vector(name), generate_key(-9)))
    agree(_mutants(signed, edits))


@SETTINGS
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**64) + 1, 2**64 - 1)
        | st.binary(max_size=8)
        | st.text(max_size=4),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.integers(0, 30), inner, max_size=4)
            | st.builds(cbor2.CBORTag, st.sampled_from([2, 16, 18, 30, 98, 258]), inner)
        ),
        max_leaves=20,
    )
)
def test_encoded_values(value: object) -> None:
    agree(cbor2.dumps(value))
