"""Duplicate detection by peer, Message ID and token: a new client that got an earlier client's port
and Message ID is answered, a retransmission is not processed twice. Real sockets on loopback; the
datagrams are built by hand so the Message ID and the source port are ours to choose."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import aiocoap
import pytest
from coap_helpers import quick, without_echo

from teep_coap.transport.base import PeerInfo
from teep_coap.transport.coap import CoapServer

pytestmark = pytest.mark.timeout(60)

CF = 65000


class Reverser:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None:
        self.payloads.append(payload)
        return payload[::-1]


def _post(mid: int, token: bytes, payload: bytes) -> bytes:
    msg = aiocoap.Message(
        mtype=aiocoap.CON, code=aiocoap.POST, mid=mid, payload=payload, uri_path=("teep",), content_format=CF
    )
    msg.token = token  # a client's own choice here (aiocoap deprecates passing it to the constructor)
    return bytes(msg.encode())


async def _exchange(sock: socket.socket, port: int, datagram: bytes) -> aiocoap.Message:
    loop = asyncio.get_running_loop()
    sock.sendto(datagram, ("127.0.0.1", port))
    data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
    return aiocoap.Message.decode(data)


async def test_a_new_request_on_a_reused_port_and_message_id_is_answered() -> None:
    handler = Reverser()
    async with CoapServer(without_echo(quick("coap")), handler) as server:
        port = urlsplit(server.uri).port
        assert port is not None and urlsplit(server.uri).path == "/teep"
        first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        first.setblocking(False)
        first.bind(("127.0.0.1", 0))
        source = first.getsockname()
        try:
            answer = await _exchange(first, port, _post(0x4242, b"\x01\x02\x03\x04", b"abc"))
            assert answer.mtype is aiocoap.ACK and answer.mid == 0x4242
            assert answer.token == b"\x01\x02\x03\x04" and answer.payload == b"cba"
            # a retransmission (the same datagram): the stored answer again, not processed twice
            again = await _exchange(first, port, _post(0x4242, b"\x01\x02\x03\x04", b"abc"))
            assert (again.token, again.payload) == (b"\x01\x02\x03\x04", b"cba")
            assert handler.payloads == [b"abc"]
        finally:
            first.close()
        # another client gets the same address and port and picks the same Message ID
        second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        second.setblocking(False)
        second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        second.bind(source)
        try:
            answer = await _exchange(second, port, _post(0x4242, b"\x09\x08", b"xyz"))
            assert answer.mtype is aiocoap.ACK and answer.mid == 0x4242
            assert answer.token == b"\x09\x08" and answer.payload == b"zyx"  # its own answer
            again = await _exchange(second, port, _post(0x4242, b"\x09\x08", b"xyz"))
            assert (again.token, again.payload) == (b"\x09\x08", b"zyx")
        finally:
            second.close()
    assert handler.payloads == [b"abc", b"xyz"]
