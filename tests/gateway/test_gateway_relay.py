"""The TEEP gateway on loopback: Agent → gateway (coaps-psk / OSCORE / coap) → our TAM (HTTP or CoAP).

Real sockets, real DTLS and OSCORE, real engines and SQLite: a full install through the gateway,
a gateway that alters one byte either way (caught by TEEP's end-to-end COSE signatures), a TAM
that refuses connections (5.02) or never answers (5.04) within a bounded time, and a gateway restart
in the middle of a session that the TAM still finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from teep_coap.bench.scenario import COMPONENT_ID, DEVICE_NAME, World, teep_world
from teep_coap.profiles import Profile, load_profile
from teep_coap.profiles.gateway import Gateway, GatewayError, add_device, init_gateway_dir, upstream_profile
from teep_coap.profiles.session import TamHandler, run_session, run_until_done
from teep_coap.profiles.stack import make_client, make_server
from teep_coap.transport.base import PeerInfo, PeerRejected
from teep_coap.transport.gateway import GatewayRelay

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 10.0


def quick(name: str, timeout: float = TIMEOUT) -> Profile:
    p = load_profile(name)
    return dataclasses.replace(p, limits=dataclasses.replace(p.limits, request_timeout=timeout))


def make_world(tmp_path: Path, device_profile: str) -> tuple[World, Path]:
    """A TAM and an Agent (one 3 kB component offered), and a gateway folder with that device."""
    world = teep_world(quick(device_profile), tmp_path, 3000)
    gw = init_gateway_dir(tmp_path / "gw")
    add_device(
        gw, DEVICE_NAME, world.agent_dir
    )  # rewrites the Agent's transport.toml: it talks to the gateway
    return world, gw


@contextlib.asynccontextmanager
async def tam_server(
    world: World, scheme: str, certs: Path | None = None
) -> AsyncIterator[tuple[str, TamHandler]]:
    profile = quick({"http": "teep-cbor-http", "https": "teep-cbor-https"}.get(scheme, "coap"))
    handler = TamHandler(world.tam)
    server = make_server(profile, handler, tam_dir=world.tam_dir, certs_path=certs)
    await server.start()
    try:
        yield server.uri, handler
    finally:
        await (server.stop() if hasattr(server, "stop") else server.close())


async def install(world: World, device_profile: str, uri: str) -> Any:
    client = make_client(quick(device_profile), uri, state_dir=world.agent_dir)
    try:
        return await run_until_done(world.agent, client, uri, timeout=TIMEOUT)
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("device_profile", "upstream"),
    [
        ("coaps-psk", "http"),
        ("coap-oscore", "http"),
        ("coap-edhoc", "http"),
        ("coaps-psk", "https"),
        ("coaps-psk", "coap"),
    ],
)
async def test_install_through_gateway(tmp_path: Path, device_profile: str, upstream: str) -> None:
    world, gw_dir = make_world(tmp_path, device_profile)
    certs = None
    if upstream == "https":
        from teep_coap.security.certs import write_bundle

        certs = tmp_path / "certs"
        write_bundle(certs)  # the TAM's server certificate; the gateway trusts its CA
    async with (
        tam_server(world, upstream, certs) as (tam_uri, handler),
        Gateway(gw_dir, quick(device_profile), tam_uri, certs=certs, upstream_timeout=5.0) as gw,
    ):
        report = await install(world, device_profile, gw.uri)
        stats = gw.relay.stats
    assert report.ok, [s.reason for s in report.sessions]
    assert report.installed == [(COMPONENT_ID, 1)]
    assert world.agent.state.components.get(COMPONENT_ID) is not None
    assert handler.sessions_done == 2 and handler.sessions_failed == 0  # install, then "nothing more"
    assert stats.sessions_started == 2 and stats.sessions_done == 2 and not stats.upstream_errors
    assert stats.messages_up == report.sessions[0].rounds + report.sessions[1].rounds
    # what the device sent is exactly what went upstream (the gateway moves bytes, it adds none)
    assert stats.bytes_up == sum(s.bytes_sent for s in report.sessions)
    assert stats.bytes_down == sum(s.bytes_received for s in report.sessions)
    (device,) = world.tam.store.devices()
    (dc,) = world.tam.store.device_components(device.id)
    assert dc.installed_seq == 1


class TamperDown(GatewayRelay):
    """A gateway that changes one byte of every TAM message on its way to the device."""

    def to_device(self, answer: bytes | None, peer: PeerInfo) -> bytes | None:
        if not answer:
            return answer
        i = len(answer) - 5  # inside the signature
        return answer[:i] + bytes([answer[i] ^ 0x01]) + answer[i + 1 :]


class TamperUp(GatewayRelay):
    """A gateway that changes one byte of every device message on its way to the TAM."""

    def to_upstream(self, payload: bytes, peer: PeerInfo) -> bytes:
        if not payload:
            return payload
        i = len(payload) - 5  # inside the signature
        return payload[:i] + bytes([payload[i] ^ 0x80]) + payload[i + 1 :]


@pytest.mark.parametrize("relay_class", [TamperDown, TamperUp])
async def test_tampering_gateway_is_detected(tmp_path: Path, relay_class: type[GatewayRelay]) -> None:
    world, gw_dir = make_world(tmp_path, "coaps-psk")
    async with (
        tam_server(world, "http") as (tam_uri, handler),
        Gateway(gw_dir, quick("coaps-psk"), tam_uri, relay_class=relay_class) as gw,
    ):
        report = await install(world, "coaps-psk", gw.uri)
        stats = gw.relay.stats
    assert report.installed == [] and world.agent.state.components.get(COMPONENT_ID) is None
    (device,) = world.tam.store.devices()
    assert world.tam.store.device_components(device.id) == [] or all(
        dc.installed_seq is None for dc in world.tam.store.device_components(device.id)
    )
    reason = report.sessions[-1].reason
    if relay_class is TamperDown:
        # the Agent refused the altered QueryRequest with a TEEP Error: no Update was ever sent
        assert type(world.agent.last_response).__name__ == "Error", world.agent.last_note
        assert "signature not verified" in world.agent.last_note, world.agent.last_note
        assert stats.messages_up == 2  # connect, the Agent's Error
    else:
        # the TAM refused the altered QueryResponse (4.00 through the gateway)
        assert not report.ok
        assert handler.sessions_failed == 1 and "4.00" in reason, reason
        assert stats.upstream_errors == {"bad-request": 1}


async def _post_empty(gw: Gateway, world: World) -> tuple[str, float]:
    client = make_client(quick("coaps-psk"), gw.uri, state_dir=world.agent_dir)
    t0 = time.monotonic()
    try:
        with pytest.raises(PeerRejected) as info:
            await client.post(b"")
    finally:
        await client.close()
    return info.value.status, time.monotonic() - t0


async def test_tam_refusing_connections_gives_502_at_once(tmp_path: Path) -> None:
    world, gw_dir = make_world(tmp_path, "coaps-psk")
    async with tam_server(world, "http") as (tam_uri, _):
        pass  # the TAM's port is now closed: connections are refused
    async with Gateway(gw_dir, quick("coaps-psk"), tam_uri, upstream_timeout=3.0) as gw:
        status, seconds = await _post_empty(gw, world)
        assert gw.relay.stats.upstream_errors == {"bad-gateway": 1}
        assert gw.relay.open_sessions == 0
    assert status == "5.02"
    assert seconds < 3.0  # refused is known at once; the upstream timeout is not waited for


async def test_silent_tam_gives_504_after_the_upstream_timeout(tmp_path: Path) -> None:
    world, gw_dir = make_world(tmp_path, "coaps-psk")
    held: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    silent = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        async with Gateway(
            gw_dir, quick("coaps-psk"), f"http://127.0.0.1:{port}/tam", upstream_timeout=1.0
        ) as gw:
            status, seconds = await _post_empty(gw, world)
            assert gw.relay.stats.upstream_errors == {"gateway-timeout": 1}
    finally:
        for w in held:
            w.close()
        silent.close()
        await silent.wait_closed()
    assert status == "5.04"
    assert 0.9 <= seconds < 6.0  # the upstream timeout (1 s) plus the DTLS handshake, not the device's 10 s


@pytest.mark.parametrize("device_profile", ["coap", "coaps-psk", "coap-oscore", "coap-edhoc"])
async def test_gateway_restart_mid_session_loses_nothing(tmp_path: Path, device_profile: str) -> None:
    """The gateway restarts between QueryRequest and QueryResponse; the TAM finishes the session."""
    world, gw_dir = make_world(tmp_path, device_profile)
    profile = quick(device_profile)
    async with tam_server(world, "http") as (tam_uri, handler):
        gw = Gateway(gw_dir, profile, tam_uri)
        await gw.start()
        port = gw.port
        restarted: list[Gateway] = []

        async def restart_once(sent: bytes, answer: bytes | None) -> None:
            if restarted:
                return
            await gw.close()
            again = Gateway(gw_dir, profile, tam_uri, bind=("127.0.0.1", port))
            await again.start()
            restarted.append(again)

        client = make_client(profile, gw.uri, state_dir=world.agent_dir)
        try:
            result = await run_session(world.agent, client, gw.uri, timeout=TIMEOUT, on_exchange=restart_once)
        finally:
            await client.close()
            for g in restarted:
                await g.close()
    assert result.ok, result.reason
    assert world.agent.state.components.get(COMPONENT_ID) is not None
    # the TAM's record: one session, finished (its HTTP connection changed mid-way; the TAM keys
    # sessions by the messages' token, not by the connection)
    ((_, _, _, ended, outcome),) = world.tam.store.sessions()
    assert ended is not None and outcome == "success", outcome
    assert handler.sessions_failed == 0
    assert restarted and restarted[0].relay.stats.sessions_done == 1


def test_gateway_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(GatewayError, match="gateway init"):
        add_device(tmp_path / "nothing", "d1")
    gw = init_gateway_dir(tmp_path / "gw")
    with pytest.raises(GatewayError, match="already a gateway folder"):
        init_gateway_dir(gw)
    coaps = load_profile("coaps-psk")
    assert upstream_profile(coaps, "https://tam.example/tam").name == "teep-cbor-https"
    assert upstream_profile(load_profile("teep-json-coap"), "http://t/tam").name == "teep-json-http"
    with pytest.raises(GatewayError, match="http://, https:// or coap://"):
        upstream_profile(coaps, "ftp://tam.example/")
    with pytest.raises(GatewayError, match="over CoAP"):
        Gateway(gw, load_profile("teep-cbor-http"), "http://127.0.0.1:1/tam")
    with pytest.raises(GatewayError, match="tam credentials"):
        Gateway(gw, coaps, "coaps://127.0.0.1:1/teep")
