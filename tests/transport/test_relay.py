"""The UDP relay counts real datagrams and bytes, and its seeded faults do not break CoAP exchanges."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import time

import pytest
from coap_helpers import Creds, quick, without_echo

from teep_coap.bench.dtls_burst import RESTART_MARK
from teep_coap.profiles import Profile
from teep_coap.transport.base import PeerInfo, TransportTimeout
from teep_coap.transport.coap import CoapClient, CoapServer
from teep_coap.transport.relay import DOWN, FaultPlan, UdpRelay

pytestmark = pytest.mark.timeout(90)


async def echo(payload: bytes, peer: PeerInfo) -> bytes | None:
    return payload or b"hello"


def fast_retransmit(profile: Profile) -> Profile:
    r = dataclasses.replace(profile.retransmission, ack_timeout=0.2, ack_random_factor=1.2, max_retransmit=8)
    lim = dataclasses.replace(profile.limits, request_timeout=20.0)
    return dataclasses.replace(profile, retransmission=r, limits=lim)


async def test_counts_bytes_and_datagrams() -> None:
    profile = without_echo(quick("coap"))  # one exchange, no 4.01 + Echo round before it
    async with (
        CoapServer(profile, echo) as server,
        UdpRelay(("127.0.0.1", server.port), record=True) as relay,
    ):
        client = CoapClient(profile, f"coap://127.0.0.1:{relay.port}/teep")
        try:
            assert await client.post(b"") == b"hello"
        finally:
            await client.close()
    # one CON request, one piggybacked ACK: two datagrams, sizes = header + options + payload
    assert relay.stats.up.datagrams == 1 and relay.stats.down.datagrams == 1
    assert relay.stats.up.bytes == len(relay.datagrams[0].payload)
    assert relay.stats.down.bytes == len(relay.datagrams[1].payload)
    assert relay.datagrams[1].payload.endswith(b"\xffhello")
    assert relay.stats.up.bytes == relay.stats.up.delivered_bytes


@pytest.mark.parametrize("profile_name", ["coap", "coaps-psk", "coap-oscore"])
async def test_exchanges_survive_loss_duplication_reordering(profile_name: str, creds: Creds) -> None:
    profile = fast_retransmit(quick(profile_name))
    # tinydtls wedges when a handshake flight is hit (docs/coap-binding.md): faults on the CoAP records
    plan = FaultPlan(
        drop=0.2, duplicate=0.2, reorder=0.2, seed=7, spare_dtls_handshake=profile.security.mode == "dtls-psk"
    )
    seen: list[bytes] = []

    async def recording_echo(payload: bytes, peer: PeerInfo) -> bytes | None:
        seen.append(payload)
        return payload[::-1] or b"first"

    async with CoapServer(profile, recording_echo, devices=creds.tam_side) as server:  # noqa: SIM117
        async with UdpRelay(("127.0.0.1", server.port), faults=plan) as relay:
            scheme = "coaps" if profile.security.mode == "dtls-psk" else "coap"
            client = CoapClient(profile, f"{scheme}://127.0.0.1:{relay.port}/teep", creds.agent_side)
            try:
                messages = [os.urandom(n) for n in (10, 3000, 200)]
                for m in messages:
                    assert await client.post(m) == m[::-1]
            finally:
                await client.close()
    st = relay.stats
    assert st.up.dropped + st.down.dropped > 0 and st.up.duplicated + st.down.duplicated > 0
    # CoAP de-duplication: the handler saw each message exactly once despite retransmissions/duplicates
    assert seen == messages


async def test_delay_holds_every_datagram_and_keeps_order() -> None:
    profile = without_echo(quick("coap"))  # counts the datagrams of two exchanges exactly
    async with (
        CoapServer(profile, echo) as server,
        UdpRelay(("127.0.0.1", server.port), faults=FaultPlan(delay=0.15), record=True) as relay,
    ):
        client = CoapClient(profile, f"coap://127.0.0.1:{relay.port}/teep")
        try:
            started = time.monotonic()
            assert await client.post(b"one") == b"one"
            assert await client.post(b"two") == b"two"
            elapsed = time.monotonic() - started
        finally:
            await client.close()
    assert elapsed >= 4 * 0.15  # two round trips, each 0.15 s up and 0.15 s down
    assert relay.stats.up.delivered_datagrams == relay.stats.down.delivered_datagrams == 2
    with pytest.raises(ValueError, match="delay"):
        FaultPlan(delay=-1.0)


def test_fault_plan_checks_range() -> None:
    with pytest.raises(ValueError, match="drop"):
        FaultPlan(drop=1.5)


async def test_dtls_handshake_loss_recovers_by_restart(
    creds: Creds, caplog: pytest.LogCaptureFixture
) -> None:
    """A lost handshake flight wedges tinydtls; the client starts the handshake again and gets through
    (and logs it with the line `bench dtls-burst` counts)."""
    caplog.set_level(logging.INFO, logger="teep_coap.transport.coap.client")
    profile = fast_retransmit(quick("coaps-psk"))
    plan = FaultPlan(drop=0.2, seed=1)  # seed 1 drops the first ClientHello and a later flight

    async def handler(payload: bytes, peer: PeerInfo) -> bytes | None:
        return b"ok:" + payload

    async with CoapServer(profile, handler, devices=creds.tam_side) as server:  # noqa: SIM117
        async with UdpRelay(("127.0.0.1", server.port), faults=plan) as relay:
            client = CoapClient(profile, f"coaps://127.0.0.1:{relay.port}/teep", creds.agent_side)
            try:
                assert await client.post(b"x") == b"ok:x"
            finally:
                await client.close()
    assert client.handshake_restarts >= 1
    assert relay.stats.up.dropped >= 1
    logged = sum(RESTART_MARK in r.getMessage() for r in caplog.records)
    assert logged == client.handshake_restarts


@pytest.mark.parametrize("handshake_timeout", [6.0, 1.0])
async def test_first_handshake_has_its_own_budget(creds: Creds, handshake_timeout: float) -> None:
    """A TAM that cannot finish handshakes for a while (starved by a burst of devices, starting up) is
    waited for up to `handshake_timeout`; the exchange's own `request_timeout` counts from the session."""
    profile = quick("coaps-psk", request_timeout=1.0, handshake_timeout=handshake_timeout)

    async def handler(payload: bytes, peer: PeerInfo) -> bytes | None:
        return b"ok:" + payload

    async with CoapServer(profile, handler, devices=creds.tam_side) as server:  # noqa: SIM117
        async with UdpRelay(("127.0.0.1", server.port)) as relay:
            relay.blackhole = {DOWN}  # the TAM's handshake answers do not get through for 2.5 s
            asyncio.get_running_loop().call_later(2.5, relay.blackhole.clear)
            client = CoapClient(profile, f"coaps://127.0.0.1:{relay.port}/teep", creds.agent_side)
            t0 = time.monotonic()
            try:
                if handshake_timeout > 2.5:
                    assert await client.post(b"x") == b"ok:x"
                else:  # the old behaviour: one request_timeout for handshake and exchange together
                    with pytest.raises(TransportTimeout, match="within 1 s: nothing answered the DTLS"):
                        await client.post(b"x")
            finally:
                await client.close()
    assert time.monotonic() - t0 < handshake_timeout + 1.5
    assert relay.stats.down.dropped >= 1


async def test_post_cancelled_during_the_handshake_leaves_nothing_for_asyncio_to_report(
    creds: Creds, caplog: pytest.LogCaptureFixture
) -> None:
    """A caller that gives up on post() (the Broker's own bound) while the handshake runs: closing
    the client then must not leave a request future with an unread LibraryShutdown behind, which
    asyncio logs with a traceback on `agent run`'s stderr."""
    profile = quick("coaps-psk")

    async def handler(payload: bytes, peer: PeerInfo) -> bytes | None:
        return b"ok"

    async with CoapServer(profile, handler, devices=creds.tam_side) as server:  # noqa: SIM117
        async with UdpRelay(("127.0.0.1", server.port)) as relay:
            relay.blackhole = {DOWN}
            client = CoapClient(profile, f"coaps://127.0.0.1:{relay.port}/teep", creds.agent_side)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.post(b"x"), 0.5)
            await client.close()
    gc.collect()
    await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
