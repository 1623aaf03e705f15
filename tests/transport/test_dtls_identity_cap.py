"""One PSK identity holds a bounded number of established DTLS sessions: a key (a device's, stolen or
buggy) opening session after session from new ports pushes out its own oldest, never the sessions
of other devices."""

from __future__ import annotations

from pathlib import Path

import pytest
from coap_helpers import quick

from teep_coap.bench.lean_dtls import LeanDtlsClient
from teep_coap.transport.coap import CoapClient, CoapServer
from teep_coap.transport.coap.aiocoap_compat import dtls as dtls_compat
from teep_coap.transport.coap.credentials import load_agent_credentials, provision_device

pytestmark = [pytest.mark.timeout(60), pytest.mark.both_event_loops]


async def test_one_key_opening_many_sessions_pushes_out_only_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dtls_compat, "MAX_DTLS_SESSIONS", 12)
    monkeypatch.setattr(dtls_compat, "MAX_DTLS_SESSIONS_PER_IDENTITY", 4)
    devices = [provision_device(tmp_path / "tam", tmp_path / name, name) for name in ("dev", "greedy")]
    profile = quick("coaps-psk")

    async def handler(payload: bytes, peer: object) -> bytes | None:
        return payload[::-1]

    async with CoapServer(profile, handler, devices=devices) as server:
        device = CoapClient(profile, server.uri, load_agent_credentials(tmp_path / "dev"))
        greedy = load_agent_credentials(tmp_path / "greedy")
        held: list[LeanDtlsClient] = []
        try:
            assert await device.post(b"one") == b"eno"
            for n in range(20):  # each from its own port, each kept open
                client = LeanDtlsClient(profile, server.uri, greedy)
                held.append(client)
                assert await client.post(str(n).encode()) == str(n).encode()[::-1]
            # the greedy key keeps its newest four; the table (12) never filled, so nothing else went
            assert server.dtls_sessions == 1 + 4, server.dtls_sessions
            # before: 20 sessions of one key pushed the device's out, and its next request met
            # silence until it started a new handshake
            assert await device.post(b"two") == b"owt"
            assert device.session_restarts == 0
            # the newest of the greedy key's sessions still serve
            assert await held[-1].post(b"last") == b"tsal"
        finally:
            await device.close()
            for client in held:
                await client.close()
