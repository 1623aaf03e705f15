"""Bursts of DTLS clients: aiocoap's retransmission timer on tinydtls' clock, and a real burst.

The figure for 200 clients comes from `teep-coap bench dtls-burst` (docs/security.md); this guards
the fix with a smaller burst of real `agent run` processes, every one of which must finish.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aiocoap.meta
import pytest
from coap_helpers import quick

from teep_coap.bench.dtls_burst import run_burst
from teep_coap.transport.coap import CoapServer, aiocoap_compat
from teep_coap.transport.coap.credentials import provision_device

pytestmark = pytest.mark.both_event_loops


def test_patch_applies_to_the_pinned_aiocoap() -> None:
    assert aiocoap.meta.version == aiocoap_compat.WRITTEN_FOR
    assert aiocoap_compat.apply_dtls_fixes() and aiocoap_compat.dtls_fixes_applied()


async def test_a_client_recognizes_its_pooled_connections_as_aiocoap_does() -> None:
    """The O(1) look-up answers as aiocoap's walk over the pool does: a pooled connection yes; one
    dropped from the pool, another connection for the same key, or another address kind no."""
    import logging

    from aiocoap.transports.tinydtls import DTLSClientConnection, MessageInterfaceTinyDTLS

    from teep_coap.transport.coap.aiocoap_compat.dtls import _state

    aiocoap_compat.apply_dtls_fixes()
    original = _state["recognize_remote"]
    mi = MessageInterfaceTinyDTLS(None, logging.getLogger("test"), asyncio.get_running_loop())

    class Unstarted(DTLSClientConnection):
        """A client connection with its pool key and nothing else: no handshake, nothing to shut."""

        def __init__(self, port: int) -> None:
            self._host, self._port, self._pskId, self.coaptransport = "::1", port, b"dev", mi

        def shutdown(self) -> None:
            pass

    pooled, twin, other = Unstarted(5684), Unstarted(5684), Unstarted(5685)
    mi._pool[("::1", 5684, b"dev")] = pooled
    for remote, expected in ((pooled, True), (twin, False), (other, False), ("coaps://[::1]", False)):
        assert await mi.recognize_remote(remote) is expected
        assert await original(mi, remote) is expected
    pooled._remove_from_pool()
    assert await mi.recognize_remote(pooled) is False and await original(mi, pooled) is False


def _first_retransmission_in() -> float:
    """Seconds until a fresh handshake's first retransmission, by tinydtls' due time and our clock."""
    from aiocoap.transports.tinydtls import DTLS_TICKS_PER_SECOND
    from DTLSSocket import dtls

    ctx = dtls.DTLS(
        read=lambda *_: 0, write=lambda *_: 0, event=lambda *_: 0, pskId=b"x", pskStore={b"x": b"k" * 16}
    )
    session = ctx.connect("::1", 1234)  # kept: a dropped session cancels its retransmissions
    due = ctx.checkRetransmit() / DTLS_TICKS_PER_SECOND
    assert session is not None and due > 0
    return due - aiocoap_compat.tinydtls_now()


def test_retransmission_wait_reads_tinydtls_clock() -> None:
    """tinydtls' first retransmission comes 2 s after the ClientHello; our clock must agree, also for
    a context made later (DTLSSocket restarts tinydtls' clock in every constructor)."""
    from aiocoap.transports.tinydtls import DTLS_TICKS_PER_SECOND

    aiocoap_compat.apply_dtls_fixes()
    assert 1.9 < _first_retransmission_in() <= 2.05
    time.sleep(1.1)  # aiocoap's own clock is now off by >= 1.1 s: a wait computed with it is wrong
    assert 1.9 < _first_retransmission_in() <= 2.05
    assert aiocoap_compat.RETRANSMIT_FLOOR <= aiocoap_compat.retransmission_wait(0) <= 0.05
    later = int((aiocoap_compat.tinydtls_now() + 60) * DTLS_TICKS_PER_SECOND)
    assert aiocoap_compat.retransmission_wait(later) == aiocoap_compat.RETRANSMIT_CEILING


@pytest.mark.timeout(300)
def test_burst_of_30_dtls_agents_all_complete() -> None:
    result = run_burst("coaps-psk", clients=30, bound=240)
    assert result.ok == 30, result.to_json()
    assert result.tam_sessions_done == 30


class _RawDtlsClient:
    """A tinydtls client on a UDP socket we bind ourselves (aiocoap always picks a fresh port)."""

    def __init__(self, sock: socket.socket, server: tuple[str, int], identity: bytes, psk: bytes) -> None:
        from DTLSSocket import dtls

        self.sock, self.server, self.connected = sock, server, False
        self.dtls = dtls.DTLS(
            read=lambda _s, data: len(data),
            write=lambda _r, data: self.sock.sendto(data, self.server),
            event=self._event,
            pskId=identity,
            pskStore={identity: psk},
        )

    def _event(self, level: int, code: int) -> None:
        from aiocoap.transports.tinydtls import DTLS_EVENT_CONNECTED

        if code == DTLS_EVENT_CONNECTED:
            self.connected = True

    def handshake(self, seconds: float) -> bool:
        # kept on self: a dropped session sends close_notify, and device A must vanish without one
        self.session = session = self.dtls.connect("::1", 1234)  # a label; datagrams go to self.server
        end = time.monotonic() + seconds
        while not self.connected and time.monotonic() < end:
            self.sock.settimeout(max(0.01, min(0.2, end - time.monotonic())))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                self.dtls.checkRetransmit()
                continue
            self.dtls.handleMessage(session, data)
        return self.connected


async def test_new_device_on_a_reused_port_completes_its_handshake(tmp_path: Path) -> None:
    """Device A shakes hands from port P and vanishes without close_notify; device B, later given
    the same port, must complete its own handshake (aiocoap kept A's session and failed B's)."""
    a = provision_device(tmp_path / "tam", tmp_path / "a", "device-a")
    b = provision_device(tmp_path / "tam", tmp_path / "b", "device-b")

    async def handler(payload: bytes, peer: object) -> bytes | None:
        return b"hello"

    aiocoap_compat.apply_dtls_fixes()
    async with CoapServer(quick("coaps-psk"), handler, devices=[a, b]) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            target = ("127.0.0.1", server.port)
            loop = asyncio.get_running_loop()
            first = _RawDtlsClient(sock, target, a.psk_identity.encode(), a.psk)
            assert await loop.run_in_executor(None, first.handshake, 5.0)
            second = _RawDtlsClient(sock, target, b.psk_identity.encode(), b.psk)
            assert await loop.run_in_executor(None, second.handshake, 5.0)
