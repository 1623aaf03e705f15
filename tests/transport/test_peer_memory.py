"""Per-peer server state stays bounded when many distinct peers come and go (issue 14: TAM memory
bounded by the request rate, never by the device count).

A DTLS session that ended is a peer object no datagram will name again; the duplicate cache used to
keep it (and its DTLS context and last responses) for the whole exchange lifetime (247 s)."""

from __future__ import annotations

import asyncio
import gc

import pytest
from coap_helpers import Creds, quick, without_echo

from teep_coap.transport.base import PeerInfo
from teep_coap.transport.coap import CoapClient, CoapServer
from teep_coap.transport.coap.credentials import load_tam_credentials
from teep_coap.transport.coap.hardening import DuplicateCache

pytestmark = pytest.mark.timeout(120)

PEERS = 30  # distinct client ports, one after the other


async def _answer(payload: bytes, peer: PeerInfo) -> bytes:
    return b"q" * 1500 if payload == b"" else b"ok"  # 1500 bytes: a Block2 response, as the Update


def test_forget_peer_drops_only_that_peers_entries() -> None:
    cache = DuplicateCache(100)
    for mid in range(3):
        cache.remember(("a", mid), 0.0, 10.0)
        cache.remember(("b", mid), 0.0, 10.0)
    cache[("a", 1)] = "stored response"
    assert cache.forget_peer("a") == 3
    assert cache.forget_peer("a") == 0
    assert sorted(cache) == [("b", 0), ("b", 1), ("b", 2)]
    assert cache.peers() == 1


def test_the_duplicate_cache_expires_and_caps_in_insertion_order() -> None:
    cache = DuplicateCache(3)
    for mid in range(5):
        cache.remember(("a", mid), float(mid), 100.0)
    assert sorted(k[1] for k in cache) == [2, 3, 4]  # capped: the oldest went first
    cache.remember(("b", 0), 103.5, 100.0)  # mids 0..3 were born at 0..3: 2 and 3 are past 100 s
    assert sorted(cache) == [("a", 4), ("b", 0)]
    assert cache.pop(("a", 4), "gone") is None and cache.peers() == 1


def _dtls_addresses_alive() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "_Address" and hasattr(o, "teep_watch"))


async def test_ended_dtls_sessions_leave_nothing_behind(creds: Creds) -> None:
    """30 DTLS clients, each a new port, a block-wise response and a second request, then close:
    no session, no duplicate-cache entry and no session object of theirs stays on the server."""
    profile = quick("coaps-psk")
    async with CoapServer(profile, _answer, devices=creds.tam_side) as server:
        before = _dtls_addresses_alive()
        for _ in range(PEERS):
            client = CoapClient(profile, server.uri, creds.agent_side)
            try:
                assert len(await client.post(b"")) == 1500
                assert await client.post(b"x") == b"ok"
            finally:
                await client.close()
        for _ in range(100):
            if server.dtls_sessions == 0 and server.duplicate_entries == (0, 0):
                break
            await asyncio.sleep(0.02)
        assert server.dtls_sessions == 0
        assert server.duplicate_entries == (0, 0)
        assert _dtls_addresses_alive() - before == 0


async def test_plain_coap_peers_fill_the_duplicate_cache_only_up_to_its_bound(creds: Creds) -> None:
    """Plain CoAP has no session end: each peer's entries stay for the exchange lifetime, within the
    cache's count bound (`MAX_RECENT_MESSAGES`, lowered here to 16)."""
    profile = without_echo(quick("coap"))
    async with CoapServer(profile, _answer) as server:
        caches = server.duplicate_caches()
        assert caches
        for cache in caches:
            cache.max_items = 16
        for _ in range(PEERS):
            client = CoapClient(profile, server.uri)
            try:
                assert await client.post(b"x") == b"ok"
            finally:
                await client.close()
        entries, peers = server.duplicate_entries
        assert 0 < entries <= 16 * len(caches)
        assert peers <= entries


async def test_a_reload_of_unchanged_dtls_credentials_changes_nothing(creds: Creds) -> None:
    """The server keeps only name, identity and PSK of a DTLS device (not its OSCORE folder and EDHOC
    fields): a reload of the same credentials.toml must still count as no change, and the device is
    still served."""
    profile = quick("coaps-psk")
    assert creds.tam_side[0].oscore_dir is not None  # the file's entry carries more than the PSK
    async with CoapServer(profile, _answer, devices=creds.tam_side) as server:
        assert server.update_devices(load_tam_credentials(creds.tam_dir)) == (0, 0)
        client = CoapClient(profile, server.uri, creds.agent_side)
        try:
            assert await client.post(b"x") == b"ok"
        finally:
            await client.close()
