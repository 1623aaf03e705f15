"""Whole TEEP sessions over every CoAP profile: real engines, real sockets, real DTLS/OSCORE."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from teep_coap.bench.scenario import COMPONENT_ID, teep_world
from teep_coap.profiles import load_profile
from teep_coap.profiles.session import TamHandler, run_until_done
from teep_coap.profiles.stack import make_client, make_server

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("name", ["coap", "coaps-psk", "coap-oscore", "coap-edhoc", "coap-constrained"])
async def test_install_one_component(name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    profile = load_profile(name)
    profile = dataclasses.replace(profile, limits=dataclasses.replace(profile.limits, request_timeout=10.0))
    world = teep_world(profile, tmp_path, 3000)  # 3 kB: block-wise with 64- and 1024-byte blocks
    handler = TamHandler(world.tam)
    server = make_server(profile, handler, tam_dir=world.tam_dir)
    caplog.set_level(logging.INFO, logger="teep_coap.session")
    async with server:
        client = make_client(profile, server.uri, state_dir=world.agent_dir)
        try:
            report = await run_until_done(world.agent, client, server.uri, timeout=10.0)
        finally:
            await client.close()
    assert report.ok, [s.reason for s in report.sessions]
    assert report.installed == [(COMPONENT_ID, 1)]
    assert len(report.sessions) == 2  # the second session finds nothing to do
    assert report.sessions[0].rounds == 3  # connect → QueryResponse → Success
    assert world.agent.state.components.get(COMPONENT_ID) is not None
    assert handler.sessions_done == 2 and handler.sessions_failed == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "teep_coap.session"]
    assert len(lines) == 2 and all(" done: " in line for line in lines)
    if profile.security.mode != "none":
        assert "bench-device" in lines[0]  # the transport identity reached the TAM
    # the TAM's store recorded one install of that component for this device
    (device,) = world.tam.store.devices()
    assert device.name == "bench-device"
    (dc,) = world.tam.store.device_components(device.id)
    assert dc.installed_seq == 1


async def test_handler_maps_engine_errors_and_bounds_its_log(caplog: pytest.LogCaptureFixture) -> None:
    from teep_coap.profiles import session as session_mod
    from teep_coap.protocol.errors import IdentityMismatch, InvalidMessage, TamFailure
    from teep_coap.transport.base import PeerInfo, Rejection, RequestRejected

    class Scripted:
        def connect(self, identity: str | None = None) -> bytes:
            return b"qr"

        def receive(self, data: bytes, identity: str | None = None) -> bytes | None:
            raise {b"bad": InvalidMessage("x"), b"who": IdentityMismatch("y"), b"db": TamFailure("z")}[data]

    handler = TamHandler(Scripted())
    caplog.set_level(logging.INFO, logger="teep_coap.session")
    expected = {b"bad": Rejection.BAD_REQUEST, b"who": Rejection.FORBIDDEN, b"db": Rejection.SERVER_ERROR}
    for i, (data, rejection) in enumerate(expected.items()):
        peer = PeerInfo("coap", f"127.0.0.1:{1000 + i}")
        assert await handler(b"", peer) == b"qr"
        with pytest.raises(RequestRejected) as exc:
            await handler(data, peer)
        assert exc.value.rejection is rejection
    assert handler.sessions_failed == 3 and handler.sessions_done == 0
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and "refused" in lines[0] and "failed" in lines[2]
    # peers that start sessions and vanish cannot grow the table without bound
    old = session_mod.MAX_OPEN_SESSIONS
    session_mod.MAX_OPEN_SESSIONS = 5
    try:
        for port in range(20):
            await handler(b"", PeerInfo("coap", f"127.0.0.1:{2000 + port}"))
        assert len(handler._open) == 5
    finally:
        session_mod.MAX_OPEN_SESSIONS = old
