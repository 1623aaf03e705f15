"""Random and mutated input: the Agent always answers with an Error message (never raises), the TAM
raises only InvalidMessage, and neither changes its stored state."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teep_coap.model.teep import Error
from teep_coap.protocol.errors import InvalidMessage

from .conftest import MakeWorld, World, payload_of

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def fuzz_world(make_world: MakeWorld) -> tuple[World, bytes, bytes]:
    w = make_world()
    w.publish(1, seq=1)
    qr = w.tam.connect()
    qresp = w.agent.receive(qr)
    assert qresp is not None
    return w, qr, qresp


def _mutate(data: bytes, pos: int, value: int) -> bytes:
    b = bytearray(data)
    b[pos % len(b)] ^= value or 1
    return bytes(b)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_agent_random_bytes(fuzz_world: tuple[World, bytes, bytes], data: bytes) -> None:
    w, _, _ = fuzz_world
    before = w.agent_state()
    out = w.agent.receive(data)
    assert out is not None
    assert isinstance(payload_of(out), Error)
    assert w.agent_state() == before


@SETTINGS
@given(pos=st.integers(min_value=0, max_value=10_000), value=st.integers(min_value=0, max_value=255))
def test_agent_mutated_query_request(fuzz_world: tuple[World, bytes, bytes], pos: int, value: int) -> None:
    w, qr, _ = fuzz_world
    out = w.agent.receive(_mutate(qr, pos, value))
    assert out is not None  # an Error, or (for a mutation in an unsigned part) a QueryResponse


@SETTINGS
@given(data=st.binary(max_size=300))
def test_tam_random_bytes(fuzz_world: tuple[World, bytes, bytes], data: bytes) -> None:
    w, _, _ = fuzz_world
    before = w.tam_state()
    with pytest.raises(InvalidMessage):
        w.tam.receive(data)
    assert w.tam_state() == before


@SETTINGS
@given(pos=st.integers(min_value=0, max_value=10_000), value=st.integers(min_value=0, max_value=255))
def test_tam_mutated_query_response(fuzz_world: tuple[World, bytes, bytes], pos: int, value: int) -> None:
    w, _, qresp = fuzz_world
    before = w.tam_state()
    mutated = _mutate(qresp, pos, value)
    try:
        w.tam.receive(mutated)
    except InvalidMessage:
        assert w.tam_state() == before
