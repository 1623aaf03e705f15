"""Idle expiry of per-peer server state (idle_expiry.py): DTLS sessions and Echo-proven addresses."""

from __future__ import annotations

import asyncio

import pytest
from coap_helpers import Creds, quick

from teep_coap.transport.base import PeerInfo
from teep_coap.transport.coap import CoapClient, CoapServer
from teep_coap.transport.coap.echo import EchoGuard
from teep_coap.transport.coap.idle_expiry import SWEEP_SHARE, IdleSweeper, IdleTracker

pytestmark = pytest.mark.timeout(60)


def test_the_tracker_yields_only_peers_silent_past_the_timeout() -> None:
    idle = IdleTracker(10.0)
    idle.heard("a", 0.0)
    idle.heard("b", 5.0)
    idle.heard("a", 8.0)  # heard again: now the newest
    assert list(idle.expired(15.5)) == ["b"]
    assert "a" in idle and "b" not in idle
    assert list(idle.expired(18.0)) == []
    assert list(idle.expired(18.5)) == ["a"]
    assert len(idle) == 0


def test_datagrams_sweep_at_most_once_per_share_of_the_timeout() -> None:
    now = [0.0]
    dropped: list[str] = []
    sweeper = IdleSweeper(IdleTracker(16.0), dropped.append, lambda: True, clock=lambda: now[0])
    gap = 16.0 * SWEEP_SHARE  # 1 s
    for peer, at in (("a", 0.0), ("d", 1.0), ("b", 17.0)):
        now[0] = at
        sweeper.heard(peer)
    assert dropped == ["a"]  # the datagram at 17 s swept: "a" had been silent 17 s
    now[0] = 17.0 + gap / 2  # "d" is silent 16.5 s now, but a datagram swept half a gap ago
    sweeper.heard("c")
    assert dropped == ["a"]
    now[0] = 17.0 + gap
    sweeper.heard("c")
    assert dropped == ["a", "d"] and sweeper.expired == 2


def test_a_non_positive_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="idle timeout"):
        IdleTracker(0)


def test_an_echo_proven_address_proves_itself_again_after_silence() -> None:
    now = [1000.0]
    guard = EchoGuard(clock=lambda: now[0], idle_timeout=30.0)
    echo = guard.echo_for("10.0.0.1:5683")
    assert guard.check("10.0.0.1:5683", echo) is None
    now[0] += 20.0
    assert guard.check("10.0.0.1:5683", None) is None  # proven, heard again
    now[0] += 31.0
    answer = guard.check("10.0.0.1:5683", None)
    assert answer is not None and answer.opt.echo is not None
    assert guard.proven() == 0


async def _answer(payload: bytes, peer: PeerInfo) -> bytes:
    return b"first" if payload == b"" else payload[::-1]


async def test_an_idle_dtls_session_is_freed_and_the_client_shakes_hands_again(creds: Creds) -> None:
    """Real DTLS on loopback: a session silent past [limits] idle_timeout is gone from the server; the
    client, silent as well, finds no answer on its old session, handshakes again and completes."""
    profile = quick("coaps-psk", request_timeout=4.0, idle_timeout=0.5)
    async with CoapServer(profile, _answer, devices=creds.tam_side) as server:
        client = CoapClient(profile, server.uri, creds.agent_side)
        try:
            assert await client.post(b"") == b"first"
            assert server.dtls_sessions == 1
            for _ in range(100):
                if server.dtls_sessions == 0:
                    break
                await asyncio.sleep(0.05)
            assert server.dtls_sessions == 0
            assert server.dtls_idle is not None and server.dtls_idle.expired == 1
            assert await client.post(b"abc") == b"cba"
            assert client.session_restarts == 1
        finally:
            await client.close()
