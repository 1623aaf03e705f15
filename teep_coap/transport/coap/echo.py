"""RFC 9175 Echo (§2.4) against amplification over plain CoAP: a peer proves its address first.

Over plain CoAP a spoofed 9-byte empty POST would otherwise draw a ~300-byte signed QueryRequest
toward the victim. With this guard the TAM answers a request from an address that has not proven
itself with **4.01 Unauthorized + Echo** and no payload (18 bytes plus the request's token: below
3× any request to `/teep`), and serves the request only when it comes back with that Echo value.

The Echo value carries its own proof, so the server keeps nothing for an unproven peer:

    echo = issued (uint32, seconds) | HMAC-SHA-256(secret, issued | peer address)[:8]    12 bytes

It is accepted from the same address (host and port) for `ECHO_LIFETIME` seconds. Addresses that
proved themselves are remembered (so the rest of a session needs no Echo) until they are silent for
the idle timeout (`idle_expiry`, profile `[limits] idle_timeout`) and at most `PROVEN_MAX` of them;
an expired or evicted address simply proves itself again. DTLS (its cookie exchange) and OSCORE (which
authenticates every request) do not use the guard. The secret is random per server process: a
restart makes outstanding Echo values fail, and the client gets a new one.

A padded connect needs no round trip. An empty POST (a Broker's connect) of at least
`MIN_PADDED_CONNECT` bytes from an unproven address is served when the answer, with an Echo option
added, fits in 3× the request (`admit` gives that budget, the resource enforces it; an answer over
it becomes the 4.01 + Echo after all). The Echo in that answer lets the client's next request prove
the address. QUIC pads its Initial for the same reason (RFC 9000 §8.1). Our client pads its connect
with an elective option `PADDING_OPTION` from the experimental range (RFC 7252 §12.2: elective, safe
to forward, no cache key), which any server ignores; profile `[transport] pad_connect_to`. On the
server the connect stays cheap to refuse: the TAM signs a QueryRequest for it and, with stateless
connect tokens (the default), stores nothing.

Clients: ours answers a 4.01 + Echo by repeating the request with the option (`client.py`). A peer
that cannot do Echo needs the profile setting `[transport] echo = false` (docs/coap-binding.md says
what that costs). Hand-written: aiocoap 0.4.17 has no server-side Echo for plain CoAP (only OSCORE's
replay-window recovery), and its client does not answer an Echo outside OSCORE.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from collections.abc import Callable

from aiocoap import Message
from aiocoap.numbers.codes import Code

from teep_coap.transport.coap.idle_expiry import IDLE_TIMEOUT, IdleTracker

ECHO_LIFETIME = 60.0  # seconds an Echo value is accepted
PROVEN_MAX = 4096  # addresses remembered as proven
MAC_SIZE = 8
ECHO_SIZE = 4 + MAC_SIZE
AMPLIFICATION_FACTOR = 3  # RFC 9175 §2.4: at most 3× the request before the address is verified
# The client's connect padding: an elective, safe-to-forward, NoCacheKey option number from the
# experimental range 65000-65535 (RFC 7252 §5.4.6, §12.2); its bytes are zeros and mean nothing.
PADDING_OPTION = 65020
# The smallest empty POST served before the address is proven (below, 4.01 + Echo at once): a
# QueryRequest is over 150 bytes, so a smaller connect could not be answered within 3x anyway, and the
# TAM signs nothing for it.
MIN_PADDED_CONNECT = 64
PROVEN = -1  # `admit`: the address is proven, the answer has no budget


class EchoGuard:
    """Decides, per request over plain CoAP, whether it may be served or must be answered with Echo."""

    def __init__(
        self,
        *,
        secret: bytes | None = None,
        clock: Callable[[], float] = time.time,
        lifetime: float = ECHO_LIFETIME,
        proven_max: int = PROVEN_MAX,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self._secret = secret if secret is not None else os.urandom(32)
        self._clock = clock
        self._lifetime = lifetime
        self._proven = IdleTracker(idle_timeout)
        self._proven_max = proven_max
        self.challenges = 0  # 4.01 + Echo answers sent (for tests and logs)
        self.padded_served = 0  # padded connects answered before their address was proven

    def _mac(self, issued: bytes, address: str) -> bytes:
        return hmac.new(self._secret, issued + address.encode(), hashlib.sha256).digest()[:MAC_SIZE]

    def echo_for(self, address: str) -> bytes:
        """A fresh Echo value bound to `address`."""
        issued = struct.pack(">I", int(self._clock()) & 0xFFFFFFFF)
        return issued + self._mac(issued, address)

    def valid(self, echo: bytes | None, address: str) -> bool:
        """Is `echo` a value we gave to `address` less than the lifetime ago?"""
        if echo is None or len(echo) != ECHO_SIZE:
            return False
        issued, mac = echo[:4], echo[4:]
        if not hmac.compare_digest(mac, self._mac(issued, address)):
            return False
        age = self._clock() - struct.unpack(">I", issued)[0]
        return 0 <= age <= self._lifetime

    def _remember(self, address: str, now: float) -> None:
        self._proven.heard(address, now)
        while len(self._proven) > self._proven_max:
            self._proven.pop_oldest()

    def proven(self) -> int:
        """How many addresses are remembered as proven now."""
        return len(self._proven)

    def admit(self, address: str, echo: bytes | None, *, connect_size: int = 0) -> int | None:
        """`PROVEN` when the request may be served (the address proved itself, now or before); the
        most bytes its answer may have when it is a padded connect (`connect_size`: the empty POST's
        size on the wire, 0 for any other request) from an unproven address; None when it must be
        answered with `challenge(address)`."""
        now = self._clock()
        for _ in self._proven.expired(now):  # silent too long: it proves itself again when it returns
            pass
        if address in self._proven:
            self._proven.heard(address, now)
            return PROVEN
        if self.valid(echo, address):
            self._remember(address, now)
            return PROVEN
        if connect_size >= MIN_PADDED_CONNECT:
            return AMPLIFICATION_FACTOR * connect_size
        return None

    def challenge(self, address: str) -> Message:
        """4.01 + Echo for `address`: no payload, below 3× any request to the TEEP path."""
        self.challenges += 1
        answer = Message(code=Code.UNAUTHORIZED)
        answer.opt.echo = self.echo_for(address)
        return answer

    def check(self, address: str, echo: bytes | None) -> Message | None:
        """None when the request may be served; else the 4.01 + Echo answer to send instead."""
        return None if self.admit(address, echo) is not None else self.challenge(address)


def wire_size(message: Message, token: bytes) -> int:
    """Bytes of `message` on the wire with `token` (header, token, options, payload marker, payload)."""
    payload = len(message.payload)
    return 4 + len(token) + len(message.opt.encode()) + (1 + payload if payload else 0)
