"""The engines with `wire=JOSE` (TEEP JSON + JWS): JSON on the wire, refusals keep their meaning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from teep_coap.bench.scenario import teep_world
from teep_coap.encoding.json_codec import from_json as decode_json
from teep_coap.model.codes import ErrorCode
from teep_coap.model.teep import Error, QueryRequest
from teep_coap.profiles import load_profile
from teep_coap.protocol.errors import InvalidMessage
from teep_coap.protocol.wire import JOSE, JoseWire
from teep_coap.security.jose import parse_json
from teep_coap.security.keys import generate_key


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    return teep_world(load_profile("teep-json-http"), tmp_path, 100)


def test_query_request_is_a_flattened_jws_by_the_tam_key(world) -> None:  # type: ignore[no-untyped-def]
    data = world.tam.connect()
    parsed = parse_json(data)
    assert not parsed.general and parsed.signatures[0].kid == world.tam.config.keys[0].kid
    msg = decode_json(parsed.payload)
    assert isinstance(msg, QueryRequest) and msg.challenge is not None
    assert b" " not in parsed.payload  # compact JSON inside


def test_agent_answers_error_for_an_untrusted_signer(world) -> None:  # type: ignore[no-untyped-def]
    stranger = generate_key("esp256")
    forged = JOSE.seal(decode_json(parse_json(world.tam.connect()).payload), stranger)
    answer = world.agent.receive(forged)
    assert answer is not None
    err = decode_json(parse_json(answer).payload)
    assert isinstance(err, Error) and err.err_code == ErrorCode.ERR_PERMANENT_ERROR
    assert "not trusted" in (err.err_msg or "")


def test_agent_answers_error_5_for_an_unsupported_algorithm(world) -> None:  # type: ignore[no-untyped-def]
    ed = generate_key("ed25519")
    world.agent.state.trust.add(ed.public)
    msg = decode_json(parse_json(world.tam.connect()).payload)
    answer = world.agent.receive(JOSE.seal(msg, ed))  # the Agent's suite is ESP256 only
    err = decode_json(parse_json(answer).payload)
    assert isinstance(err, Error) and err.err_code == ErrorCode.ERR_UNSUPPORTED_CIPHER_SUITES
    assert err.supported_teep_cipher_suites


def test_agent_refuses_garbage_with_error_1(world) -> None:  # type: ignore[no-untyped-def]
    for junk in (b"{", b"[]", json.dumps({"payload": "e30", "signature": "AA"}).encode()):
        err = decode_json(parse_json(world.agent.receive(junk)).payload)
        assert isinstance(err, Error) and err.err_code == ErrorCode.ERR_PERMANENT_ERROR


def test_tam_refuses_unknown_devices_and_tampering(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    query = world.tam.connect()
    answer = world.agent.receive(query)
    obj = json.loads(answer)
    obj["payload"] = obj["payload"][:-4] + ("AAAA" if obj["payload"][-4:] != "AAAA" else "BBBB")
    with pytest.raises(InvalidMessage, match="signature"):
        world.tam.receive(json.dumps(obj).encode())
    other = teep_world(load_profile("teep-cbor-http"), tmp_path / "other", 20)
    stranger_answer = JOSE.seal(decode_json(parse_json(answer).payload), other.agent.state.key)
    with pytest.raises(InvalidMessage, match="unknown signer"):
        world.tam.receive(stranger_answer)
    assert world.tam.receive(answer) is not None  # the genuine answer still goes through: an Update


def test_two_tam_keys_give_a_general_jws_and_the_session_still_completes(tmp_path: Path) -> None:
    """A TAM with ESP256 and Ed25519 signs the first QueryRequest twice (COSE_Sign in CBOR, general
    JWS in JSON); the ESP256 Agent picks its signature and the session runs to Success."""
    from teep_coap.protocol.broker import run_in_memory

    world = teep_world(load_profile("teep-json-http"), tmp_path, 64, tam_algs=("esp256", "ed25519"))
    first = world.tam.connect()
    parsed = parse_json(first)
    assert parsed.general and len(parsed.signatures) == 2
    assert {s.alg for s in parsed.signatures} == {"ES256", "EdDSA"}

    def post(payload: bytes) -> bytes | None:
        return world.tam.connect() if not payload else world.tam.receive(payload)

    session = run_in_memory(world.agent, "http://tam.invalid/tam", post)
    assert session.result is not None and session.result.ok
    assert type(world.agent.last_response).__name__ == "Success"


def test_engines_take_the_wire_from_the_profile(world) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(world.tam.wire, JoseWire) and isinstance(world.agent.wire, JoseWire)


def test_whole_session_is_json_and_jws_on_the_wire(world) -> None:  # type: ignore[no-untyped-def]
    """Every message of a complete session, both directions, is a flattened JWS whose payload is
    compact TEEP JSON — no CBOR byte anywhere."""
    from teep_coap.protocol.broker import run_in_memory

    seen: list[bytes] = []

    def post(payload: bytes) -> bytes | None:
        if payload:
            seen.append(payload)
        answer = world.tam.connect() if not payload else world.tam.receive(payload)
        if answer:
            seen.append(answer)
        return answer

    session = run_in_memory(world.agent, "http://tam.invalid/tam", post)
    assert session.result is not None and session.result.ok
    names = []
    for data in seen:
        assert data[:1] == b"{" and data[:1] not in (b"\xd2", b"\xd8")
        obj = json.loads(data)  # valid UTF-8 JSON text
        assert set(obj) == {"protected", "header", "payload", "signature"}  # flattened JWS
        parsed = parse_json(data)
        names.append(type(decode_json(parsed.payload)).__name__)
        assert json.loads(parsed.payload)["type"] in (1, 2, 3, 5, 6)
    assert names == ["QueryRequest", "QueryResponse", "Update", "Success"]


def test_cose_world_is_unchanged(tmp_path: Path) -> None:
    """The default wire stays CBOR/COSE: a tagged COSE_Sign1 (0xD2) from both engines."""
    cbor = teep_world(load_profile("teep-cbor-http"), tmp_path, 10)
    query = cbor.tam.connect()
    assert query[:1] == b"\xd2"
    assert cbor.agent.receive(query)[:1] == b"\xd2"
