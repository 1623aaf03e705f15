"""DTLS flights in as few datagrams as RFC 6347 §4.1.1 allows: real client, server and relay on loopback."""

from __future__ import annotations

import pytest
from coap_helpers import Creds, quick

from teep_coap.transport.base import PeerInfo
from teep_coap.transport.coap import CoapClient, CoapServer
from teep_coap.transport.coap.aiocoap_compat.dtls import DATAGRAM_LIMIT, join_records
from teep_coap.transport.coap.dtls_watch import records
from teep_coap.transport.relay import UdpRelay

pytestmark = [pytest.mark.timeout(60), pytest.mark.both_event_loops]

HANDSHAKE, CCS = 22, 20


async def hello(payload: bytes, peer: PeerInfo) -> bytes | None:
    return b"hello"


def kinds(datagram: bytes) -> list[int]:
    return [kind for kind, _, _ in records(datagram)]


async def test_each_flight_is_one_datagram_both_ways(creds: Creds) -> None:
    profile = quick("coaps-psk")
    async with (
        CoapServer(profile, hello, devices=creds.tam_side) as server,
        UdpRelay(("127.0.0.1", server.port), record=True) as relay,
    ):
        client = CoapClient(profile, f"coaps://127.0.0.1:{relay.port}/teep", creds.agent_side)
        try:
            assert await client.post(b"") == b"hello"
        finally:
            await client.close()
    up = [d.payload for d in relay.datagrams if d.direction == "up"]
    down = [d.payload for d in relay.datagrams if d.direction == "down"]
    # ClientHello; HelloVerifyRequest; ClientHello with the cookie
    assert kinds(up[0]) == [HANDSHAKE] and kinds(down[0]) == [HANDSHAKE] and kinds(up[1]) == [HANDSHAKE]
    assert kinds(down[1]) == [HANDSHAKE, HANDSHAKE]  # ServerHello, ServerHelloDone: was two datagrams
    assert kinds(up[2]) == [HANDSHAKE, CCS, HANDSHAKE]  # ClientKeyExchange, CCS, Finished: was three
    assert kinds(down[2]) == [CCS, HANDSHAKE]  # CCS, Finished: was two
    assert len(records(up[3])) == 1 and len(records(down[3])) == 1  # the request, its answer
    assert relay.stats.down.datagrams <= 5  # + the reply to the client's close_notify


def test_records_are_joined_in_order_up_to_the_limit() -> None:
    small = [b"a" * 100, b"b" * 100, b"c" * 100]
    assert join_records(small) == [b"".join(small)]
    big = [b"x" * 1000, b"y" * 300, b"z" * 100]
    assert join_records(big) == [b"x" * 1000, b"y" * 300 + b"z" * 100]
    huge = b"w" * (DATAGRAM_LIMIT + 10)
    assert join_records([huge, b"v"]) == [huge, b"v"]  # a record is never cut
    assert join_records([]) == []
