"""Faults around whole TEEP sessions: lossy links, a TAM restarted mid-session."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

from teep_coap.bench.scenario import COMPONENT_ID, teep_world
from teep_coap.profiles import Profile, load_profile
from teep_coap.profiles.session import TamHandler, run_session, run_until_done
from teep_coap.profiles.stack import make_client, make_server
from teep_coap.transport.relay import DOWN, FaultPlan, UdpRelay

pytestmark = pytest.mark.timeout(180)


def tuned(name: str, timeout: float) -> Profile:
    p = load_profile(name)
    r = dataclasses.replace(p.retransmission, ack_timeout=0.2, ack_random_factor=1.2, max_retransmit=8)
    return dataclasses.replace(
        p, retransmission=r, limits=dataclasses.replace(p.limits, request_timeout=timeout)
    )


def _installed_once(world: object) -> None:
    agent, tam = world.agent, world.tam  # type: ignore[attr-defined]
    entries = agent.state.components.list()
    assert [(tuple(e.component_id), e.sequence_number) for e in entries] == [(COMPONENT_ID, 1)]
    (device,) = tam.store.devices()
    (dc,) = tam.store.device_components(device.id)
    assert dc.installed_seq == 1 and not dc.unneeded


@pytest.mark.parametrize("name", ["coap", "coap-oscore", "coap-edhoc", "coaps-psk", "coap-constrained"])
async def test_sessions_complete_through_lossy_relay(name: str, tmp_path: Path) -> None:
    profile = tuned(name, 30.0)
    world = teep_world(profile, tmp_path, 2000 if profile.transport.block_size >= 256 else 800)
    handler = TamHandler(world.tam)
    dtls = profile.security.mode == "dtls-psk"
    # 20% loss, 20% duplication, 20% reordering, seeded; DTLS handshake records spared (tinydtls
    # wedges on them; the restart path is tested in tests/transport/test_relay.py)
    plan = FaultPlan(drop=0.2, duplicate=0.2, reorder=0.2, seed=11, spare_dtls_handshake=dtls)
    async with make_server(profile, handler, tam_dir=world.tam_dir) as server:  # noqa: SIM117
        async with UdpRelay(("127.0.0.1", server.port), faults=plan) as relay:
            uri = f"{'coaps' if dtls else 'coap'}://127.0.0.1:{relay.port}/teep"
            client = make_client(profile, uri, state_dir=world.agent_dir)
            try:
                report = await run_until_done(world.agent, client, uri, timeout=30.0)
            finally:
                await client.close()
    assert report.ok, [s.reason for s in report.sessions]
    assert report.installed == [(COMPONENT_ID, 1)]
    st = relay.stats
    assert st.up.dropped + st.down.dropped > 0
    assert st.up.duplicated + st.down.duplicated + st.up.reordered + st.down.reordered > 0
    _installed_once(world)
    assert handler.sessions_failed == 0


@pytest.mark.parametrize("name", ["coaps-psk", "coap"])
async def test_tam_restart_between_messages(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The TAM process goes away after sending its QueryRequest and comes back on the same port."""
    profile = tuned(name, 3.0)
    world = teep_world(profile, tmp_path, 500)
    server = make_server(profile, TamHandler(world.tam), tam_dir=world.tam_dir)
    await server.start()
    port = server.port
    uri = server.uri
    restarted: list[object] = []

    async def restart_after_first(sent: bytes, answer: bytes | None) -> None:
        if not restarted:
            await server.close()
            # a new TAM instance on the same port and store (what a restarted process would have)
            again = make_server(profile, TamHandler(world.tam), port=port, tam_dir=world.tam_dir)
            await again.start()
            restarted.append(again)

    client = make_client(profile, uri, state_dir=world.agent_dir)
    caplog.set_level(logging.INFO)
    try:
        first = await run_session(world.agent, client, uri, timeout=3.0, on_exchange=restart_after_first)
    finally:
        await client.close()
    new_server = restarted[0]
    try:
        if name == "coaps-psk" and not first.ok:
            # the DTLS session died with the old process, and the Agent's DTLS layer still holds it:
            # a clear timeout error
            assert "no answer" in first.reason and "3 s" in first.reason
            assert world.agent.state.broker.last_error  # ProcessError reached the Agent
        else:
            # plain CoAP has no connection state; over DTLS, aiocoap's client sometimes drops the old
            # session in time (which depends on event-loop timing) and shakes hands anew. Either way
            # the restarted TAM finds the outstanding token in its store and the same session goes on.
            assert first.ok, first.reason
        client2 = make_client(profile, uri, state_dir=world.agent_dir)
        try:
            report = await run_until_done(world.agent, client2, uri, timeout=5.0)
        finally:
            await client2.close()
        assert report.ok
        _installed_once(world)  # nothing lost, nothing twice
    finally:
        await new_server.close()  # type: ignore[attr-defined]


async def test_session_waits_for_a_tam_slow_to_finish_its_first_handshake(tmp_path: Path) -> None:
    """The Broker's own per-exchange bound leaves the first DTLS handshake its `handshake_timeout`: a
    TAM whose handshake answers are held up for 2.5 s (a burst of devices starving it) still installs,
    though `request_timeout` is 1 s."""
    profile = load_profile("coaps-psk")
    limits = dataclasses.replace(profile.limits, request_timeout=1.0, handshake_timeout=6.0)
    profile = dataclasses.replace(profile, limits=limits)
    world = teep_world(profile, tmp_path, 500)
    handler = TamHandler(world.tam)
    async with make_server(profile, handler, tam_dir=world.tam_dir) as server:  # noqa: SIM117
        async with UdpRelay(("127.0.0.1", server.port)) as relay:
            relay.blackhole = {DOWN}
            asyncio.get_running_loop().call_later(2.5, relay.blackhole.clear)
            uri = f"coaps://127.0.0.1:{relay.port}/teep"
            client = make_client(profile, uri, state_dir=world.agent_dir)
            try:
                result = await run_session(world.agent, client, uri, timeout=1.0)
            finally:
                await client.close()
    assert result.ok, result.reason
    assert relay.stats.down.dropped >= 1
    _installed_once(world)
