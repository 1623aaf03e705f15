"""The CoAP binding with a scripted handler: real aiocoap sockets on loopback, real DTLS and OSCORE."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os

import pytest
from coap_helpers import Creds, quick

from teep_coap.transport.base import (
    PeerInfo,
    PeerRejected,
    Rejection,
    RequestRejected,
    TransportError,
    TransportTimeout,
)
from teep_coap.transport.coap import CoapClient, CoapServer, aiocoap_compat
from teep_coap.transport.coap.credentials import load_tam_credentials

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """Echoes the payload reversed, or b"" -> a fixed first message; remembers the peers."""

    def __init__(self) -> None:
        self.peers: list[PeerInfo] = []
        self.payloads: list[bytes] = []

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None:
        self.peers.append(peer)
        self.payloads.append(payload)
        if payload == b"":
            return b"first"
        if payload == b"done":
            return None
        if payload == b"boom":
            raise RuntimeError("handler bug")
        if payload == b"reject":
            raise RequestRejected(Rejection.FORBIDDEN, "identity mismatch")
        return payload[::-1]


@pytest.mark.both_event_loops  # `tam serve` runs every CoAP profile on uvloop where it is installed
@pytest.mark.parametrize(
    "profile_name", ["coap", "coaps-psk", "coap-oscore", "coap-edhoc", "coap-constrained"]
)
async def test_flow_and_identity(profile_name: str, creds: Creds) -> None:
    profile = quick(profile_name)
    handler = Recorder()
    async with CoapServer(profile, handler, devices=creds.tam_side) as server:
        client = CoapClient(profile, server.uri, creds.agent_side)
        try:
            assert await client.post(b"") == b"first"
            big = os.urandom(5000)
            assert await client.post(big) == big[::-1]  # block-wise both ways
            assert await client.post(b"done") is None
        finally:
            await client.close()
    assert handler.payloads == [b"", big, b"done"]
    peer = handler.peers[0]
    assert peer.address.startswith("127.0.0.1") or "127.0.0.1" in peer.address
    if profile.security.mode == "none":
        assert peer.identity is None and not peer.authenticated and peer.transport == "coap"
    else:
        assert peer.identity == "agent-1" and peer.authenticated
        assert peer.transport == ("coaps" if profile.security.mode == "dtls-psk" else "coap+oscore")


async def test_errors_map_to_codes(creds: Creds) -> None:
    profile = quick("coap")
    async with CoapServer(profile, Recorder()) as server:
        client = CoapClient(profile, server.uri)
        try:
            with pytest.raises(PeerRejected) as e1:
                await client.post(b"boom")
            assert e1.value.status == "5.00"
            with pytest.raises(PeerRejected) as e2:
                await client.post(b"reject")
            assert e2.value.status == "4.03"
            assert await client.post(b"") == b"first"  # still serving
        finally:
            await client.close()
    assert server.stats.rejected == {"5.00": 1, "4.03": 1}


async def test_oversize_is_413_before_assembly(creds: Creds) -> None:
    profile = quick("coap", max_message_size=4096)
    handler = Recorder()
    async with CoapServer(profile, handler) as server:
        big_client_profile = quick("coap")  # the client itself allows 1 MiB
        client = CoapClient(big_client_profile, server.uri)
        try:
            with pytest.raises(PeerRejected) as exc:
                await client.post(os.urandom(20000))
            assert exc.value.status == "4.13"
        finally:
            await client.close()
    assert handler.payloads == []


async def test_overload_gives_503_with_max_age() -> None:
    profile = quick("coap", max_concurrent_requests=1, overload_max_age=1)
    gate = asyncio.Event()

    async def slow(payload: bytes, peer: PeerInfo) -> bytes | None:
        await gate.wait()
        return b"ok"

    async with CoapServer(profile, slow) as server:
        impatient = dataclasses.replace(
            profile, limits=dataclasses.replace(profile.limits, request_timeout=0.8)
        )
        c1, c2 = CoapClient(profile, server.uri), CoapClient(impatient, server.uri)
        try:
            first = asyncio.create_task(c1.post(b"x"))
            await asyncio.sleep(0.3)
            with pytest.raises(PeerRejected) as exc:
                await c2.post(b"y")  # Max-Age 1 s does not fit in 0.8 s: the 5.03 is reported
            assert exc.value.status == "5.03" and "Max-Age 1" in exc.value.detail
            gate.set()
            assert await first == b"ok"
        finally:
            await c1.close()
            await c2.close()


async def test_client_waits_max_age_after_503_and_then_gets_through(creds: Creds) -> None:
    """A 5.03 means the TAM refused the request unread: the client waits the Max-Age it was given (not
    less) and sends again while its request timeout allows, and the TAM sees the message once."""
    profile = quick("coaps-psk", max_concurrent_requests=1, overload_max_age=1, request_timeout=5.0)
    gate = asyncio.Event()
    seen: list[bytes] = []

    async def slow(payload: bytes, peer: PeerInfo) -> bytes | None:
        seen.append(payload)
        if payload == b"x":
            await gate.wait()
        return payload[::-1]

    async with CoapServer(profile, slow, devices=creds.tam_side) as server:
        c1 = CoapClient(profile, server.uri, creds.agent_side)
        c2 = CoapClient(profile, server.uri, creds.agent_side)
        try:
            first = asyncio.create_task(c1.post(b"x"))
            while seen != [b"x"]:
                await asyncio.sleep(0.01)
            loop = asyncio.get_running_loop()
            loop.call_later(0.3, gate.set)  # the TAM has room again well before the Max-Age is over
            t0 = loop.time()
            assert await c2.post(b"yz") == b"zy"
            assert loop.time() - t0 >= 1.0  # Max-Age 1 s honoured
            assert await first == b"x"
        finally:
            await c1.close()
            await c2.close()
    assert seen == [b"x", b"yz"]


async def test_wrong_psk_is_told_at_once_and_server_keeps_serving(creds: Creds) -> None:
    profile = quick("coaps-psk", request_timeout=30.0)
    async with CoapServer(profile, Recorder(), devices=creds.tam_side) as server:
        bad = dataclasses.replace(creds.agent_side, psk=bytes(16))
        c_bad = CoapClient(profile, server.uri, bad)
        try:
            with pytest.raises(TransportError, match="DTLS PSK most likely does not match") as refused:
                await c_bad.post(b"")
            assert not isinstance(refused.value, TransportTimeout)
        finally:
            await c_bad.close()
        good = CoapClient(profile, server.uri, creds.agent_side)
        try:
            assert await good.post(b"") == b"first"
        finally:
            await good.close()


async def test_oscore_server_refuses_unprotected(creds: Creds) -> None:
    oscore = quick("coap-oscore")
    handler = Recorder()
    async with CoapServer(oscore, handler, devices=load_tam_credentials(creds.tam_dir)) as server:
        plain = CoapClient(quick("coap"), server.uri)
        try:
            with pytest.raises(PeerRejected) as exc:
                await plain.post(b"")
            assert exc.value.status == "4.01"
        finally:
            await plain.close()
    assert handler.payloads == []


async def test_dtls_server_forgets_closed_sessions(creds: Creds) -> None:
    """A client's close_notify ends its server-side DTLS session (aiocoap alone kept them all)."""
    profile = quick("coaps-psk")
    async with CoapServer(profile, Recorder(), devices=creds.tam_side) as server:
        for _ in range(5):
            client = CoapClient(profile, server.uri, creds.agent_side)
            try:
                assert await client.post(b"") == b"first"
            finally:
                await client.close()
        for _ in range(50):
            if server.dtls_sessions == 0:
                break
            await asyncio.sleep(0.02)
        assert server.dtls_sessions == 0


async def test_dtls_client_shakes_hands_again_when_the_tam_restarted(creds: Creds) -> None:
    """A restarted TAM has forgotten the DTLS session and drops its records silently: after half the
    request timeout the client starts a new handshake and sends the message again, once."""
    profile = quick("coaps-psk", request_timeout=4.0)
    handler = Recorder()
    server = CoapServer(profile, handler, devices=creds.tam_side)
    await server.start()
    port = server.port
    client = CoapClient(profile, server.uri, creds.agent_side)
    try:
        assert await client.post(b"") == b"first"
        # A crash, not a clean stop: the old TAM's close_notify must not reach the client (aiocoap
        # would then reconnect by itself, and whether it arrives in time depends on the load).
        pool = aiocoap_compat.dtls_pool(server._context)
        assert pool is not None
        pool._transport.sendto = lambda *args, **kwargs: None  # the dead TAM sends nothing more
        await server.close()
        server = CoapServer(profile, handler, bind=("127.0.0.1", port), devices=creds.tam_side)
        await server.start()
        assert await client.post(b"abc") == b"cba"
        assert client.session_restarts == 1
    finally:
        await client.close()
        await server.close()
    assert handler.payloads == [b"", b"abc"]


async def test_dtls_client_waits_for_a_busy_tam_that_acknowledged(creds: Creds) -> None:
    """A TAM that takes longer than half the request timeout but has acknowledged the request over
    the DTLS session is busy, not restarted: the client keeps its session and sends nothing twice."""
    profile = quick("coaps-psk", request_timeout=4.0)
    handler = Recorder()

    async def slow(payload: bytes, peer: PeerInfo) -> bytes | None:
        if payload:
            await asyncio.sleep(2.6)  # past the 2 s silence check; aiocoap sends the empty ACK at once
        return await handler(payload, peer)

    async with CoapServer(profile, slow, devices=creds.tam_side) as server:
        client = CoapClient(profile, server.uri, creds.agent_side)
        try:
            assert await client.post(b"") == b"first"
            assert await client.post(b"abc") == b"cba"
        finally:
            await client.close()
    assert client.session_restarts == 0 and client.handshake_restarts == 0 and client.sessions_lost == 0
    assert handler.payloads == [b"", b"abc"]


async def test_dtls_session_outlives_garbage_collection_between_exchanges(creds: Creds) -> None:
    """aiocoap holds its DTLS client connections weakly (alive through cycles only): a collection
    between two exchanges ended the session and the next exchange shook hands again. The client
    holds them: one handshake, one server-side session, for any number of exchanges."""
    profile = quick("coaps-psk")
    async with CoapServer(profile, Recorder(), devices=creds.tam_side) as server:
        client = CoapClient(profile, server.uri, creds.agent_side)
        try:
            assert await client.post(b"") == b"first"
            for payload in (b"ab", b"cd"):
                gc.collect()
                assert await client.post(payload) == payload[::-1]
            assert client.sessions_lost == 0 and client.handshake_restarts == 0
            assert server.dtls_sessions == 1
        finally:
            await client.close()
