"""Malformed DTLS before authentication: a coaps TAM survives it and keeps serving its devices.

The TAM's DTLS records are parsed by tinydtls, C code behind DTLSSocket, where a configured key once
overflowed a buffer (test_psk_length.py). This test sends what a peer without any key can send, from
a fresh source port each time, at three depths of the handshake:

- the first ClientHello, mutated;
- past the cookie exchange to the server's hello flight, then a ClientKeyExchange naming a known
  device, an unknown identity of up to 80 bytes or none, mostly mutated;
- past a well-formed ClientKeyExchange naming a real device, a ChangeCipherSpec and epoch-1 records
  of 0–40 bytes (shorter than an AES-CCM nonce and tag, or not), half of them mutated.

Mutations: bytes replaced, a 16-bit field set to an edge value, truncation, bytes appended, the
datagram repeated, edge values in the handshake header. The records are built by hand here: no
library writes malformed DTLS on purpose. The TAM must be alive after every batch, the deeper
attempts must mostly reach the server's hello flight (or the generator tests nothing), and real
devices must complete their sessions afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import random
import socket
import struct
from pathlib import Path

import pytest
from coap_helpers import quick

from teep_coap.bench.fleet import drive_fleet, make_fleet_world
from teep_coap.bench.sessions import peak_rss_mib, rss_mib, tam_process
from teep_coap.transport.coap import CoapClient, CoapServer
from teep_coap.transport.coap.aiocoap_compat import dtls as dtls_compat
from teep_coap.transport.coap.credentials import load_agent_credentials, provision_device

pytestmark = [pytest.mark.timeout(300), pytest.mark.both_event_loops]

PEERS = 30000
SEED = 20261206
HANDSHAKE, CHANGE_CIPHER_SPEC = 22, 20
CLIENT_HELLO, HELLO_VERIFY_REQUEST, SERVER_HELLO, CLIENT_KEY_EXCHANGE = 1, 3, 2, 16
# TLS_PSK_WITH_AES_128_CCM_8; extensions extended_master_secret and an empty renegotiation_info,
# both of which tinydtls insists on
SUITES = b"\x00\x02\xc0\xa8"
EXTENSIONS = b"\x00\x09" + b"\x00\x17\x00\x00" + b"\xff\x01\x00\x01\x00"


def record(content_type: int, body: bytes, *, epoch: int = 0, seq: int = 0) -> bytes:
    header = bytes([content_type]) + b"\xfe\xfd" + struct.pack(">H", epoch) + seq.to_bytes(6, "big")
    return header + struct.pack(">H", len(body)) + body


def handshake(msg_type: int, body: bytes, message_seq: int) -> bytes:
    length = len(body).to_bytes(3, "big")
    return bytes([msg_type]) + length + struct.pack(">H", message_seq) + b"\0\0\0" + length + body


def client_hello(client_random: bytes, cookie: bytes = b"") -> bytes:
    return (
        b"\xfe\xfd"
        + client_random
        + b"\x00"
        + bytes([len(cookie)])
        + cookie
        + SUITES
        + b"\x01\x00"
        + EXTENSIONS
    )


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    how = rng.randrange(6)
    if how == 0:
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.getrandbits(8)
    elif how == 1:
        at = rng.randrange(len(out) - 2)
        value = rng.choice([0, 1, 0xFF, 0x100, 0x7FFF, 0xFFFF, len(out) - 1, len(out), len(out) + 1])
        out[at : at + 2] = (value & 0xFFFF).to_bytes(2, "big")
    elif how == 2:
        del out[rng.randrange(len(out)) :]
    elif how == 3:
        out += rng.randbytes(rng.randint(1, 200))
    elif how == 4:
        out *= rng.randint(2, 4)
    else:
        out[rng.randrange(13, len(out)) if len(out) > 14 else 0] = rng.choice([0, 0x7F, 0x80, 0xFF])
    return bytes(out)


def first_reply(sock: socket.socket, msg_type: int) -> bytes | None:
    """The server's next datagram if it starts with a handshake message of `msg_type`."""
    try:
        data = sock.recv(4096)
    except OSError:  # no answer within the socket's timeout
        return None
    return data if len(data) > 25 and data[0] == HANDSHAKE and data[13] == msg_type else None


def one_peer(port: int, rng: random.Random, identity: bytes, depth: int) -> bool:
    """One fake peer's junk at `depth` (0-2); True when it got as far as the server's hello flight."""
    client_random = rng.randbytes(32)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.connect(("127.0.0.1", port))
        hello = record(HANDSHAKE, handshake(CLIENT_HELLO, client_hello(client_random), 0))
        if depth == 0:
            sock.send(mutate(hello, rng))
            return False
        sock.send(hello)
        verify = first_reply(sock, HELLO_VERIFY_REQUEST)
        if verify is None:
            return False
        cookie = verify[28 : 28 + verify[27]]
        sock.send(record(HANDSHAKE, handshake(CLIENT_HELLO, client_hello(client_random, cookie), 1), seq=1))
        if first_reply(sock, SERVER_HELLO) is None:
            return False
        if depth == 1:
            name = rng.choice([identity, rng.randbytes(rng.randint(1, 80)), b""])
            exchange = record(
                HANDSHAKE, handshake(CLIENT_KEY_EXCHANGE, struct.pack(">H", len(name)) + name, 2), seq=2
            )
            sock.send(mutate(exchange, rng) if rng.random() < 0.8 else exchange)
        else:
            exchange = handshake(CLIENT_KEY_EXCHANGE, struct.pack(">H", len(identity)) + identity, 2)
            sock.send(record(HANDSHAKE, exchange, seq=2))
            tail = record(CHANGE_CIPHER_SPEC, b"\x01", seq=3) + record(
                HANDSHAKE, rng.randbytes(rng.choice([0, 1, 7, 8, 13, 16, 23, 24, 40])), epoch=1
            )
            sock.send(mutate(tail, rng) if rng.random() < 0.5 else tail)
        return True


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def test_a_coaps_tam_survives_malformed_dtls_and_keeps_serving(tmp_path: Path) -> None:
    world = make_fleet_world(tmp_path / "tam", tmp_path / "cred", 8, 256, "coaps-psk")
    device = world.credentials(0)
    assert device is not None
    rng = random.Random(SEED)
    with tam_process("coaps-psk", world.tam_dir, devices=8) as (uri, pid):
        port = int(uri.rsplit(":", 1)[1].split("/", 1)[0])
        deep = reached = 0
        rss_before = rss_mib(pid)
        for n in range(PEERS):
            depth = rng.randrange(3)
            deep += depth > 0
            reached += one_peer(port, rng, device.psk_identity.encode(), depth)
            if n % 250 == 249:
                assert _alive(pid), f"the TAM died within peers {n - 249}..{n} (seed {SEED})"
        assert _alive(pid)
        assert reached > 0.8 * deep, (reached, deep)
        grew = (peak_rss_mib(pid) or 0.0) - (
            rss_before or 0.0
        )  # the deeper junk got past the cookie exchange
        result = asyncio.run(asyncio.wait_for(drive_fleet("coaps-psk", uri, world, 8, 4), 120))
    assert len(result.latencies) == 8 and not result.failures, result.failures[:3]
    # ended sessions waited for the cyclic collector: 30,000 peers grew it by ~75 MiB then, ~27 now
    assert grew < 45, f"the TAM's resident memory grew by {grew:.0f} MiB"


def _dtls_contexts() -> int:
    """DTLSSocket contexts alive in this process (one per server-side peer, as aiocoap makes them)."""
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "DTLS")


async def test_an_ended_handshake_frees_its_dtls_context_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the cyclic collector off: each half-done handshake the server dropped (the least
    recently used beyond its cap, here 50) used to leave its tinydtls context behind, a cycle
    through its callbacks; now only the sessions the server still holds have one."""
    monkeypatch.setattr(dtls_compat, "MAX_DTLS_SESSIONS", 50)
    device = provision_device(tmp_path / "tam", tmp_path / "dev", "dev")

    async def handler(payload: bytes, peer: object) -> bytes | None:
        return b"hello"

    rng = random.Random(SEED)
    gc.collect()
    gc.disable()
    try:
        async with CoapServer(quick("coaps-psk"), handler, devices=[device]) as server:
            before = _dtls_contexts()
            reached = 0
            for _ in range(300):
                reached += await asyncio.to_thread(
                    one_peer, server.port, rng, device.psk_identity.encode(), 1
                )
            await asyncio.sleep(0.2)  # the cancelled retransmission tasks finish
            left = _dtls_contexts() - before
            assert reached > 250, reached
            assert server.dtls_sessions <= 50
            assert left <= server.dtls_sessions + 1, (left, server.dtls_sessions)
    finally:
        gc.enable()


async def test_datagrams_from_new_addresses_never_push_out_an_established_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any datagram from an address the server has no session for makes one (aiocoap gives each
    peer its own tinydtls context before the cookie exchange), and beyond the cap the least
    recently used went: a ClientHello per fresh port, no cookie and no key, pushed out every
    device's session (here 200 against a cap of 20; 4,096 for the real cap). Handshakes not
    finished now push out only each other; an established session stays."""
    monkeypatch.setattr(dtls_compat, "MAX_DTLS_SESSIONS", 20)
    monkeypatch.setattr(dtls_compat, "MAX_DTLS_HANDSHAKES", 8)
    device = provision_device(tmp_path / "tam", tmp_path / "dev", "dev")
    profile = quick("coaps-psk")

    async def handler(payload: bytes, peer: object) -> bytes | None:
        return payload[::-1]

    rng = random.Random(SEED)
    async with CoapServer(profile, handler, devices=[device]) as server:
        client = CoapClient(profile, server.uri, load_agent_credentials(tmp_path / "dev"))
        try:
            assert await client.post(b"one") == b"eno"
            for _ in range(200):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.sendto(
                        record(HANDSHAKE, handshake(CLIENT_HELLO, client_hello(rng.randbytes(32)), 0)),
                        ("127.0.0.1", server.port),
                    )
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.2)
            assert server.dtls_sessions <= 1 + 8
            assert await client.post(b"two") == b"owt"
            assert client.session_restarts == 0
        finally:
            await client.close()
        newcomer = CoapClient(profile, server.uri, load_agent_credentials(tmp_path / "dev"))
        try:  # a new handshake still finds a place
            assert await newcomer.post(b"three") == b"eerht"
        finally:
            await newcomer.close()
