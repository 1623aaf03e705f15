"""Self-authenticating QueryRequest tokens: the TAM keeps nothing for a peer it has not authenticated.

A first QueryRequest to a peer without an authenticated transport identity (plain CoAP, HTTP) is
answered without touching the database: everything the TAM must check later is in the token, under a
MAC of the TAM's secret, and the token is recorded only once the signed QueryResponse (or Error)
that echoes it has been verified, i.e. once the device is known (`TamStore.spend_token`, whose
primary key makes "no token accepted twice" hold across TAM processes).

    token = 0x01 | expires (uint32, seconds) | random (8) | MAC (16)                  29 bytes
    MAC   = HMAC-SHA-256(secret, CONTEXT | 0x01 | expires | random | SHA-256(request))[:16]
    challenge (when one is asked) = HMAC-SHA-256(secret, "challenge" | token)[:16]

`request` is the canonical JSON of what the QueryRequest asked (versions, suites, SUIT profiles,
freshness, data items, attestation model): a token is accepted only for the request it was issued
with. The challenge is derived from the token, so it needs no storage either and is bound to it.
Sans-IO: the secret comes from the caller (the TAM folder's `stateless.key`), clock and randomness
from the engine. Hand-written: a few lines over the standard library's `hmac`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from teep_coap.protocol.errors import InvalidMessage

VERSION = 0x01
CONTEXT = b"teep-coap stateless QueryRequest v1"
RANDOM_SIZE = 8
MAC_SIZE = 16
TOKEN_SIZE = 1 + 4 + RANDOM_SIZE + MAC_SIZE
CHALLENGE_SIZE = 16
SECRET_SIZE = 32


def request_digest(request: dict[str, Any]) -> bytes:
    """SHA-256 of a request's parameters in canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).digest()


@dataclass(frozen=True)
class StatelessTokens:
    """Issue and check tokens under one TAM secret."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ValueError("the stateless-token secret must be at least 16 bytes")

    def _mac(self, head: bytes, request: dict[str, Any]) -> bytes:
        return hmac.new(self.secret, CONTEXT + head + request_digest(request), hashlib.sha256).digest()[
            :MAC_SIZE
        ]

    def issue(
        self, request: dict[str, Any], *, now: float, lifetime: float, rng: Callable[[int], bytes]
    ) -> bytes:
        """A token for a QueryRequest with these parameters, valid `lifetime` seconds from `now`."""
        expires = min(int(now + lifetime), 0xFFFFFFFF)
        head = bytes((VERSION,)) + struct.pack(">I", expires) + rng(RANDOM_SIZE)
        return head + self._mac(head, request)

    @staticmethod
    def looks_like(token: bytes | None) -> bool:
        """Shape only (size and version): worth a MAC check."""
        return token is not None and len(token) == TOKEN_SIZE and token[0] == VERSION

    def check(self, token: bytes, request: dict[str, Any], *, now: float) -> float | None:
        """The token's expiry if it is ours, for this request and unexpired; None if it is not ours
        (another shape, another secret, another request); InvalidMessage if it is ours but expired."""
        if not self.looks_like(token):
            return None
        head, mac = token[:-MAC_SIZE], token[-MAC_SIZE:]
        if not hmac.compare_digest(mac, self._mac(head, request)):
            return None
        expires = float(struct.unpack(">I", token[1:5])[0])
        if expires <= now:
            raise InvalidMessage(f"token {token.hex()} expired")
        return expires

    def challenge_for(self, token: bytes) -> bytes:
        """The challenge sent with this token (derived, so it needs no storage)."""
        return hmac.new(self.secret, b"challenge" + token, hashlib.sha256).digest()[:CHALLENGE_SIZE]

    @staticmethod
    def spend_key(token: bytes) -> bytes:
        """The database key that records the token's single use."""
        return hashlib.sha256(token).digest()
