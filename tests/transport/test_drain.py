"""A server socket reads the datagrams already queued in one wake-up (`aiocoap_compat.drain`).

The datagrams are sent before the event loop runs again; after two loop iterations a transport that
reads one datagram per wake-up has read at most two, a draining one a whole batch."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiocoap
import pytest
from coap_helpers import Creds, quick, without_echo

from teep_coap.transport.base import PeerInfo
from teep_coap.transport.coap import CoapServer
from teep_coap.transport.coap.aiocoap_compat import READ_BATCH, server_socket
from teep_coap.transport.coap.aiocoap_compat.drain import _drain_asyncio

pytestmark = pytest.mark.timeout(60)


async def _handler(payload: bytes, peer: PeerInfo) -> bytes | None:
    return payload


def _get(mid: int) -> bytes:
    """CON GET /teep: the early gate answers 4.05 on the spot (counted in `EarlyAnswer.answered`)."""
    return bytes((0x40, 0x01)) + mid.to_bytes(2, "big") + bytes((0xB4,)) + b"teep"


async def _two_loop_rounds() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_plain_coap_server_reads_a_batch_per_wake_up() -> None:
    server = CoapServer(without_echo(quick("coap")), _handler, bind=("127.0.0.1", 0))
    await server.start()
    try:
        assert server.early is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for mid in range(10):
                s.sendto(_get(mid), ("127.0.0.1", server.port))
            await _two_loop_rounds()
            assert server.early.answered == 10  # one datagram per wake-up would be 2 at most
            answers = []
            s.settimeout(2)
            for _ in range(10):
                answers.append(aiocoap.Message.decode(s.recv(2048)))
        assert {str(a.code.dotted) for a in answers} == {"4.05"}
        assert sorted(a.mid for a in answers) == list(range(10))
    finally:
        await server.close()


class _Counting(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.received.append(data)


async def test_asyncio_datagram_transport_reads_at_most_a_batch_per_wake_up() -> None:
    """The transport aiocoap's DTLS server runs on: a batch per wake-up, the rest on the next one."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Counting, local_addr=("127.0.0.1", 0))
    try:
        assert _drain_asyncio(transport, loop)
        port = transport.get_extra_info("sockname")[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(READ_BATCH + 4):
                s.sendto(i.to_bytes(2, "big"), ("127.0.0.1", port))
            await _two_loop_rounds()
            assert len(protocol.received) >= READ_BATCH  # one datagram per wake-up would be 2 at most
            for _ in range(10):
                if len(protocol.received) == READ_BATCH + 4:
                    break
                await asyncio.sleep(0.01)
        assert [int.from_bytes(d, "big") for d in protocol.received] == list(range(READ_BATCH + 4))
    finally:
        transport.close()


async def test_the_dtls_server_socket_reads_with_the_draining_reader(creds: Creds) -> None:
    server = CoapServer(quick("coaps-psk"), _handler, devices=creds.tam_side, bind=("127.0.0.1", 0))
    await server.start()
    try:
        sock = server_socket(server._context)
        assert sock is not None
        loop: Any = asyncio.get_running_loop()
        reader = loop._selector.get_key(sock.fileno()).data[0]  # the (reader, writer) handles
        assert "_drain_asyncio" in reader._callback.__qualname__
    finally:
        await server.close()
