"""The TAM's DTLS server resends its hello flight on tinydtls' timer when the client goes quiet
(RFC 6347 §4.2.4), and stops once the session has ended: the timer is a loop timer now, not a task
per datagram."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from coap_helpers import Creds, quick
from test_dtls_junk import (
    CLIENT_HELLO,
    HANDSHAKE,
    HELLO_VERIFY_REQUEST,
    SERVER_HELLO,
    client_hello,
    first_reply,
    handshake,
    record,
)

from teep_coap.transport.base import PeerInfo
from teep_coap.transport.coap import CoapServer, aiocoap_compat

pytestmark = [pytest.mark.timeout(60), pytest.mark.both_event_loops]


async def _hello(payload: bytes, peer: PeerInfo) -> bytes | None:
    return b"hello"


def _to_hello_flight(sock: socket.socket) -> None:
    client_random = bytes(range(32))
    sock.send(record(HANDSHAKE, handshake(CLIENT_HELLO, client_hello(client_random), 0)))
    verify = first_reply(sock, HELLO_VERIFY_REQUEST)
    assert verify is not None
    cookie = verify[28 : 28 + verify[27]]
    sock.send(record(HANDSHAKE, handshake(CLIENT_HELLO, client_hello(client_random, cookie), 1), seq=1))
    assert first_reply(sock, SERVER_HELLO) is not None


def _resent_hellos(sock: socket.socket, within: float) -> list[float]:
    """Seconds after now at which a ServerHello arrived again, until `within` seconds have passed."""
    start = time.monotonic()
    seen = []
    while (left := within - (time.monotonic() - start)) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except OSError:  # nothing more within the time left
            break
        if data[:1] == bytes([HANDSHAKE]) and data[13] == SERVER_HELLO:
            seen.append(time.monotonic() - start)
    return seen


async def test_the_hello_flight_is_resent_until_the_session_ends(creds: Creds) -> None:
    async with CoapServer(quick("coaps-psk"), _hello, devices=creds.tam_side) as server:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as kept,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ended,
        ):
            for sock in (kept, ended):
                sock.settimeout(2.0)
                sock.connect(("127.0.0.1", server.port))
                await asyncio.to_thread(_to_hello_flight, sock)
            assert server.dtls_sessions == 2
            # tinydtls waits 2 s, then twice as long: resent about 2 s after the flight, then 6 s after
            watching = asyncio.create_task(asyncio.to_thread(_resent_hellos, kept, 7.5))
            resent = await asyncio.to_thread(_resent_hellos, ended, 3.5)
            assert len(resent) == 1 and 1.0 < resent[0] < 3.5, resent
            # one session ends (pushed out, as a full table or an idle sweep does): the resend due at
            # about 6 s does not come; the other's does
            pool = aiocoap_compat.dtls_pool(server._context)
            pool._connections[ended.getsockname()]._inject_error(ConnectionResetError("ended by the test"))
            await asyncio.sleep(0)
            assert server.dtls_sessions == 1
            assert await asyncio.to_thread(_resent_hellos, ended, 4.5) == []
            resent = await watching
            assert len(resent) == 2 and 1.0 < resent[0] < 3.5 and 4.5 < resent[1] < 7.5, resent
