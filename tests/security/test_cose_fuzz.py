"""Fuzz `verify` and `inspect`: random and mutated bytes give a CoseError subclass, nothing else."""

from __future__ import annotations

import contextlib

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teep_coap.security.cose import inspect, sign, sign1, verify
from teep_coap.security.errors import CoseError
from teep_coap.security.keys import generate_key
from teep_coap.security.truststore import TrustStore

ESP = generate_key("esp256")
ED = generate_key("ed25519")
TRUST = TrustStore([ESP.public, ED.public])
SEEDS = [
    sign1(b"\x82\x05\xa1\x14\x48" + bytes(8), ESP),
    sign1(b"\x82\x05\xa0", ED, tagged=False),
    sign1(None, ED, detached_payload=b"d"),
    sign(b"\x85\x01\xa0\x80\x80\x00", [ESP, ED]),
]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(data: bytes) -> None:
    with contextlib.suppress(CoseError):
        inspect(data)
    with contextlib.suppress(CoseError):
        verify(data, TRUST, allow_untagged=True)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _check(data)


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), min_size=1, max_size=4
    ),
)
def test_mutated_messages(seed: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(seed)
    for pos, value in edits:
        data[pos % len(data)] = value
    _check(bytes(data))


@FUZZ
@given(st.sampled_from(SEEDS), st.integers(min_value=0), st.binary(max_size=8))
def test_truncated_and_spliced(seed: bytes, cut: int, junk: bytes) -> None:
    cut %= len(seed)
    _check(seed[:cut] + junk)


# Well-formed CBOR of the right outer shape but arbitrary contents.
cbor_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1), st.binary(max_size=40), st.text(max_size=10)
)
cbor_value = st.recursive(
    cbor_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.integers(-30, 30), st.text(max_size=3)), inner, max_size=4),
    ),
    max_leaves=12,
)


@FUZZ
@given(st.sampled_from([18, 98, 17, 61]), st.lists(cbor_value, min_size=0, max_size=5))
def test_structured_garbage(tag: int, items: list[object]) -> None:
    items = [cbor2.dumps(v) if i == 0 and isinstance(v, dict) else v for i, v in enumerate(items)]
    _check(cbor2.dumps(cbor2.CBORTag(tag, items)))


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([ESP, ED]),
    st.binary(max_size=600),
    st.binary(max_size=40),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_round_trip_property(
    key: object, payload: bytes, aad: bytes, detached: bool, include_kid: bool, via_cwt: bool
) -> None:
    from teep_coap.security.keys import SigningKey

    assert isinstance(key, SigningKey)
    data = sign1(
        None if detached else payload,
        key,
        detached_payload=payload if detached else None,
        include_kid=include_kid,
        external_aad=aad,
        via_cwt=via_cwt,
    )
    result = verify(
        data, TRUST, external_aad=aad, detached_payload=payload if detached else None, via_cwt=not via_cwt
    )
    assert result.payload == payload and result.key == key.public
    assert (result.kid == key.kid) if include_kid else result.kid is None
