"""Does a client's DTLS 1.2 Finished record decrypt with the PSK we hold for its identity?

tinydtls drops a Finished it cannot decrypt without a word, and the client of a device whose PSK is
wrong waits out its whole timeout. It drops a Finished that decrypts but does not verify the same
way, and that happens with the right PSK too when a duplicated handshake message entered tinydtls'
transcript (a burst of clients on a loaded machine): an alert then would fail a handshake the client
would recover by starting again. So the TAM decides itself, from the records it saw: the Finished of
TLS_PSK_WITH_AES_128_CCM_8 (the only PSK suite tinydtls offers) is decrypted with keys derived from
our PSK; if the AEAD tag does not match, the client used another key.

Hand-written because no library we use exposes the TLS 1.2 PRF or the record layer; the steps and
constants are RFC 5246 §5, §6.3, §8.1, RFC 4279 §2 and RFC 6655 §3.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

KEY_SIZE = 16  # AES-128
IV_SIZE = 4  # the implicit part of the CCM nonce ("salt")
EXPLICIT_NONCE = 8
TAG_SIZE = 8  # CCM_8
RECORD_HEADER = 13


def prf(secret: bytes, label: bytes, seed: bytes, size: int) -> bytes:
    """TLS 1.2 PRF with SHA-256 (RFC 5246 §5)."""
    out = b""
    a = label + seed
    while len(out) < size:
        a = hmac.new(secret, a, hashlib.sha256).digest()
        out += hmac.new(secret, a + label + seed, hashlib.sha256).digest()
    return out[:size]


def client_write_key(
    psk: bytes, seed: bytes, server_random: bytes, client_random: bytes
) -> tuple[bytes, bytes]:
    """(client_write_key, client_write_IV) of a PSK handshake (RFC 4279 §2, RFC 5246 §8.1, §6.3).

    `seed` is the master secret's: client_random + server_random, or with the extended master
    secret (RFC 7627, tinydtls offers and accepts it) the session hash."""
    zeros = bytes(len(psk))
    length = len(psk).to_bytes(2, "big")
    premaster = length + zeros + length + psk
    label = b"master secret" if seed == client_random + server_random else b"extended master secret"
    master = prf(premaster, label, seed, 48)
    block = prf(master, b"key expansion", server_random + client_random, 2 * (KEY_SIZE + IV_SIZE))
    return block[:KEY_SIZE], block[2 * KEY_SIZE : 2 * KEY_SIZE + IV_SIZE]


def _decrypts(record: bytes, key: bytes, iv: bytes) -> bool:
    fragment = record[RECORD_HEADER:]
    if len(fragment) < EXPLICIT_NONCE + TAG_SIZE:
        return False
    nonce = iv + fragment[:EXPLICIT_NONCE]
    plain_length = len(fragment) - EXPLICIT_NONCE - TAG_SIZE
    aad = record[3:11] + record[0:3] + plain_length.to_bytes(2, "big")  # epoch|seq, type, version, length
    try:
        AESCCM(key, tag_length=TAG_SIZE).decrypt(nonce, fragment[EXPLICIT_NONCE:], aad)
    except InvalidTag:
        return False
    return True


def finished_decrypts(
    record: bytes, psk: bytes, client_random: bytes, server_random: bytes, transcript: bytes
) -> bool:
    """True if the epoch-1 handshake `record` (header included) decrypts under `psk` (RFC 6655 §3),
    with or without the extended master secret. `transcript`: the handshake messages from the
    ClientHello with cookie to the ClientKeyExchange, DTLS handshake headers included (RFC 6347
    §4.2.6), for the session hash (RFC 7627 §3)."""
    seeds = (client_random + server_random, hashlib.sha256(transcript).digest())
    return any(
        _decrypts(record, *client_write_key(psk, seed, server_random, client_random)) for seed in seeds
    )


__all__ = ["client_write_key", "finished_decrypts", "prf"]
