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
    assert len(lines) == 2 and ": success after " in lines[0] and ": up-to-date after " in lines[1]
    if profile.security.mode != "none":
        assert "bench-device" in lines[0]  # the transport identity reached the TAM
    # the TAM's store recorded one install of that component for this device
    (device,) = world.tam.store.devices()
    assert device.name == "bench-device"
    (dc,) = world.tam.store.device_components(device.id)
    assert dc.installed_seq == 1


async def test_handler_maps_engine_errors_and_keeps_no_session_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Engine errors become 4.00 / 4.03 / 5.00; sessions are logged and counted from the engine's
    events (a silent device's session ends at the timer), and the handler holds nothing per peer."""
    from teep_coap.protocol.errors import IdentityMismatch, InvalidMessage, TamFailure
    from teep_coap.protocol.events import SendReply, SessionEnded, TamEvent
    from teep_coap.transport.base import PeerInfo, Rejection, RequestRejected

    class Scripted:
        """An engine by its event API: each connect opens a session the timer later abandons."""

        store = None
        due = 100.0
        now = 50.0

        def __init__(self) -> None:
            self.opened: list[int] = []

        def clock(self) -> float:
            return self.now

        def next_timer(self) -> float:
            return self.due

        def handle_timer(self, now: float) -> tuple[TamEvent, ...]:
            self.due = now + 60
            return tuple(SessionEnded(sid, "abandoned") for sid in self.opened)

        def handle_connect(self, now: float, identity: str | None = None) -> tuple[TamEvent, ...]:
            self.opened.append(len(self.opened) + 1)
            return (SendReply(b"qr"),)

        def handle_message(
            self, data: bytes, now: float, identity: str | None = None
        ) -> tuple[TamEvent, ...]:
            if data == b"ok":
                return (SessionEnded(7, "success", 149.5),)
            raise {b"bad": InvalidMessage("x"), b"who": IdentityMismatch("y"), b"db": TamFailure("z")}[data]

    engine = Scripted()
    handler = TamHandler(engine)
    assert handler.threads == 4  # not an embedded store
    caplog.set_level(logging.INFO, logger="teep_coap.session")
    expected = {b"bad": Rejection.BAD_REQUEST, b"who": Rejection.FORBIDDEN, b"db": Rejection.SERVER_ERROR}
    try:
        for i, (data, rejection) in enumerate(expected.items()):
            peer = PeerInfo("coap", f"127.0.0.1:{1000 + i}")
            assert await handler(b"", peer) == b"qr"
            with pytest.raises(RequestRejected) as exc:
                await handler(data, peer)
            assert exc.value.rejection is rejection
        assert handler.sessions_failed == 3 and handler.sessions_done == 0
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 3 and "refused (x)" in lines[0] and "failed (z)" in lines[2]
        # the next call runs the due timer first: the three silent sessions end as abandoned
        engine.now = 150.0
        assert await handler(b"ok", PeerInfo("coaps", "127.0.0.1:9", identity="dev-9")) is None
        lines = [r.getMessage() for r in caplog.records][3:]
        assert lines == [
            "session 1: abandoned",
            "session 2: abandoned",
            "session 3: abandoned",
            "session 7 of dev-9 via coaps: success after 500.0 ms",
        ]
        assert handler.sessions_failed == 6 and handler.sessions_done == 1
        assert not [name for name in vars(handler) if "open" in name or "peer" in name]
    finally:
        handler.close()
