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
"""

from __future__ import annotations

import collections
import functools
import time
import types
from typing import Any

import aiocoap
from aiocoap import Message
from aiocoap.blockwise import Block1Spool, Block2Cache, IncompleteException, _extract_block_key
from aiocoap.error import UnparsableMessage
from aiocoap.numbers import TransportTuning
from aiocoap.util.asyncio.timeoutdict import TimeoutDict

MAX_BLOCK1_ASSEMBLIES = 256  # unfinished block-wise request bodies kept, all peers together
MAX_BLOCK1_BYTES = 16 * 1024 * 1024  # their bytes together; the oldest go first beyond
MAX_BLOCK2_RESPONSES = 256  # responses kept for block-wise retrieval, all peers together
MAX_RECENT_MESSAGES = 8192  # (peer, Message ID) pairs remembered for duplicate detection


class BoundedTimeoutDict(TimeoutDict[Any, Message]):
    """aiocoap's TimeoutDict holding at most `max_items` entries and `max_bytes` of payload; beyond,
    the oldest entries are dropped (as if they had timed out)."""

    def __init__(self, timeout: float, max_items: int, max_bytes: int | None = None) -> None:
        super().__init__(timeout)
        self.max_items = max_items
        self.max_bytes = max_bytes

    def __setitem__(self, key: Any, value: Message) -> None:
        items = self._items
        items.pop(key, None)  # re-inserted below: a replaced entry counts as the newest
        while items and len(items) >= self.max_items:
            del items[next(iter(items))]
        self.make_room(key, len(value.payload))
        super().__setitem__(key, value)

    def make_room(self, key: Any, extra: int) -> None:
        """Drop the oldest entries other than `key` until `extra` more payload bytes fit."""
        if self.max_bytes is None:
            return
        items = self._items
        total = sum(len(m.payload) for m in items.values()) + extra
        for old in [k for k in items if k != key]:
            if total <= self.max_bytes:
                break
            total -= len(items.pop(old).payload)

    def discard(self, key: Any) -> None:
        """Forget `key` if present."""
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


class BoundedBlock1Spool(Block1Spool):
    """Block1 assembly with bounded memory, and 4.08 (not 5.00) for a block that leaves a gap."""

    def __init__(self) -> None:
        super().__init__()
        self._assemblies = BoundedTimeoutDict(
            TransportTuning().MAX_TRANSMIT_WAIT, MAX_BLOCK1_ASSEMBLIES, MAX_BLOCK1_BYTES
        )

    def feed_and_take(self, req: Message) -> Message:
        block1 = req.opt.block1
        if block1 is not None and block1.block_number > 0:
            self._assemblies.make_room(_extract_block_key(req), len(req.payload))
        elif block1 is not None:
            # aiocoap appends each block with `payload += block`: on bytes that copies the whole body
            # per block (quadratic: 16-byte blocks of a 1 MiB body copy 32 GiB); a bytearray grows in place
            req.payload = bytearray(req.payload)
        try:
            return super().feed_and_take(req)
        except ValueError:  # aiocoap's "gap or overlap" (a bare ValueError from _append_request_block)
            self._assemblies.discard(_extract_block_key(req))
            raise IncompleteException from None


class BoundedBlock2Cache(Block2Cache):
    """Block2 response cache holding at most MAX_BLOCK2_RESPONSES responses."""

    def __init__(self) -> None:
        super().__init__()
        self._completes = BoundedTimeoutDict(TransportTuning().MAX_TRANSMIT_WAIT, MAX_BLOCK2_RESPONSES)


def bound_resource_caches(resource: aiocoap.resource.Resource) -> None:
    """Give a resource (after its `__init__`) the bounded Block1 spool and Block2 cache."""
    resource._block1 = BoundedBlock1Spool()
    resource._block2 = BoundedBlock2Cache()


class DuplicateCache(dict[Any, Any]):
    """(peer, Message ID) → stored response, expiring in insertion order, at most `max_items` kept.

    Replaces aiocoap's dict plus one event-loop timer per received request: the expired entries are
    swept when the next request arrives (all entries share one lifetime, so the oldest expire first)."""

    def __init__(self, max_items: int) -> None:
        super().__init__()
        self.max_items = max_items
        self._order: collections.deque[tuple[float, Any]] = collections.deque()
        self._born: dict[Any, float] = {}

    def _drop_oldest(self) -> None:
        born, key = self._order.popleft()
        if self._born.get(key) == born:  # not re-added since
            del self._born[key]
            dict.pop(self, key, None)

    def remember(self, key: Any, now: float, lifetime: float) -> None:
        """Add `key` (no response yet), after dropping what expired and what exceeds the bound."""
        while self._order and self._order[0][0] + lifetime <= now:
            self._drop_oldest()
        while self._order and len(self) >= self.max_items:
            self._drop_oldest()
        self._born[key] = now
        self._order.append((now, key))
        self[key] = None

    def pop(self, key: Any, default: Any = None) -> Any:
        """Tolerant pop (a key may already be gone)."""
        self._born.pop(key, None)
        return dict.pop(self, key, default)


def _deduplicate_message(self: Any, message: Message) -> bool:
    """aiocoap's `MessageManager._deduplicate_message` over a `DuplicateCache`: same answers, no
    timer per message, bounded size."""
    key = (message.remote, message.mid)
    cache: DuplicateCache = self._recent_messages
    if key in cache:
        if message.mtype is aiocoap.CON and cache[key] is not None:
            self._send_initially(cache[key])  # the stored response again (RFC 7252 §4.5)
        return True
    cache.remember(key, time.monotonic(), message.transport_tuning.EXCHANGE_LIFETIME)
    return False


def bound_duplicate_caches(context: aiocoap.Context) -> None:
    """Give every message manager of a server context the bounded duplicate cache."""
    for ri in context.request_interfaces:
        mm = getattr(ri, "token_interface", None)
        if mm is None or not hasattr(mm, "_recent_messages"):
            continue
        cache = DuplicateCache(MAX_RECENT_MESSAGES)
        cache.update(mm._recent_messages)
        mm._recent_messages = cache
        mm._deduplicate_message = types.MethodType(_deduplicate_message, mm)


_original_decode = Message.decode.__func__


@functools.wraps(_original_decode)
def _decode(cls: type[Message], rawdata: bytes, remote: Any = None) -> Message:
    try:
        return _original_decode(cls, rawdata, remote)
    except UnparsableMessage:
        raise
    except Exception as exc:  # an option value that does not decode (UTF-8, block, uint): junk
        raise UnparsableMessage(f"option does not decode: {type(exc).__name__}") from None


def harden_message_decode() -> None:
    """Make every option decoding failure of `aiocoap.Message.decode` an `UnparsableMessage`, which
    all of aiocoap's transports drop with one log line (idempotent; process-wide)."""
    if Message.decode.__func__ is not _decode:
        Message.decode = classmethod(_decode)
