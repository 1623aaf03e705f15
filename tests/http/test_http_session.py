"""Whole TEEP sessions over real HTTP(S) on loopback: TAM engine behind the aiohttp server, Agent
engine behind the Broker client; CBOR/COSE and the JSON/JWS twin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from teep_coap.bench.scenario import COMPONENT_ID, engine_handler, teep_world
from teep_coap.profiles import load_profile
from teep_coap.protocol.broker import BrokerSession, Done, Send
from teep_coap.security import certs
from teep_coap.transport.base import PeerInfo
from teep_coap.transport.http.stack import make_http_client, make_http_server


async def run(
    profile_name: str, tmp_path: Path, payload: int = 3000
) -> tuple[object, list[bytes], list[bytes]]:
    profile = load_profile(profile_name)
    world = teep_world(profile, tmp_path, payload)  # the wire follows the profile's encoding
    certs.write_bundle(tmp_path / "certs")
    inner = engine_handler(world.tam)
    seen: list[bytes] = []

    async def handler(body: bytes, peer: PeerInfo) -> bytes | None:
        seen.append(body)
        return await inner(body, peer)

    server = make_http_server(profile, handler, certs_path=tmp_path / "certs")
    await server.start()
    answers: list[bytes] = []
    try:
        client = make_http_client(profile, server.uri, certs_path=tmp_path / "certs")
        session = BrokerSession(world.agent, server.uri)
        action: Send | Done = session.start()
        while isinstance(action, Send):
            answer = await client.post(action.payload)
            if answer:
                answers.append(answer)
            action = session.on_response(answer)
        await client.close()
    finally:
        await server.stop()
    assert action.ok, action.reason
    return world, seen, answers


@pytest.mark.parametrize("name", ["teep-cbor-https", "teep-cbor-http"])
async def test_cbor_session_installs_the_component(name: str, tmp_path: Path) -> None:
    world, seen, answers = await run(name, tmp_path)
    assert type(world.agent.last_response).__name__ == "Success"  # type: ignore[attr-defined]
    assert world.agent.state.components.get(COMPONENT_ID) is not None  # type: ignore[attr-defined]
    assert len(world.agent.state.components.image(COMPONENT_ID)) == 3000  # type: ignore[attr-defined]
    assert seen[0] == b"" and all(b[:1] == b"\xd2" for b in seen[1:])  # COSE_Sign1 from the device
    assert all(a[:1] == b"\xd2" for a in answers)


@pytest.mark.parametrize("name", ["teep-json-https", "teep-json-http"])
async def test_json_jws_session_installs_the_component(name: str, tmp_path: Path) -> None:
    world, seen, answers = await run(name, tmp_path)
    assert type(world.agent.last_response).__name__ == "Success"  # type: ignore[attr-defined]
    assert len(world.agent.state.components.image(COMPONENT_ID)) == 3000  # type: ignore[attr-defined]
    for body in [*seen[1:], *answers]:  # every message on the wire is a flattened JWS of TEEP JSON
        obj = json.loads(body)
        assert set(obj) == {"protected", "header", "payload", "signature"}
    from teep_coap.security.jose import parse_json

    types = [json.loads(parse_json(b).payload)["type"] for b in [answers[0], seen[1], answers[1], seen[2]]]
    assert types == [1, 2, 3, 5]


async def test_json_tam_refuses_a_cose_message(tmp_path: Path) -> None:
    """The JSON binding's TAM answers 400 to a message of the CBOR binding (no silent fallback)."""
    from teep_coap.protocol.errors import InvalidMessage

    profile = load_profile("teep-json-http")
    world = teep_world(profile, tmp_path, 20)
    cbor_world = teep_world(load_profile("teep-cbor-http"), tmp_path / "other", 20)
    query = cbor_world.tam.connect()
    cose_answer = cbor_world.agent.receive(query)
    assert cose_answer is not None
    world.tam.connect()
    with pytest.raises(InvalidMessage, match="JWS"):
        world.tam.receive(cose_answer)
