"""Plain CoAP messages: an early look at each datagram, bounded caches, a Block1 gap answered 4.08,
junk options dropped."""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
import types
from collections.abc import Callable
from typing import Any

import aiocoap
import aiocoap.error
import aiocoap.meta
import aiocoap.resource
from aiocoap import ACK, CON, NON, Message
from aiocoap.blockwise import Block1Spool, Block2Cache, ContinueException, IncompleteException
from aiocoap.error import UnparsableMessage
from aiocoap.message import Direction
from aiocoap.numbers import TransportTuning
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.transports.udp6 import MessageInterfaceUDP6, UDP6EndpointAddress
from aiocoap.util.asyncio.timeoutdict import TimeoutDict

from teep_coap.transport.coap.aiocoap_compat.contexts import message_interfaces
from teep_coap.transport.coap.hardening import (
    MAX_BLOCK1_ASSEMBLIES,
    MAX_BLOCK1_BYTES,
    MAX_BLOCK2_RESPONSES,
    MAX_RECENT_MESSAGES,
    DuplicateCache,
    oldest_of_heaviest,
)

log = logging.getLogger("teep_coap.transport.coap")


# --- plain CoAP: a look at each datagram before aiocoap's dispatch ------------------------------

DatagramGate = Callable[[bytes, Any], "bytes | bool | Message"]


def install_datagram_gate(context: aiocoap.Context, gate: DatagramGate) -> bool:
    """Run `gate(datagram, remote)` on every datagram the plain-CoAP (udp6) server transport of
    `context` receives, before aiocoap decodes and dispatches it (`remote` is the address object
    aiocoap would give the message): True passes it on to aiocoap, a Message is the datagram
    decoded by the gate (with that `remote`) and goes straight to aiocoap's dispatch, as aiocoap's
    udp6 transport would send it after its own decoding; False drops it, bytes are sent back to
    the sender instead (from the address it was sent to). False if `context` has no udp6 transport
    (DTLS, OSCORE-only), and nothing is installed.
    """

    for mi in message_interfaces(context):
        if not isinstance(mi, MessageInterfaceUDP6):
            continue
        original = mi.datagram_msg_received

        def datagram_msg_received(
            data: bytes, ancdata: Any, flags: int, address: Any, mi: Any = mi, original: Any = original
        ) -> None:
            pktinfo = None
            for level, kind, value in ancdata:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                    pktinfo = value
            verdict = gate(data, UDP6EndpointAddress(address, mi, pktinfo=pktinfo))
            if verdict is True:
                original(data, ancdata, flags, address)
            elif isinstance(verdict, Message):  # what udp6's datagram_msg_received does after decoding
                verdict.direction = Direction.INCOMING
                try:
                    mi._ctx.dispatch_message(verdict)
                except BaseException as exc:
                    log.error("Exception raised through dispatch_message: %s", exc, exc_info=exc)
                    raise
            elif verdict:
                source = [] if pktinfo is None else [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, pktinfo)]
                try:
                    mi.transport.sendmsg(verdict, source, 0, address)
                except OSError as exc:  # the peer's address may be unreachable: nothing to tell it
                    log.debug("early answer to %s not sent: %s", address, exc)

        mi.datagram_msg_received = datagram_msg_received
        return True
    return False


def encode_reply(request: Message, answer: Message) -> bytes:
    """`answer` on the wire, sent without the message manager: piggy-backed on the ACK of a CON
    request, or a NON with a fresh message ID; the request's token."""
    if request.mtype is CON:
        answer.mtype, answer.mid = ACK, request.mid
    else:
        answer.mtype, answer.mid = NON, int.from_bytes(os.urandom(2), "big")
    answer.token = request.token
    return bytes(answer.encode())


# --- caches: bounded, and a Block1 gap is 4.08 ---------------------------------------------------


def block_owner(key: Any) -> Any:
    """The peer a block-wise key (`block_key`) belongs to: its first part."""
    return key[0]


class BoundedTimeoutDict(TimeoutDict[Any, Message]):
    """aiocoap's TimeoutDict holding at most `max_items` entries and `max_bytes` of payload; beyond,
    entries are dropped (as if they had timed out). Without `owner` the oldest go first. With
    `owner` (key -> who made the entry, e.g. `block_owner`) the oldest of the owner holding the most
    (entries, or bytes for `max_bytes`) go first: one peer filling the table pushes out its own
    entries, not another peer's unfinished transfer; many peers with one entry each still push out
    the oldest."""

    def __init__(
        self,
        timeout: float,
        max_items: int,
        max_bytes: int | None = None,
        *,
        owner: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(timeout)
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.owner = owner

    def __setitem__(self, key: Any, value: Message) -> None:
        items = self._items
        items.pop(key, None)  # re-inserted below: a replaced entry counts as the newest
        while items and len(items) >= self.max_items:
            del items[self._victim(key, by_bytes=False)]
        self.make_room(key, len(value.payload))
        super().__setitem__(key, value)

    def _victim(self, keep: Any, *, by_bytes: bool) -> Any:
        """The entry to drop next (never `keep` while another is left). With an owner it scans the
        table (at most `max_items` entries), which only happens when the table is full."""
        items = self._items
        if self.owner is None:  # the oldest: the Block2 caches are full whenever traffic is steady
            return next((k for k in items if k != keep), keep)
        others = [k for k in items if k != keep] or list(items)
        size = (lambda k: len(items[k].payload)) if by_bytes else (lambda k: 1)
        return oldest_of_heaviest(others, self.owner, size)

    def make_room(self, key: Any, extra: int) -> None:
        """Drop entries other than `key` until `extra` more payload bytes fit."""
        if self.max_bytes is None:
            return
        items = self._items
        total = sum(len(m.payload) for m in items.values()) + extra
        while total > self.max_bytes and any(k != key for k in items):
            total -= len(items.pop(self._victim(key, by_bytes=True)).payload)

    def discard(self, key: Any) -> None:
        """Forget `key` if present."""
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


_NOT_IN_BLOCK_KEY = frozenset((OptionNumber.BLOCK1, OptionNumber.BLOCK2, OptionNumber.OBSERVE))
_NO_CACHE_KEY_MASK, _NO_CACHE_KEY = 0x1E, 0x1C  # RFC 7252 §5.4.6 (such an option is safe to forward)


def block_key(request: Message) -> Any:
    """What aiocoap's `_extract_block_key` tells apart, for the fast path's Block2 cache and the
    Block1 spool: the peer, the code and every cache-key option but Block1, Block2 and Observe.

    aiocoap's builds and sorts a list of every option and calls two methods per option (≈ 3 µs a
    request); a coap-constrained session (64-byte blocks) works out about 45 keys."""
    options = request.opt._options
    parts = tuple(
        (number, tuple(option.value for option in options[number]))
        for number in sorted(options)
        if number & _NO_CACHE_KEY_MASK != _NO_CACHE_KEY and number not in _NOT_IN_BLOCK_KEY
    )
    return (request.remote.blockwise_key, request.code, parts)


class BoundedBlock1Spool(Block1Spool):
    """Block1 assembly with bounded memory, and 4.08 (not 5.00) for a block that leaves a gap.

    `feed_and_take` is aiocoap's, with `block_key`, a bytearray body and the bounds."""

    def __init__(self) -> None:
        super().__init__()
        self._assemblies = BoundedTimeoutDict(
            TransportTuning().MAX_TRANSMIT_WAIT, MAX_BLOCK1_ASSEMBLIES, MAX_BLOCK1_BYTES, owner=block_owner
        )

    def feed_and_take(self, req: Message) -> Message:
        block1 = req.opt.block1
        if block1 is None:
            return req
        key = block_key(req)
        assemblies = self._assemblies
        if block1.block_number == 0:
            # aiocoap appends each block with `payload += block`: on bytes that copies the whole body
            # per block (quadratic: 16-byte blocks of a 1 MiB body copy 32 GiB); a bytearray grows in place
            req.payload = bytearray(req.payload)
            assemblies[key] = req  # an unfinished earlier upload under the same key is dropped
        else:
            assemblies.make_room(key, len(req.payload))
            try:
                assemblies[key]._append_request_block(req)
            except KeyError:  # nothing to append to
                raise IncompleteException from None
            except ValueError:  # aiocoap's "gap or overlap" (a bare ValueError)
                assemblies.discard(key)
                raise IncompleteException from None
        if block1.more:
            raise ContinueException(block1)
        # the last block: aiocoap kept the whole body until it expired, so under steady traffic the
        # table stayed full of finished bodies (each new upload then paid the fair eviction's scan);
        # a retransmission of the last block is answered from the duplicate cache
        assembled = assemblies[key]
        assemblies.discard(key)
        return assembled


def spool_block(
    resource: aiocoap.resource.Resource, request: Message
) -> tuple[Message | None, Message | None]:
    """Feed one Block1 request to `resource`'s spool, as aiocoap's block-wise pipe does: (its answer
    now: 2.31 Continue, 4.08 Incomplete, 4.00 for a block of the wrong size; None) or, on the last
    block, (None, the assembled request)."""
    try:
        return None, resource._block1.feed_and_take(request)
    except aiocoap.error.RenderableError as exc:
        return exc.to_message(), None


class BoundedBlock2Cache(Block2Cache):
    """Block2 response cache holding at most MAX_BLOCK2_RESPONSES responses."""

    def __init__(self) -> None:
        super().__init__()
        self._completes = BoundedTimeoutDict(TransportTuning().MAX_TRANSMIT_WAIT, MAX_BLOCK2_RESPONSES)


RESPONSE_LIMIT = "_teep_response_limit"  # attribute of a request: its assembled answer's size limit
DEFAULT_RESPONSE_LIMIT = 64 * 1024 * 1024  # the profiles' largest max_message_size
_BOUNDED_RESPONSES = "_teep_bounded"


class ResponseTooLarge(aiocoap.error.Error):
    """A block-wise answer grew beyond the limit its request carries."""


def bound_response_assembly() -> bool:
    """Block-wise answers a client assembles stop at the size its request allows (`RESPONSE_LIMIT`,
    set by `CoapClient` from the profile's `max_message_size`), and grow in place.

    aiocoap 0.4.17 asks for the next Block2 block for as long as the server says "more", appending
    each to a bytes payload (a copy of everything so far per block): a server answering every block
    with "more" kept a device's client busy, a full core, until its request timed out (6,049 blocks in
    10 s), which it then reported as no answer. Now the assembly stops with `ResponseTooLarge`."""
    if getattr(Message, _BOUNDED_RESPONSES, False):
        return False
    original = Message._append_response_block

    def _append_response_block(self: Message, next_block: Message) -> None:
        request = getattr(self, "request", None)
        limit = getattr(request, RESPONSE_LIMIT, DEFAULT_RESPONSE_LIMIT)
        if len(self.payload) + len(next_block.payload) > limit:
            raise ResponseTooLarge(f"the block-wise answer grew beyond {limit} bytes")
        if type(self.payload) is bytes:
            self.payload = bytearray(self.payload)  # `+=` then appends in place
        original(self, next_block)

    Message._append_response_block = _append_response_block
    setattr(Message, _BOUNDED_RESPONSES, True)
    return True


def bound_resource_caches(resource: aiocoap.resource.Resource) -> None:
    """Give a resource (after its `__init__`) the bounded Block1 spool and Block2 cache."""
    resource._block1 = BoundedBlock1Spool()
    resource._block2 = BoundedBlock2Cache()


def _deduplicate_message(self: Any, message: Message) -> bool:
    """aiocoap's `MessageManager._deduplicate_message` over a `DuplicateCache`: same answers, no
    timer per message, bounded size.

    A message is a duplicate only if it also repeats the token of the one remembered under its peer
    and Message ID. aiocoap looks at those two alone, so a new client that got the port of an
    earlier one (a fresh socket, a NAT's reused mapping) and happened to pick a Message ID that one
    used within the exchange lifetime (247 s) was sent the earlier client's stored response, whose
    token it does not know: its request went unanswered. `bench sessions` met that once in about
    20,000 plain-CoAP sessions (a random 16-bit Message ID on a reused ephemeral port)."""
    key = (message.remote, message.mid)
    cache: DuplicateCache = self._recent_messages
    if key in cache and cache.token_of(key) == message.token:
        if message.mtype is aiocoap.CON and cache[key] is not None:
            self._send_initially(cache[key])  # the stored response again (RFC 7252 §4.5)
        return True
    cache.remember(key, time.monotonic(), message.transport_tuning.EXCHANGE_LIFETIME, message.token)
    return False


class _ResponseCache(DuplicateCache):
    """The duplicate cache as aiocoap's message manager fills it: a stored response lets go of its
    request. aiocoap resends a stored response as it is; the request it answered (a second Message
    with its options and payload) was kept alive beside it for the whole exchange lifetime, and the
    cyclic garbage collector walked both: 8,192 entries made a full collection of a plain-CoAP TAM
    take tens of milliseconds."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if value is not None:
            value.request = None
        super().__setitem__(key, value)


def bound_duplicate_caches(context: aiocoap.Context) -> None:
    """Give every message manager of a server context the bounded duplicate cache."""
    for ri in context.request_interfaces:
        mm = getattr(ri, "token_interface", None)
        if mm is None or not hasattr(mm, "_recent_messages"):
            continue
        cache = _ResponseCache(MAX_RECENT_MESSAGES)
        cache.update(mm._recent_messages)
        mm._recent_messages = cache
        mm._deduplicate_message = types.MethodType(_deduplicate_message, mm)
        mm.dispatch_error = functools.partial(_dispatch_error, mm.dispatch_error, cache)


def duplicate_caches(context: aiocoap.Context) -> list[DuplicateCache]:
    """The bounded duplicate caches of a server context (for the server's counters and tests)."""
    caches = []
    for ri in context.request_interfaces:
        cache = getattr(getattr(ri, "token_interface", None), "_recent_messages", None)
        if isinstance(cache, DuplicateCache):
            caches.append(cache)
    return caches


def _dispatch_error(original: Any, cache: DuplicateCache, error: Exception, remote: Any) -> None:
    """An error ends `remote` (a DTLS session closed, expired or dropped): its duplicate entries go
    with it, so they no longer keep the dead session's objects and responses alive."""
    cache.forget_peer(remote)
    original(error, remote)


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
