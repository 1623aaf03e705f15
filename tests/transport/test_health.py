"""`GET /health` on both bindings, through real sockets on loopback: the answer, its size against
the request's (no amplification), other methods refused, and the TEEP handler never called."""

from __future__ import annotations

import asyncio
import os
import socket

import aiocoap
import aiohttp
import pytest
from aiocoap import CON, GET, NON, POST, Message
from aiocoap.numbers.codes import Code
from coap_helpers import Creds, quick

from teep_coap.transport.base import PeerInfo
from teep_coap.transport.coap import CoapClient, CoapServer
from teep_coap.transport.coap.credentials import load_tam_credentials
from teep_coap.transport.http import HttpTamServer

pytestmark = pytest.mark.timeout(60)
OK = f"ok pid {os.getpid()}"


class NeverCalled:
    """A TEEP handler the health path must not reach."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None:
        self.calls += 1
        return None


def _datagram(code: Code, mtype: aiocoap.numbers.types.Type, token: bytes, payload: bytes = b"") -> bytes:
    msg = Message(code=code, uri_path=("health",), payload=payload)
    msg.mtype, msg.mid, msg.token = mtype, 7, token
    return bytes(msg.encode())


def _exchange(port: int, datagram: bytes) -> bytes:
    """One datagram to the server and its answer (5 s at most)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(datagram, ("127.0.0.1", port))
        return sock.recv(2048)


async def test_plain_coap_health_is_answered_at_the_gate_within_its_request_size() -> None:
    handler = NeverCalled()
    async with CoapServer(quick("coap"), handler) as server:
        assert server.early is not None
        for mtype, token in ((CON, b""), (NON, b""), (CON, b"\x01" * 8)):
            request = _datagram(GET, mtype, token)
            raw = await asyncio.to_thread(_exchange, server.port, request)
            answer = Message.decode(raw)
            assert answer.code == Code.CONTENT and answer.payload.decode() == OK
            assert answer.token == token and int(answer.opt.content_format) == 0
            assert len(raw) <= 3 * len(request)  # what a spoofed GET could make us send
            if mtype == CON:
                assert answer.mtype == aiocoap.ACK and answer.mid == 7
        assert server.early.health_answered == 3 and server.early.answered == 0
        post = _datagram(POST, CON, b"", b"x")
        refused = Message.decode(await asyncio.to_thread(_exchange, server.port, post))
        assert refused.code == Code.METHOD_NOT_ALLOWED and refused.payload == b""
    assert handler.calls == 0 and server.stats.requests == 0


async def test_oscore_server_answers_an_unprotected_health_get(creds: Creds) -> None:
    """No datagram gate over OSCORE: the health resource answers through aiocoap's site, without
    OSCORE (a load balancer has no security context), while /teep still demands it."""
    handler = NeverCalled()
    devices = load_tam_credentials(creds.tam_dir)
    async with CoapServer(quick("coap-oscore"), handler, devices=devices) as server:
        assert server.early is None
        client = await aiocoap.Context.create_client_context()
        try:
            uri = f"coap://127.0.0.1:{server.port}/health"
            answer = await asyncio.wait_for(client.request(Message(code=GET, uri=uri)).response, 10)
        finally:
            await client.shutdown()
    assert answer.code == Code.CONTENT and answer.payload.decode() == OK
    assert handler.calls == 0


async def test_coaps_health_answers_a_peer_with_a_psk(creds: Creds) -> None:
    """Over DTLS the health resource sits behind the handshake: a poller with a PSK (here the
    device's) gets the same answer through aiocoap's site (the fast path serves only /teep)."""
    handler = NeverCalled()
    devices = load_tam_credentials(creds.tam_dir)
    async with CoapServer(quick("coaps-psk"), handler, devices=devices) as server:
        client = CoapClient(quick("coaps-psk"), server.uri, creds.agent_side)
        try:
            ctx = await client.context()
            uri = f"coaps://127.0.0.1:{server.port}/health"
            answer = await asyncio.wait_for(ctx.request(Message(code=GET, uri=uri)).response, 15)
        finally:
            await client.close()
    assert answer.code == Code.CONTENT and answer.payload.decode() == OK
    assert handler.calls == 0


async def test_http_health_answers_get_and_head_and_refuses_post() -> None:
    handler = NeverCalled()
    async with (
        HttpTamServer(handler) as server,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
    ):
        url = f"http://127.0.0.1:{server.port}/health"
        async with session.get(url) as got:
            assert got.status == 200 and await got.text() == OK + "\n"
            assert got.headers["Cache-Control"] == "no-store"
            assert got.headers["X-Content-Type-Options"] == "nosniff"
        async with session.head(url) as head:
            assert head.status == 200
        async with session.post(url, data=b"\x81\x01") as post:
            assert post.status == 405 and post.headers["Allow"] == "GET, HEAD"
    assert handler.calls == 0 and server.requests_served == 0
