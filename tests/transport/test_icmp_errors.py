"""A plain-CoAP or OSCORE TAM goes on reading after an ICMP error: on asyncio, and on uvloop, where a
socket reporting an error stops its reader unless the server turned ICMP error reports off."""

from __future__ import annotations

import asyncio
import socket

import aiocoap
import pytest
from aiocoap.util import socknumbers
from coap_helpers import Creds, quick, without_echo

from teep_coap.transport.base import PeerInfo
from teep_coap.transport.coap import CoapServer
from teep_coap.transport.coap.credentials import load_tam_credentials
from teep_coap.transport.coap.server import _server_socket
from teep_coap.transport.coap.server_socket import stops_reading_on_socket_error

pytestmark = [pytest.mark.timeout(60), pytest.mark.both_event_loops]


async def handler(payload: bytes, peer: PeerInfo) -> bytes | None:
    return b"answer"


def _get() -> bytes:
    """A CON GET of the TEEP path: answered at once (4.05), before any handler."""
    msg = aiocoap.Message(code=aiocoap.GET, uri_path=("teep",))
    msg.mtype, msg.mid, msg.token = aiocoap.CON, 0x4321, b"\x01"
    return bytes(msg.encode())


def _answered(port: int) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        s.sendto(_get(), ("127.0.0.1", port))
        try:
            return s.recv(2048)
        except TimeoutError:
            return None


def _asked_and_gone(port: int) -> None:
    """A request from a socket closed at once: the answer meets a closed port, and the kernel sends
    the TAM an ICMP "port unreachable"."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(_get(), ("127.0.0.1", port))


async def _survives_icmp_errors(server: CoapServer) -> None:
    assert await asyncio.to_thread(_answered, server.port) is not None
    for _ in range(3):
        await asyncio.to_thread(_asked_and_gone, server.port)
        await asyncio.sleep(0.2)  # the answer goes out, the ICMP error comes back
        answer = await asyncio.to_thread(_answered, server.port)
        assert answer is not None, "the TAM stopped reading after an ICMP error"
        assert str(aiocoap.Message.decode(answer).code.dotted) == "4.05"


def _icmp_reports(sock: socket.socket) -> tuple[int, int]:
    return (
        sock.getsockopt(socket.IPPROTO_IP, socknumbers.IP_RECVERR),
        sock.getsockopt(socket.IPPROTO_IPV6, socknumbers.IPV6_RECVERR),
    )


async def test_plain_coap_reads_on_after_icmp_port_unreachable() -> None:
    async with CoapServer(without_echo(quick("coap")), handler) as server:
        await _survives_icmp_errors(server)
        reports = _icmp_reports(_server_socket(server._context))
        # on uvloop the reports are off; on asyncio aiocoap keeps them (its retransmissions to an
        # unreachable peer end early)
        assert reports == ((0, 0) if stops_reading_on_socket_error(asyncio.get_running_loop()) else (1, 1))


async def test_oscore_server_reads_on_after_icmp_port_unreachable(creds: Creds) -> None:
    profile = quick("coap-oscore")
    async with CoapServer(profile, handler, devices=load_tam_credentials(creds.tam_dir)) as server:
        # an unprotected GET is refused, and the refusal meets the closed port all the same
        assert await asyncio.to_thread(_answered, server.port) is not None
        for _ in range(3):
            await asyncio.to_thread(_asked_and_gone, server.port)
            await asyncio.sleep(0.2)
            assert await asyncio.to_thread(_answered, server.port) is not None
