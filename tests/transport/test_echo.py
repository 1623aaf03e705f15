"""Issue 11 item 2 over a real aiocoap server on loopback: RFC 9175 Echo before an address is proven,
and no TAM database rows for empty POSTs (counted in the real SQLite file).

The client side is a raw UDP socket sending hand-built CoAP datagrams, so the sizes asserted are the
bytes on the wire."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from pathlib import Path

import pytest

from teep_coap.profiles import load_profile
from teep_coap.profiles.session import TamHandler
from teep_coap.profiles.stack import coap_options
from teep_coap.protocol.tam import TamEngine
from teep_coap.store.tamdir import init_tam_dir, load_tam_dir
from teep_coap.transport.base import PeerRejected
from teep_coap.transport.coap.client import CoapClient
from teep_coap.transport.coap.echo import ECHO_SIZE, MIN_PADDED_CONNECT, PADDING_OPTION, EchoGuard
from teep_coap.transport.coap.server import CoapServer

ECHO_OPTION = 252
URI_PATH = 11


def _empty_post(mid: int, echo: bytes | None = None) -> bytes:
    """CON POST, no token, Uri-Path "teep" (option 11), optionally Echo (252): 9 bytes without Echo."""
    out = bytes((0x40, 0x02)) + mid.to_bytes(2, "big") + bytes((URI_PATH << 4 | 4,)) + b"teep"
    if echo is not None:  # delta 252 - 11 = 241 = 13 + 228 (one extended byte)
        out += bytes((13 << 4 | len(echo), ECHO_OPTION - URI_PATH - 13)) + echo
    return out


def _parse(datagram: bytes) -> tuple[int, dict[int, bytes], bytes]:
    """(code byte, options by number (last value), payload) of a CoAP message without token."""
    code, i, number, options = datagram[1], 4 + (datagram[0] & 0x0F), 0, {}
    while i < len(datagram) and datagram[i] != 0xFF:
        delta, length = datagram[i] >> 4, datagram[i] & 0x0F
        i += 1
        if delta == 13:
            delta, i = datagram[i] + 13, i + 1
        elif delta == 14:
            delta, i = int.from_bytes(datagram[i : i + 2], "big") + 269, i + 2
        if length == 13:
            length, i = datagram[i] + 13, i + 1
        elif length == 14:
            length, i = int.from_bytes(datagram[i : i + 2], "big") + 269, i + 2
        number += delta
        options[number] = datagram[i : i + length]
        i += length
    payload = datagram[i + 1 :] if i < len(datagram) else b""
    return code, options, payload


def _rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        names = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]
        return sum(conn.execute(f"select count(*) from {n}").fetchone()[0] for n in names)


class Peer:
    """A UDP socket on loopback that exchanges single datagrams with the server."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)

    async def ask(self, port: int, datagram: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(self.sock, datagram, ("127.0.0.1", port))
        return await asyncio.wait_for(loop.sock_recv(self.sock, 4096), 5)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tam(tmp_path: Path) -> tuple[TamEngine, Path]:
    init_tam_dir(tmp_path / "tam", algs=("esp256",))
    config, store = load_tam_dir(tmp_path / "tam")
    assert config.stateless_secret is not None
    return TamEngine(config, store), tmp_path / "tam" / "tam.sqlite"


@pytest.mark.parametrize("profile", ["coap", "coap-no-echo"])
async def test_empty_posts_are_small_answers_and_no_rows(profile: str, tam: tuple[TamEngine, Path]) -> None:
    engine, db = tam
    engine.connect()  # first connect runs the housekeeping sweep; count rows after it
    before = _rows(db)
    server = CoapServer(coap_options(load_profile(profile)), TamHandler(engine), bind=("127.0.0.1", 0))
    await server.start()
    peer = Peer()
    try:
        sizes = []
        for mid in range(20):
            request = _empty_post(mid)
            assert len(request) == 9
            answer = await peer.ask(server.port, request)
            sizes.append(len(answer))
            code, options, payload = _parse(answer)
            if profile == "coap":
                assert code == 0x81 and len(options[ECHO_OPTION]) == ECHO_SIZE and payload == b""  # 4.01
            else:
                assert code == 0x44 and len(payload) > 150  # 2.04 with the QueryRequest
    finally:
        peer.close()
        await server.close()
    assert _rows(db) == before  # nothing stored for unauthenticated peers either way
    if profile == "coap":
        assert max(sizes) <= 3 * 9  # RFC 9175 §2.4: at most 3x before the address is proven
        assert server.resource.echo is not None and server.resource.echo.challenges == 20
    else:
        assert min(sizes) > 3 * 9  # the cost of turning Echo off: about 20x toward a spoofed source


async def test_echo_proves_the_address_and_binds_to_it(tam: tuple[TamEngine, Path]) -> None:
    engine, _ = tam
    server = CoapServer(coap_options(load_profile("coap")), TamHandler(engine), bind=("127.0.0.1", 0))
    await server.start()
    a, b = Peer(), Peer()
    try:
        _, options, _ = _parse(await a.ask(server.port, _empty_post(1)))
        echo = options[ECHO_OPTION]
        code, _, _ = _parse(await b.ask(server.port, _empty_post(2, echo)))  # another port: refused
        assert code == 0x81
        code, _, payload = _parse(await a.ask(server.port, _empty_post(3, echo)))
        assert code == 0x44 and payload[:2] in (b"\xd2\x84", b"\xd8\x62")  # the signed QueryRequest
        code, _, _ = _parse(await a.ask(server.port, _empty_post(4)))  # proven: no Echo needed now
        assert code == 0x44
    finally:
        a.close()
        b.close()
        await server.close()


def test_echo_values_expire_and_are_not_forged() -> None:
    now = [1000.0]
    guard = EchoGuard(secret=b"s" * 32, clock=lambda: now[0], lifetime=60)
    echo = guard.echo_for("127.0.0.1:5000")
    assert guard.valid(echo, "127.0.0.1:5000") and not guard.valid(echo, "127.0.0.1:5001")
    assert not guard.valid(echo[:-1] + bytes([echo[-1] ^ 1]), "127.0.0.1:5000")
    now[0] += 61
    assert not guard.valid(echo, "127.0.0.1:5000")
    assert guard.check("127.0.0.1:5000", echo) is not None  # expired: a new challenge


def test_proven_addresses_are_bounded() -> None:
    guard = EchoGuard(secret=b"s" * 32, proven_max=2)
    for port in (1, 2, 3):
        address = f"10.0.0.1:{port}"
        assert guard.check(address, guard.echo_for(address)) is None
    assert guard.check("10.0.0.1:1", None) is not None  # evicted: proves itself again
    assert guard.check("10.0.0.1:3", None) is None


async def test_oversized_request_from_an_unproven_address_gets_only_the_echo(
    tam: tuple[TamEngine, Path],
) -> None:
    """Even an error answer (4.13 + diagnostic) would amplify: the Echo check comes first."""
    engine, _ = tam
    server = CoapServer(coap_options(load_profile("coap")), TamHandler(engine), bind=("127.0.0.1", 0))
    await server.start()
    peer = Peer()
    try:
        # CON POST, Uri-Path "teep", Size1 (60) = 0x0FFFFFFF: 15 bytes, far over max_message_size
        request = _empty_post(7) + bytes((0xD4, 60 - URI_PATH - 13)) + (0x0FFFFFFF).to_bytes(4, "big")
        answer = await peer.ask(server.port, request)
        code, options, payload = _parse(answer)
        assert code == 0x81 and ECHO_OPTION in options and payload == b""
        assert len(answer) <= 3 * len(request)
        # the same with the Echo value (option 252 after Size1: delta 192 = 13 + 179): now the 4.13
        proven = request + bytes((0xD0 | ECHO_SIZE, ECHO_OPTION - 60 - 13)) + options[ECHO_OPTION]
        code, options, _ = _parse(await peer.ask(server.port, proven[:2] + b"\x00\x08" + proven[4:]))
        assert code == 0x8D and options[60] == (1_048_576).to_bytes(3, "big")  # 4.13, Size1 = limit
    finally:
        peer.close()
        await server.close()


def _padded_connect(mid: int, size: int) -> bytes:
    """`_empty_post` padded with the elective option 65020 to exactly `size` bytes (13..268 of padding)."""
    bare = _empty_post(mid)
    room = size - len(bare) - 4  # option header: 1 byte, 2 of extended delta, 1 of extended length
    assert 13 <= room <= 268
    delta = PADDING_OPTION - URI_PATH - 269
    return bare + bytes((14 << 4 | 13,)) + delta.to_bytes(2, "big") + bytes((room - 13,)) + bytes(room)


async def test_a_padded_connect_is_answered_within_three_times_with_an_echo(
    tam: tuple[TamEngine, Path],
) -> None:
    """No 4.01 round trip for a connect padded enough; its answer carries the Echo that proves the
    address with the next request. Smaller connects get the 4.01 + Echo as before."""
    engine, db = tam
    engine.connect()
    before = _rows(db)
    server = CoapServer(coap_options(load_profile("coap")), TamHandler(engine), bind=("127.0.0.1", 0))
    await server.start()
    peer = Peer()
    guard = server.resource.echo
    assert guard is not None
    try:
        request = _padded_connect(1, 96)
        assert len(request) == 96
        answer = await peer.ask(server.port, request)
        code, options, payload = _parse(answer)
        assert code == 0x44 and payload[:2] in (b"\xd2\x84", b"\xd8\x62")  # 2.04 + the QueryRequest
        assert len(answer) <= 3 * len(request) and len(options[ECHO_OPTION]) == ECHO_SIZE
        assert guard.padded_served == 1 and guard.challenges == 0 and guard.proven() == 0
        code, _, _ = _parse(await peer.ask(server.port, _empty_post(2)))  # not proven by being served
        assert code == 0x81
        code, _, _ = _parse(await peer.ask(server.port, _empty_post(3, options[ECHO_OPTION])))
        assert code == 0x44 and guard.proven() == 1  # the Echo of the served answer proves it

        other = Peer()  # 64 bytes may draw 192: the QueryRequest does not fit, so 4.01 + Echo
        try:
            request = _padded_connect(4, MIN_PADDED_CONNECT)
            answer = await other.ask(server.port, request)
            code, options, payload = _parse(answer)
            assert code == 0x81 and payload == b"" and len(answer) <= 3 * len(request)
            served = server.stats.requests
            request = _padded_connect(5, MIN_PADDED_CONNECT - 1)  # below: refused before the resource
            code, _, _ = _parse(await other.ask(server.port, request))
            assert code == 0x81 and server.stats.requests == served
        finally:
            other.close()
    finally:
        peer.close()
        await server.close()
    assert _rows(db) == before  # stateless connect tokens: served or not, nothing stored


async def test_our_client_pads_its_connect_and_proves_its_address_with_the_answers_echo(
    tam: tuple[TamEngine, Path],
) -> None:
    engine, _ = tam
    profile = coap_options(load_profile("coap"))
    assert profile.transport.pad_connect_to == 96
    server = CoapServer(profile, TamHandler(engine), bind=("127.0.0.1", 0))
    await server.start()
    guard = server.resource.echo
    assert guard is not None
    try:
        async with CoapClient(profile, f"coap://127.0.0.1:{server.port}/teep") as client:
            query_request = await client.post(b"")
            assert query_request is not None and guard.padded_served == 1 and guard.challenges == 0
            with pytest.raises(PeerRejected):  # junk, but from an address the Echo proved: 4.00
                await client.post(b"\xa0")
            assert guard.proven() == 1 and guard.challenges == 0
    finally:
        await server.close()
