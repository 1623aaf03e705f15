"""What aiocoap keeps per peer, bounded, and how it answers junk: a server under attack stays small.

aiocoap 0.4.17, as a server, keeps per sender:

* the Block1 spool (`blockwise.Block1Spool`): every unfinished block-wise request body, up to
  MAX_TRANSMIT_WAIT (93 s), with no limit on their number or bytes;
* the Block2 cache (`blockwise.Block2Cache`): every response being sent block-wise, the same way;
* the duplicate cache (`MessageManager._recent_messages`): every request's (remote, Message ID) and
  its response for EXCHANGE_LIFETIME (247 s), with one event-loop timer each.

Junk from many source ports filled all three (RSS 83 → 266 MB in the issue's run). Here each becomes
a bounded structure that drops its oldest entries first. A peer's retransmission older than what we
kept is processed again, which RFC 7252 §4.5 allows for idempotent handling; the TEEP engine treats a
repeated message as a duplicate anyway.

Block1 bodies grow in a bytearray (aiocoap's `bytes +=` made a body of many tiny blocks quadratic).
It also fixes two answers to junk: a Block1 transfer with a gap or overlap is 4.08 Request Entity
Incomplete (RFC 7959 §2.3), not 5.00 plus a traceback; and a datagram whose options do not decode
(e.g. a Uri-Path that is not UTF-8) is an unparsable message, dropped silently, not an exception
that asyncio logs with a traceback (`harden_message_decode`).

This module holds the bounds and the duplicate cache (plain Python); fitting them into aiocoap
touches its internals and is done in `aiocoap_compat`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any

MAX_BLOCK1_ASSEMBLIES = 256  # unfinished block-wise request bodies kept, all peers together
MAX_BLOCK1_BYTES = 16 * 1024 * 1024  # their bytes together; the oldest go first beyond
MAX_BLOCK2_RESPONSES = 256  # responses kept for block-wise retrieval, all peers together
MAX_RECENT_MESSAGES = 8192  # (peer, Message ID) pairs remembered for duplicate detection
MAX_DTLS_SESSIONS = 4096  # server-side DTLS sessions kept; the least recently used are dropped beyond
# of those, handshakes not finished (anyone can start one: any datagram from a new address does);
# beyond, or when the sessions are full, the oldest unfinished go first, before any established
MAX_DTLS_HANDSHAKES = 1024
# established sessions of one PSK identity: a device needs one, a Broker restarting a few; beyond,
# that identity's least recently established goes, so one key (a device's, stolen or buggy) opening
# sessions from new ports cannot push out the established sessions of every other device
MAX_DTLS_SESSIONS_PER_IDENTITY = 16


def oldest_of_heaviest(
    keys: Iterable[Any], owner: Callable[[Any], Any], weight: Callable[[Any], int] = lambda _: 1
) -> Any:
    """The entry a full table drops next when one owner must not push out the others: among `keys`
    (oldest first), the oldest of the owner holding the most (by `weight`: entries, or bytes); ties
    go to the owner of the oldest entry. Used where anyone can add entries (Block1 bodies, EDHOC
    handshakes waiting for message_3)."""
    order = list(keys)
    held: dict[Any, int] = {}
    for key in order:
        who = owner(key)
        held[who] = held.get(who, 0) + weight(key)
    most = max(held, key=held.__getitem__)  # dicts keep insertion order: ties, the oldest's owner
    return next(key for key in order if owner(key) == most)


class DuplicateCache(dict[Any, Any]):
    """(peer, Message ID) → stored response, expiring in insertion order, at most `max_items` kept.

    Replaces aiocoap's dict plus one event-loop timer per received request: the expired entries are
    swept when the next request arrives (all entries share one lifetime, so the oldest expire first).
    `forget_peer` drops a peer's entries at once: a DTLS session that ended is a peer object that no
    datagram will ever name again, and its entries kept it (its DTLS context, its last responses)
    alive for the whole exchange lifetime. Each entry keeps the request's token (`token_of`): a
    retransmission repeats it, a new request that only shares the peer address and Message ID does
    not (see `aiocoap_compat.messages._deduplicate_message`)."""

    def __init__(self, max_items: int) -> None:
        super().__init__()
        self.max_items = max_items
        self._born: collections.OrderedDict[Any, float] = collections.OrderedDict()  # oldest first
        self._tokens: dict[Any, bytes] = {}
        self._by_peer: dict[Any, set[Any]] = {}

    def _drop(self, key: Any) -> None:
        self._born.pop(key, None)
        self._tokens.pop(key, None)
        dict.pop(self, key, None)
        keys = self._by_peer.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_peer[key[0]]

    def remember(self, key: Any, now: float, lifetime: float, token: bytes = b"") -> None:
        """Add `key` (no response yet) for a request with `token`, after dropping what expired and what
        exceeds the bound."""
        born = self._born
        while born:
            oldest, at = next(iter(born.items()))
            if at + lifetime > now and len(born) < self.max_items:
                break
            self._drop(oldest)
        self._drop(key)  # re-added: it counts as the newest
        born[key] = now
        self._tokens[key] = token
        self._by_peer.setdefault(key[0], set()).add(key)
        self[key] = None

    def token_of(self, key: Any) -> bytes | None:
        """The token of the request remembered under `key` (None: not remembered)."""
        return self._tokens.get(key)

    def pop(self, key: Any, default: Any = None) -> Any:
        """Tolerant pop (a key may already be gone)."""
        value = dict.get(self, key, default)
        self._drop(key)
        return value

    def forget_peer(self, peer: Any) -> int:
        """Drop every entry of `peer` (its session ended); returns how many."""
        keys = self._by_peer.pop(peer, ())
        for key in keys:
            self._born.pop(key, None)
            self._tokens.pop(key, None)
            dict.pop(self, key, None)
        return len(keys)

    def peers(self) -> int:
        """How many distinct peers have entries (for tests)."""
        return len(self._by_peer)


__all__ = [
    "MAX_BLOCK1_ASSEMBLIES",
    "MAX_BLOCK1_BYTES",
    "MAX_BLOCK2_RESPONSES",
    "MAX_DTLS_HANDSHAKES",
    "MAX_DTLS_SESSIONS",
    "MAX_DTLS_SESSIONS_PER_IDENTITY",
    "MAX_RECENT_MESSAGES",
    "DuplicateCache",
    "oldest_of_heaviest",
]
