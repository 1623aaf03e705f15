"""Bad input at the CoAP server: the right answer or silence, a log line, and service goes on."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import aiocoap
import pytest
from coap_helpers import Creds, quick, without_echo

from teep_coap.transport.base import PeerInfo
from teep_coap.transport.coap import CoapClient, CoapServer
from teep_coap.transport.junklog import install_junk_log_limit

pytestmark = [pytest.mark.timeout(60), pytest.mark.both_event_loops]


async def echo(payload: bytes, peer: PeerInfo) -> bytes | None:
    return payload or b"first"


async def _raw(uri: str, **kw: object) -> aiocoap.Message:
    ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        msg = aiocoap.Message(code=aiocoap.POST, uri=uri, **kw)
        return await asyncio.wait_for(ctx.request(msg).response, 5)
    finally:
        await ctx.shutdown()


@pytest.mark.parametrize("profile_name", ["coap", "coaps-psk", "coap-oscore"])
async def test_garbage_datagrams_then_service(
    profile_name: str, creds: Creds, caplog: pytest.LogCaptureFixture
) -> None:
    profile = quick(profile_name)
    async with CoapServer(profile, echo, devices=creds.tam_side) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for n in (0, 1, 3, 4, 17, 200, 1400):
                s.sendto(os.urandom(n), ("127.0.0.1", server.port))
            s.sendto(b"\x16\xfe\xfd" + os.urandom(60), ("127.0.0.1", server.port))  # fake DTLS handshake
            s.sendto(
                b"\x40\x02\x00\x01\xff", ("127.0.0.1", server.port)
            )  # CON POST, payload marker, no payload
        await asyncio.sleep(0.2)
        client = CoapClient(profile, server.uri, creds.agent_side)
        try:
            assert await client.post(b"still here") == b"still here"
        finally:
            await client.close()


async def test_wrong_content_format_and_accept(caplog: pytest.LogCaptureFixture) -> None:
    profile = without_echo(quick("coap"))  # raw one-off requests: each would get 4.01 + Echo first
    caplog.set_level(logging.WARNING, logger="teep_coap.transport.coap.server")
    install_junk_log_limit().forget()  # other tests' 4.15 lines must not use up this one's quota
    async with CoapServer(profile, echo) as server:
        r1 = await _raw(server.uri, payload=b"\x82\x01", content_format=60)
        assert str(r1.code.dotted) == "4.15"
        r2 = await _raw(server.uri, payload=b"\x82\x01")  # no Content-Format at all
        assert str(r2.code.dotted) == "4.15"
        r3 = await _raw(server.uri, payload=b"", accept=50)
        assert str(r3.code.dotted) == "4.06"
        r4 = await _raw(server.uri.replace("/teep", "/other"), payload=b"")
        assert str(r4.code.dotted) == "4.04"
        r5 = await _raw(server.uri, payload=b"", content_format=65000)
        assert str(r5.code.dotted) == "2.04" and r5.payload == b"first"
    assert server.stats.rejected == {"4.15": 2, "4.06": 1, "4.04": 1}  # 4.04: answered before aiocoap
    assert sum("rejected 4.15" in r.getMessage() for r in caplog.records) == 2


async def test_size1_over_limit_is_refused_at_first_block() -> None:
    profile = without_echo(quick("coap", max_message_size=2048))  # the check behind Echo (test_echo.py)
    seen: list[bytes] = []

    async def rec(payload: bytes, peer: PeerInfo) -> bytes | None:
        seen.append(payload)
        return None

    async with CoapServer(profile, rec) as server:
        msg_opts = {"payload": os.urandom(512), "content_format": 65000}
        ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
        try:
            m = aiocoap.Message(code=aiocoap.POST, uri=server.uri, **msg_opts)
            m.opt.size1 = 100_000
            m.opt.block1 = aiocoap.optiontypes.BlockOption.BlockwiseTuple(0, True, 5)
            resp = await asyncio.wait_for(ctx.request(m, handle_blockwise=False).response, 5)
        finally:
            await ctx.shutdown()
    assert str(resp.code.dotted) == "4.13" and resp.opt.size1 == 2048
    assert seen == []


async def test_unknown_oscore_context_gets_401(creds: Creds, tmp_path: object) -> None:
    from pathlib import Path

    from teep_coap.transport.coap.credentials import load_agent_credentials, provision_device

    profile = quick("coap-oscore")
    other = Path(str(tmp_path)) / "stranger"
    provision_device(Path(str(tmp_path)) / "other-tam", other, "stranger", oscore_id=99)
    async with CoapServer(profile, echo, devices=creds.tam_side) as server:
        stranger = CoapClient(profile, server.uri, load_agent_credentials(other))
        try:
            from teep_coap.transport.base import PeerRejected

            with pytest.raises(PeerRejected) as exc:
                await stranger.post(b"")
            assert exc.value.status == "4.01"
        finally:
            await stranger.close()
        good = CoapClient(profile, server.uri, creds.agent_side)
        try:
            assert await good.post(b"") == b"first"
        finally:
            await good.close()


async def test_mutated_requests_never_stop_the_server(caplog: pytest.LogCaptureFixture) -> None:
    """500 seeded mutations of a valid block-wise POST (flipped bytes, cut, repeated options)."""
    import random

    profile = without_echo(quick("coap"))  # mutations must reach the checks behind Echo
    calls: list[int] = []

    async def counting(payload: bytes, peer: PeerInfo) -> bytes | None:
        calls.append(len(payload))
        return payload[:10] or b"first"

    rng = random.Random(5)
    good = aiocoap.Message(code=aiocoap.POST, uri="coap://127.0.0.1/teep", payload=os.urandom(40))
    good.mtype, good.mid, good.token = aiocoap.CON, 0x1234, b"\x01\x02"
    good.opt.content_format = 65000
    good.opt.block1 = aiocoap.optiontypes.BlockOption.BlockwiseTuple(0, True, 2)
    good.opt.size1 = 200
    base = good.encode()
    async with CoapServer(profile, counting) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(500):
                data = bytearray(base)
                for _ in range(rng.randint(1, 6)):
                    kind = rng.random()
                    if kind < 0.6:
                        data[rng.randrange(len(data))] = rng.randrange(256)
                    elif kind < 0.8:
                        del data[rng.randrange(len(data)) :]
                        if not data:
                            data = bytearray(b"\x40")
                    else:
                        at = rng.randrange(len(data))
                        data[at:at] = data[at : at + rng.randint(1, 8)]
                data[2:4] = i.to_bytes(2, "big")  # fresh message ids: no de-duplication shortcut
                s.sendto(bytes(data), ("127.0.0.1", server.port))
                if i % 50 == 0:
                    await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        client = CoapClient(profile, server.uri)
        try:
            assert await client.post(b"alive?") == b"alive?"
        finally:
            await client.close()
    assert not [r for r in caplog.records if r.name.startswith("teep_coap") and r.levelno >= logging.ERROR]
