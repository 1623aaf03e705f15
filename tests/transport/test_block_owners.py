"""Unfinished block-wise uploads are kept per peer: one peer (over plain CoAP, anyone who can receive
at its address) starting many uploads pushes out its own, not another peer's unfinished one."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiocoap import CON, POST, Message
from aiocoap.optiontypes import BlockOption
from coap_helpers import quick, without_echo

from teep_coap.transport.base import PeerInfo
from teep_coap.transport.coap import CoapServer
from teep_coap.transport.coap.aiocoap_compat import messages
from teep_coap.transport.coap.aiocoap_compat.messages import BoundedTimeoutDict, block_owner

pytestmark = pytest.mark.timeout(60)
SZX = 2  # 64-byte blocks
PROFILE = without_echo(quick("coap"))


async def _size(payload: bytes, peer: PeerInfo) -> bytes | None:
    return str(len(payload)).encode()


def _block(path: str, number: int, more: bool, payload: bytes, *, query: str = "") -> bytes:
    msg = Message(code=POST)  # type, Message ID and token set after: aiocoap warns when given at once
    msg.mtype, msg.mid, msg.token = CON, int.from_bytes(os.urandom(2), "big"), os.urandom(4)
    msg.opt.uri_path = tuple(p for p in path.split("/") if p)
    if query:
        msg.opt.uri_query = (query,)
    msg.opt.block1 = BlockOption.BlockwiseTuple(number, more, SZX)
    msg.opt.content_format = PROFILE.transport.content_format
    msg.payload = payload
    return bytes(msg.encode())


def _exchange(sock: socket.socket, where: tuple[str, int], datagram: bytes) -> Message:
    sock.sendto(datagram, where)
    data, _ = sock.recvfrom(2048)
    return Message.decode(data)


def _peer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_a_peer_starting_many_uploads_pushes_out_only_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(messages, "MAX_BLOCK1_ASSEMBLIES", 16)
    async with CoapServer(PROFILE, _size) as server:
        uri = urlsplit(server.uri)
        where = (uri.hostname or "127.0.0.1", int(uri.port or 0))
        device, flooder = _peer(), _peer()
        try:
            body = os.urandom(128)
            first = await asyncio.to_thread(_exchange, device, where, _block(uri.path, 0, True, body[:64]))
            assert str(first.code) == "2.31 Continue"
            for i in range(40):  # 2.5 times the table, each a new upload (its own query)
                reply = await asyncio.to_thread(
                    _exchange, flooder, where, _block(uri.path, 0, True, os.urandom(64), query=f"q={i}")
                )
                assert str(reply.code) == "2.31 Continue"
            last = await asyncio.to_thread(_exchange, device, where, _block(uri.path, 1, False, body[64:]))
            # before: the flooder's uploads pushed this one out, and the device got 4.08 Incomplete
            assert str(last.code).startswith("2.") and last.payload == b"128", (last.code, last.payload)
            # the flooder's newest upload is still there: its own oldest made the room
            done = await asyncio.to_thread(
                _exchange, flooder, where, _block(uri.path, 1, False, b"x", query="q=39")
            )
            assert done.payload == b"65"
        finally:
            device.close()
            flooder.close()


class _Payload:
    def __init__(self, size: int) -> None:
        self.payload = b"\0" * size


def test_room_is_made_from_the_peer_holding_the_most() -> None:
    async def run() -> list[Any]:
        table = BoundedTimeoutDict(60.0, 4, 1000, owner=block_owner)
        table[("a", 1)] = _Payload(10)  # type: ignore[assignment]
        for n in range(3):
            table[("b", n)] = _Payload(10)  # type: ignore[assignment]
        table[("b", 3)] = _Payload(10)  # full: b holds the most, its oldest goes
        first = list(table._items)
        table[("c", 0)] = _Payload(900)  # bytes: 1,000 at most; b holds the most bytes
        second = list(table._items)
        table[("d", 0)] = _Payload(500)  # full again: b (two entries) gives one; then c the bytes
        return [first, second, list(table._items)]

    first, second, third = asyncio.run(run())
    assert first == [("a", 1), ("b", 1), ("b", 2), ("b", 3)]
    assert second == [("a", 1), ("b", 2), ("b", 3), ("c", 0)]
    assert third == [("a", 1), ("b", 3), ("d", 0)]


def test_without_owners_the_oldest_goes_first() -> None:
    async def run() -> list[Any]:
        table = BoundedTimeoutDict(60.0, 2)
        for key in (("a", 1), ("b", 1), ("b", 2)):
            table[key] = _Payload(1)  # type: ignore[assignment]
        return list(table._items)

    assert asyncio.run(run()) == [("b", 1), ("b", 2)]
