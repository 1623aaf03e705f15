"""OTrP sessions over real transports on loopback: HTTP, HTTPS, CoAP and CoAP+DTLS (the profiles).

The sessions run through the size benchmark's runner (a counting relay between the Broker client and
the TAM server), with this package's engines; the last test drives the HTTP server with `tam_handler`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from teep_coap.bench.scenario import otrp_world, run_session
from teep_coap.otrp.profiles import OtrpBrokerAgent, tam_handler
from teep_coap.otrp.protocol.session import make_engines, reference_policy
from teep_coap.otrp.security.pki import OtrpPki
from teep_coap.profiles import load_profile
from teep_coap.transport.base import PeerRejected

PROFILES = ["otrp-json-http", "otrp-json-https", "otrp-cbor-coap", "otrp-cbor-coaps"]
NAMES = [
    "GetDeviceStateRequest",
    "GetDeviceStateResponse",
    "CreateSDRequest",
    "CreateSDResponse",
    "InstallTARequest",
    "InstallTAResponse",
]


@pytest.mark.parametrize("name", PROFILES)
async def test_reference_session_over_profile(name: str, tmp_path: Path) -> None:
    profile = load_profile(name)
    assert profile.protocol == "otrp"
    trace = await run_session(profile, 2048, world_factory=otrp_world, workdir=tmp_path)
    # four POSTs: empty (connect), GDS response, CreateSD response, InstallTA response (answer: none)
    assert len(trace.exchanges) == 4
    assert trace.exchanges[0].sent == b"" and trace.exchanges[-1].received is None
    seen = []
    for ex in trace.exchanges:
        for data in (ex.sent, ex.received):
            if data:
                seen.append(trace.facts[bytes(data)][0])
    assert sorted(seen) == sorted(NAMES)
    # what crossed the relay is at least the OTrP bytes
    assert sum(len(u.data) for u in trace.wire) > sum(len(d) for d in trace.facts)
    if profile.encoding == "json":
        assert all(bytes(d).startswith(b"{") for d in trace.facts)
    else:
        assert all(bytes(d)[:1] == b"\x82" for d in trace.facts)


async def test_http_server_with_tam_handler(rsa_pki: OtrpPki, tmp_path: Path) -> None:
    from teep_coap.protocol.broker import BrokerSession, Send
    from teep_coap.transport.http.stack import make_http_client, make_http_server

    profile = load_profile("otrp-json-http")
    tam, agent = make_engines("json", rsa_pki, tmp_path / "agent", reference_policy(rsa_pki, 100))
    server = make_http_server(profile, tam_handler(tam))
    port = await server.start()
    uri = f"http://127.0.0.1:{port}{profile.transport.path}"
    client = make_http_client(profile, uri)
    try:
        with pytest.raises(PeerRejected) as info:  # a body that is no OTrP message: 400
            await client.post(b'{"GetDeviceStateResponse": []}')
        assert info.value.status == "400"
        session = BrokerSession(OtrpBrokerAgent(agent), uri, max_rounds=8)
        action = session.start()
        while isinstance(action, Send):
            action = session.on_response(await client.post(action.payload))
        assert action.ok
    finally:
        await client.close()
        await server.stop()
    assert [r.status for r in tam.results()] == ["pass"] * 4
    assert agent.installed() == {"sd.sp.example": {"sp.example.ta1": (b"TA" * 50)}}


async def test_otrp_over_http_00_rules_on_the_wire(rsa_pki: OtrpPki, tmp_path: Path) -> None:
    """docs/protocol-facts.md §3.6 with a plain aiohttp client: empty POST with Accept starts,
    200 + application/otrp+json and the security headers, the device's messages with Content-Type,
    204 without body at the end, 415 for a wrong Content-Type."""
    import aiohttp

    from teep_coap.transport.http.stack import make_http_server

    profile = load_profile("otrp-json-http")
    tam, agent = make_engines("json", rsa_pki, tmp_path / "agent", reference_policy(rsa_pki, 10))
    server = make_http_server(profile, tam_handler(tam))
    port = await server.start()
    url = f"http://127.0.0.1:{port}/tam"
    media = "application/otrp+json"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.post(url, headers={"Accept": media, "Content-Length": "0"}) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].split(";")[0] == media
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert resp.headers["Content-Security-Policy"] == "default-src 'none'"
                assert resp.headers["Referrer-Policy"] == "no-referrer"
                body = await resp.read()
            assert b"GetDeviceStateRequest" in body
            async with http.post(
                url, data=b"{}", headers={"Accept": media, "Content-Type": "text/plain"}
            ) as resp:
                assert resp.status == 415
            status = 200
            while status == 200:
                answer = agent.receive(body)
                assert answer is not None
                async with http.post(
                    url, data=answer, headers={"Accept": media, "Content-Type": media}
                ) as resp:
                    status = resp.status
                    body = await resp.read()
            assert status == 204 and body == b""
    finally:
        await server.stop()
    assert agent.installed() == {"sd.sp.example": {"sp.example.ta1": b"TATATATATA"}}
