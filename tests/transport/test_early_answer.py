"""Plain CoAP: the cheap refusals are answered before aiocoap's request pipeline, statelessly."""

from __future__ import annotations

import asyncio
import socket

import aiocoap
import pytest
from coap_helpers import quick, without_echo, without_padding

from teep_coap.transport.base import PeerInfo
from teep_coap.transport.coap import CoapClient, CoapServer

pytestmark = [pytest.mark.timeout(60), pytest.mark.both_event_loops]

CF = 65000


async def handler(payload: bytes, peer: PeerInfo) -> bytes | None:
    return payload or b"first"


def _ask_raw(port: int, datagram: bytes, *, expect_answer: bool = True) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0 if expect_answer else 0.3)
        s.sendto(datagram, ("127.0.0.1", port))
        try:
            return s.recv(2048)
        except TimeoutError:
            return None


def _ask(port: int, datagram: bytes, *, expect_answer: bool = True) -> aiocoap.Message | None:
    raw = _ask_raw(port, datagram, expect_answer=expect_answer)
    return None if raw is None else aiocoap.Message.decode(raw)


def _request(code: aiocoap.Code, mtype: aiocoap.numbers.types.Type = aiocoap.CON, **options: object) -> bytes:
    msg = aiocoap.Message(mtype=mtype, mid=0x1234, code=code, uri_path=("teep",))
    msg.token = b"\x07\x08"
    for name, value in options.items():
        if name == "payload":
            msg.payload = value  # type: ignore[assignment]
        else:
            setattr(msg.opt, name, value)
    return bytes(msg.encode())


async def _served(profile_name: str, echo: bool) -> tuple[CoapServer, int]:
    profile = quick(profile_name) if echo else without_echo(quick(profile_name))
    server = CoapServer(profile, handler)
    await server.start()
    return server, server.port


async def test_wrong_method_and_format_are_answered_early_without_reaching_the_resource() -> None:
    server, port = await _served("coap", echo=False)
    try:
        get = await asyncio.to_thread(_ask, port, _request(aiocoap.GET))
        assert get is not None and str(get.code.dotted) == "4.05"
        assert get.mtype is aiocoap.ACK and get.mid == 0x1234 and get.token == b"\x07\x08"
        non = await asyncio.to_thread(_ask, port, _request(aiocoap.DELETE, aiocoap.NON))
        assert non is not None and non.mtype is aiocoap.NON and str(non.code.dotted) == "4.05"
        cf = await asyncio.to_thread(_ask, port, _request(aiocoap.POST, content_format=60, payload=b"\xa0"))
        assert (
            cf is not None and str(cf.code.dotted) == "4.15" and cf.payload == b"Content-Format must be 65000"
        )
        acc = await asyncio.to_thread(_ask, port, _request(aiocoap.POST, accept=50))
        assert acc is not None and str(acc.code.dotted) == "4.06"
        tiny = aiocoap.optiontypes.BlockOption.BlockwiseTuple(0, True, 0)  # 16-byte blocks
        small = await asyncio.to_thread(_ask, port, _request(aiocoap.POST, block1=tiny, payload=b"x" * 16))
        assert small is not None and str(small.code.dotted) == "4.00"
        blocks32 = aiocoap.optiontypes.BlockOption.BlockwiseTuple(0, True, 1)  # 32 bytes: taken
        taken = _request(aiocoap.POST, block1=blocks32, content_format=CF, payload=b"x" * 32)
        went_on = await asyncio.to_thread(_ask, port, taken)
        assert went_on is not None and str(went_on.code.dotted) == "2.31"
        junk = await asyncio.to_thread(_ask, port, b"\x40\x01\x00\x01\xbf\xff", expect_answer=False)
        assert junk is None  # Uri-Path 0xff (not UTF-8): dropped, as aiocoap drops unparsable datagrams
        other = bytes([0x40, int(aiocoap.GET), 0, 9, 0xB1]) + b"x"  # GET /x: a path nobody serves
        not_found = await asyncio.to_thread(_ask, port, other)
        assert not_found is not None and str(not_found.code.dotted) == "4.04" and not_found.mid == 9
        assert server.early is not None
        assert (server.early.answered, server.early.dropped) == (6, 1)
        assert server.stats.requests == 0  # none of them reached the TEEP resource
        assert server.stats.rejected == {"4.05": 2, "4.15": 1, "4.06": 1, "4.00": 1, "4.04": 1}
        # a real request still goes through aiocoap to the handler
        client = CoapClient(without_echo(quick("coap")), server.uri)
        try:
            assert await client.post(b"") == b"first"
        finally:
            await client.close()
        assert server.stats.requests == 1 and server.early.answered == 6
    finally:
        await server.close()


async def test_echo_challenge_is_answered_early_and_the_proven_address_is_served() -> None:
    server, port = await _served("coap", echo=True)
    try:
        raw = await asyncio.to_thread(_ask_raw, port, _request(aiocoap.POST))
        assert raw is not None and len(raw) <= 3 * len(_request(aiocoap.POST))  # RFC 9175 §2.4
        first = aiocoap.Message.decode(raw)
        assert str(first.code.dotted) == "4.01" and first.opt.echo is not None
        assert server.early is not None and server.early.answered == 1 and server.stats.requests == 0
        client = CoapClient(quick("coap"), server.uri)  # pads its connect: served without an Echo
        try:
            assert await client.post(b"") == b"first"
        finally:
            await client.close()
        assert server.stats.requests == 1 and server.early.answered == 1
        unpadded = without_padding(quick("coap"))
        client = CoapClient(unpadded, server.uri)  # answers the Echo by itself
        try:
            assert await client.post(b"") == b"first"
        finally:
            await client.close()
        assert server.stats.requests == 2 and server.early.answered == 2
    finally:
        await server.close()


@pytest.mark.parametrize("profile_name", ["coaps-psk", "coap-oscore"])
async def test_no_early_answers_where_datagrams_are_not_plain_coap(profile_name: str, creds: object) -> None:
    from teep_coap.transport.coap import CoapServer as Server

    server = Server(quick(profile_name), handler, devices=creds.tam_side)  # type: ignore[attr-defined]
    await server.start()
    try:
        assert server.early is None
    finally:
        await server.close()
