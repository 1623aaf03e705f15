"""The TAM's own check of a client's DTLS Finished: it decrypts under the right PSK only.

The records below are one real handshake between our CoapClient and CoapServer (tinydtls through
aiocoap 0.4.17, TLS_PSK_WITH_AES_128_CCM_8 with the extended master secret), captured on loopback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from coap_helpers import quick

from teep_coap.transport.coap import CoapClient, CoapServer, aiocoap_compat
from teep_coap.transport.coap.credentials import load_agent_credentials, provision_device
from teep_coap.transport.coap.dtls_finished import finished_decrypts, prf
from teep_coap.transport.coap.dtls_watch import HandshakeWatch, records

pytestmark = [pytest.mark.timeout(60), pytest.mark.both_event_loops]

PSK = bytes.fromhex("553e20bf38cc6fbffcfa43dec1392e85")
CLIENT_HELLO = bytes.fromhex(  # the one with the cookie; DTLS handshake header included
    "010000440001000000000044fefda26b6c3fcdcab47b013cab41ba91d138030981222422c876ab62b853957add4e"
    "0010a115b206d2442d223faf01508f287f3e0006c0a8c0a400ff0100000400170000"
)
SERVER_HELLO = bytes.fromhex(
    "020000310001000000000031fefdb4881aac412f1cbb236badc03af3aa3b459364007cb8cf2f0e7be05a3fb20f44"
    "00c0a800000900170000ff01000100"
)
SERVER_HELLO_DONE = bytes.fromhex("0e0000000002000000000000")
CLIENT_KEY_EXCHANGE = bytes.fromhex("10000009000200000000000900076167656e742d31")  # identity "agent-1"
FINISHED = bytes.fromhex(  # epoch 1, whole record
    "16fefd000100000000000000280001000000000000c206409ca4180275812a77a9833158c0aab273fcf1b9b4f615"
    "8c57d4c6a53632"
)
CLIENT_RANDOM, SERVER_RANDOM = CLIENT_HELLO[14:46], SERVER_HELLO[14:46]
TRANSCRIPT = CLIENT_HELLO + SERVER_HELLO + SERVER_HELLO_DONE + CLIENT_KEY_EXCHANGE


def test_the_finished_decrypts_under_the_psk_it_was_made_with() -> None:
    assert finished_decrypts(FINISHED, PSK, CLIENT_RANDOM, SERVER_RANDOM, TRANSCRIPT)


def test_another_psk_or_another_transcript_does_not_decrypt_it() -> None:
    assert not finished_decrypts(FINISHED, bytes(16), CLIENT_RANDOM, SERVER_RANDOM, TRANSCRIPT)
    assert not finished_decrypts(FINISHED, PSK[:-1] + b"\x00", CLIENT_RANDOM, SERVER_RANDOM, TRANSCRIPT)
    assert not finished_decrypts(FINISHED, PSK, CLIENT_RANDOM, SERVER_RANDOM, TRANSCRIPT + b"\x00")
    tampered = FINISHED[:-1] + bytes([FINISHED[-1] ^ 1])
    assert not finished_decrypts(tampered, PSK, CLIENT_RANDOM, SERVER_RANDOM, TRANSCRIPT)
    assert not finished_decrypts(FINISHED[:20], PSK, CLIENT_RANDOM, SERVER_RANDOM, TRANSCRIPT)


def test_prf_matches_a_published_tls12_sha256_vector() -> None:
    # The widely used TLS 1.2 PRF (SHA-256) test vector (secret, label "test label", seed, 100 bytes)
    secret = bytes.fromhex("9bbe436ba940f017b17652849a71db35")
    seed = bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c")
    out = prf(secret, b"test label", seed, 100)
    assert out[:16] == bytes.fromhex("e3f229ba727be17b8d122620557cd453")
    assert len(out) == 100


async def test_a_right_psk_finished_is_never_refused_even_when_the_check_runs(tmp_path: Path) -> None:
    """The TAM looks at a Finished only when tinydtls did not connect (a rare transcript mismatch);
    here it is made to look at every one: a right PSK must still connect, with no alert."""
    device = provision_device(tmp_path / "tam", tmp_path / "agent", "agent-1")

    async def handler(payload: bytes, peer: object) -> bytes | None:
        return b"hello"

    profile = quick("coaps-psk", request_timeout=5.0)
    async with CoapServer(profile, handler, devices=[device]) as server:
        pool = aiocoap_compat.dtls_pool(server._context)
        pool._Address.teep_connected = property(lambda self: False, lambda self, value: None)
        for _ in range(3):
            client = CoapClient(profile, server.uri, load_agent_credentials(tmp_path / "agent"))
            try:
                assert await client.post(b"") == b"hello"
            finally:
                await client.close()


def _record(kind: int, body: bytes, epoch: int = 0) -> bytes:
    return (
        bytes([kind, 0xFE, 0xFD]) + epoch.to_bytes(2, "big") + bytes(6) + len(body).to_bytes(2, "big") + body
    )


def test_the_watch_rebuilds_the_transcript_from_the_records_as_they_pass() -> None:
    watch = HandshakeWatch()
    first_hello = records(_record(22, CLIENT_HELLO))  # same random as the one with the cookie
    watch.before(first_hello)
    assert watch.after(first_hello) is None
    watch.server_sent(_record(22, SERVER_HELLO))
    watch.server_sent(_record(22, SERVER_HELLO))  # a retransmission is one version, not two
    watch.server_sent(_record(22, SERVER_HELLO_DONE))
    for datagram in (_record(22, CLIENT_KEY_EXCHANGE), _record(20, b"\x01")):
        assert watch.after(records(datagram)) is None
    assert watch.identity == b"agent-1" and watch.keyed
    assert watch.after(records(FINISHED)) == FINISHED
    assert any(finished_decrypts(FINISHED, PSK, *t) for t in watch.transcripts())
    assert not any(finished_decrypts(FINISHED, bytes(16), *t) for t in watch.transcripts())
    new_hello = bytearray(CLIENT_HELLO)
    new_hello[20] ^= 1  # another random: a new handshake forgets the old messages
    watch.before(records(_record(22, bytes(new_hello))))
    assert watch.messages == {} and watch.identity is None and not watch.keyed
