"""EDHOC (RFC 9528) keying OSCORE: real handshakes through aiocoap and lakers on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import stat
import tomllib
from pathlib import Path

import aiocoap
import cbor2
import lakers
import pytest
from coap_helpers import Creds, quick, without_echo

from teep_coap.transport.base import PeerInfo, PeerRejected, TransportError
from teep_coap.transport.coap import CoapClient, CoapServer
from teep_coap.transport.coap.credentials import (
    AGENT_CREDENTIALS_FILE,
    TAM_CREDENTIALS_FILE,
    edhoc_credential,
    load_agent_credentials,
    load_tam_credentials,
    provision_device,
    write_edhoc_key,
)
from teep_coap.transport.coap.server import EDHOC_HANDSHAKES, EDHOC_SESSIONS

pytestmark = [pytest.mark.timeout(120), pytest.mark.both_event_loops]


class Echo:
    def __init__(self) -> None:
        self.peers: list[PeerInfo] = []

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None:
        self.peers.append(peer)
        return payload[::-1]


def test_only_public_credentials_cross(creds: Creds) -> None:
    tam_table = tomllib.loads((creds.tam_dir / TAM_CREDENTIALS_FILE).read_text())["device"][0]
    agent_table = tomllib.loads((creds.agent_dir / AGENT_CREDENTIALS_FILE).read_text())
    # Each side's credential is the other's peer credential, and holds a public key only.
    assert tam_table["edhoc_own_hex"] == agent_table["edhoc_peer_hex"]
    assert tam_table["edhoc_peer_hex"] == agent_table["edhoc_own_hex"]
    for hex_cred in (tam_table["edhoc_own_hex"], agent_table["edhoc_own_hex"]):
        cose_key = cbor2.loads(bytes.fromhex(hex_cred))[14][8][1]
        assert -4 not in cose_key and len(cose_key[-2]) == 32
    device_key, tam_key = creds.agent_dir / "edhoc.key", creds.tam_dir / "edhoc" / "tam.key"
    for key in (device_key, tam_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert device_key.read_bytes() != tam_key.read_bytes()
    assert creds.agent_side.edhoc_key == device_key.resolve()


async def test_more_handshakes_than_aiocoap_has_connection_ids(creds: Creds) -> None:
    """aiocoap keeps every responder session and has 48 C_R values: the server keeps the newest."""
    profile = quick("coap-edhoc")
    handler = Echo()
    async with CoapServer(profile, handler, devices=creds.tam_side) as server:
        for i in range(50):  # each client is a new EDHOC handshake, as each `agent run` is
            client = CoapClient(profile, server.uri, creds.agent_side)
            try:
                assert await client.post(b"n%d" % i) == (b"n%d" % i)[::-1]
            finally:
                await client.close()
        # trimmed to EDHOC_SESSIONS when the last handshake began; that one finished after
        assert server.edhoc_sessions == EDHOC_SESSIONS + 1
    assert {p.identity for p in handler.peers} == {"agent-1"} and all(p.authenticated for p in handler.peers)


async def _forged_message_1(uri: str, count: int) -> list[str]:
    """POST `count` EDHOC message_1s that anyone can make (fresh ephemeral keys, no credential) to
    the server of `uri`; the codes it answered."""
    edhoc_uri = uri.rsplit("/", 1)[0] + "/.well-known/edhoc"
    ctx = await aiocoap.Context.create_client_context()
    codes = []
    try:
        for _ in range(count):
            message_1 = bytes(lakers.EdhocInitiator().prepare_message_1(c_i=None))
            request = aiocoap.Message(code=aiocoap.POST, uri=edhoc_uri, payload=cbor2.dumps(True) + message_1)
            codes.append(str((await ctx.request(request).response).code))
    finally:
        await ctx.shutdown()
    return codes


async def test_unauthenticated_message_1s_never_push_out_a_session(creds: Creds) -> None:
    """aiocoap stores an EDHOC context per message_1, before anything is authenticated. 100 forged
    message_1s used to push every device's session out (the device's next request was refused with
    "EDHOC incomplete", read as an unknown credential): now they push out only each other."""
    profile = without_echo(quick("coap-edhoc"))  # the forged message_1s answer no Echo
    handler = Echo()
    async with CoapServer(profile, handler, devices=creds.tam_side) as server:
        device = CoapClient(profile, server.uri, creds.agent_side)
        try:
            assert await device.post(b"one") == b"eno"
            codes = await _forged_message_1(server.uri, 100)
            assert set(codes) == {"2.04 Changed"}  # each got its message_2: the flood was served
            assert server.edhoc_sessions == 1 + EDHOC_HANDSHAKES
            assert await device.post(b"two") == b"owt"
            assert device.session_restarts == 0
        finally:
            await device.close()
        newcomer = CoapClient(profile, server.uri, creds.agent_side)  # a new handshake still succeeds
        try:
            assert await newcomer.post(b"three") == b"eerht"
        finally:
            await newcomer.close()
    assert len(handler.peers) == 3 and all(p.authenticated for p in handler.peers)


async def test_a_session_dropped_for_newer_ones_shakes_hands_again(creds: Creds) -> None:
    """A device whose session the TAM dropped for newer ones may find its connection id given to a
    newer handshake: the TAM answers an unprotected 4.00 ("EDHOC incomplete") without reading the
    message, and the device runs EDHOC again and resends once, as after a TAM restart (4.01)."""
    profile = without_echo(quick("coap-edhoc"))  # the forged message_1 answers no Echo
    handler = Echo()
    async with CoapServer(profile, handler, devices=creds.tam_side) as server:
        first = CoapClient(profile, server.uri, creds.agent_side)
        try:
            assert await first.post(b"one") == b"eno"
            for i in range(EDHOC_SESSIONS + 1):  # newer sessions: the first one is dropped
                other = CoapClient(profile, server.uri, creds.agent_side)
                try:
                    assert await other.post(b"x%d" % i) == (b"x%d" % i)[::-1]
                finally:
                    await other.close()
            # the next handshake gets the lowest free connection id: the first device's old one
            assert await _forged_message_1(server.uri, 1) == ["2.04 Changed"]
            assert await first.post(b"two") == b"owt"
            assert first.session_restarts == 1
        finally:
            await first.close()


async def test_device_the_tam_does_not_know(creds: Creds, tmp_path: Path) -> None:
    """Right TAM credential, unknown device key: refused before any TEEP byte reaches the handler."""
    stranger = write_edhoc_key(tmp_path / "stranger.key")
    device = dataclasses.replace(
        creds.agent_side,
        edhoc_key=tmp_path / "stranger.key",
        edhoc_own=edhoc_credential(stranger, b"\x63", "stranger"),
    )
    profile = quick("coap-edhoc")
    handler = Echo()
    async with CoapServer(profile, handler, devices=creds.tam_side) as server:
        client = CoapClient(profile, server.uri, device)
        try:
            with pytest.raises(PeerRejected, match="does not know this device's EDHOC credential"):
                await client.post(b"hello")
        finally:
            await client.close()
    assert handler.peers == []


async def test_device_provisioned_for_another_tam(creds: Creds, tmp_path: Path) -> None:
    provision_device(tmp_path / "other-tam", tmp_path / "other-agent", "agent-1")
    device = load_agent_credentials(tmp_path / "other-agent")
    profile = quick("coap-edhoc")
    handler = Echo()
    async with CoapServer(profile, handler, devices=load_tam_credentials(creds.tam_dir)) as server:
        client = CoapClient(profile, server.uri, device)
        try:
            with pytest.raises(TransportError, match=r"EDHOC handshake .* failed \(MacVerificationFailed\)"):
                await client.post(b"hello")
        finally:
            await client.close()
    assert handler.peers == []


async def test_server_without_edhoc_devices_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="tam credentials --name NAME --agent-state AGENTDIR"):
        async with CoapServer(quick("coap-edhoc"), Echo(), devices=[]):
            pass


async def test_one_handshake_per_client(creds: Creds) -> None:
    """aiocoap 0.4.17 ran EDHOC again for every request (aiocoap_compat.apply_edhoc_client_fix); one
    client now keeps one OSCORE context, so Block1 transfers hold together too."""
    profile = quick("coap-edhoc")
    async with CoapServer(profile, Echo(), devices=creds.tam_side) as server:
        client = CoapClient(profile, server.uri, creds.agent_side)
        try:
            for i in range(3):
                assert await client.post(b"m%d" % i) == (b"m%d" % i)[::-1]
            big = bytes(range(256)) * 12  # Block1 and Block2
            assert await client.post(big) == big[::-1]
        finally:
            await client.close()
        assert server.edhoc_sessions == 1


async def test_client_shakes_hands_again_when_the_tam_restarted(creds: Creds) -> None:
    """A restarted TAM has no EDHOC session: it answers an unprotected 4.01 without reading the
    message, and the client runs EDHOC again and sends the message once more."""
    profile = quick("coap-edhoc")
    handler = Echo()
    server = CoapServer(profile, handler, devices=creds.tam_side)
    await server.start()
    port = server.port
    client = CoapClient(profile, server.uri, creds.agent_side)
    try:
        assert await client.post(b"one") == b"eno"
        await server.close()
        server = CoapServer(profile, handler, bind=("127.0.0.1", port), devices=creds.tam_side)
        await server.start()
        assert await client.post(b"two") == b"owt"
        assert client.session_restarts == 1 and server.edhoc_sessions == 1
    finally:
        await client.close()
        await server.close()
    assert [p.identity for p in handler.peers] == ["agent-1", "agent-1"]


async def test_more_devices_shaking_hands_at_once_than_places_all_get_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TAM keeps EDHOC_HANDSHAKES handshakes waiting for message_3; a burst of more devices pushed
    some out in mid-handshake, and their message_3 was refused (or, before it was bound to its
    message_1's address, failed another device's MAC): `bench sessions --profile coap-edhoc
    --concurrency 16` lost 35-51 of 300 sessions. The device's client now runs EDHOC again and resends
    (`EDHOC_RETRIES`, with a growing, jittered wait) when message_3 is answered without protection."""
    from teep_coap.transport.coap import server as coap_server

    monkeypatch.setattr(coap_server, "EDHOC_HANDSHAKES", 2)
    devices = [provision_device(tmp_path / "tam", tmp_path / f"agent-{i}", f"agent-{i}") for i in range(10)]
    profile = quick("coap-edhoc")
    async with CoapServer(profile, Echo(), devices=devices) as server:
        clients = [
            CoapClient(profile, server.uri, load_agent_credentials(tmp_path / f"agent-{i}"))
            for i in range(10)
        ]
        try:
            answers = await asyncio.gather(*(c.post(b"n%d" % i) for i, c in enumerate(clients)))
            assert answers == [(b"n%d" % i)[::-1] for i in range(10)]
            assert sum(c.session_restarts for c in clients) > 0  # some were pushed out and came back
        finally:
            for client in clients:
                await client.close()
