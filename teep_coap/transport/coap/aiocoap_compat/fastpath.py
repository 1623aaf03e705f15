"""A short answer path for one resource: its requests skip aiocoap's per-request pipe machinery.

Written for aiocoap 0.4.17. For every request, aiocoap's `TokenManager.process_request` builds a
`Pipe`, an error-to-message wrapper and a task named after the request's `repr`, then the `Site`
copies the request to strip its path (twice looked up), `Resource.render_to_pipe` runs the Block1
spool and the Block2 cache (a `Message.copy` per block), and the response comes back through the
pipe's event callbacks. py-spy put that at about 11 % of a coaps-psk TAM's busy samples (≈ 0.4 ms
of 3.8 ms per session), for what is, on the TEEP path, one POST in and one response out.

`install_fast_path` puts `FastPath` in front of the server's `process_request`. A POST for exactly
the served path, without Observe, is answered by `respond(request)` (a coroutine: the
resource's own checks and handler) in one task, and its response goes straight to the message
manager (`send_message`, which still piggy-backs it on the ACK or sends the empty ACK after
EMPTY_ACK_DELAY, stores it for duplicates and retransmits a CON). A response larger than the
remote's `maximum_payload_size` (or than a Block2 size the request asked for) is cut as aiocoap's
Block2 cache cuts it and kept here, bounded like that cache (MAX_BLOCK2_RESPONSES, the same
lifetime); a request for a later block is answered from it at once, without a task — over plain
CoAP by the datagram gate and over DTLS inside the session (`later_block`,
`serve_later_blocks_over_dtls`), before the message manager sees it. A Block1 upload (given a
`BlockUploads`: the resource's own checks and Block1 spool) is taken here too: each block but the
last is answered at once (2.31 Continue, 4.08, a refusal), without a task; the last one's assembled
request is rendered in one, its answer cut and kept as above. aiocoap's pipe did all that at a
Pipe, a task and a Block1-spool key per block, and its Block2 cache kept the answer, so the later
blocks of an upload's answer went through the pipe as well: about 35 requests of a coap-constrained
session (64-byte blocks). Anything else — another path or method, Observe, a later block this cache
does not hold, a token still in aiocoap's hands, OSCORE (whose outer request carries no path) — goes
to aiocoap's `process_request` unchanged. When a remote ends while its
answer is computed (aiocoap's pipe would stop the request), the answer is not sent.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiocoap
from aiocoap import ACK, CON, NON, Message
from aiocoap.error import UnparsableMessage
from aiocoap.numbers import TransportTuning
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.options import _write_extended_field_value
from aiocoap.optiontypes import _to_minimum_bytes

from teep_coap.transport.coap.aiocoap_compat.contexts import dtls_pool
from teep_coap.transport.coap.aiocoap_compat.messages import BoundedTimeoutDict, block_key, encode_reply
from teep_coap.transport.coap.aiocoap_compat.site import _SharedOptions
from teep_coap.transport.coap.hardening import MAX_BLOCK2_RESPONSES

log = logging.getLogger("teep_coap.transport.coap")

Responder = Callable[[Message], Awaitable[Message]]


class BlockUploads(Protocol):
    """What the fast path needs of a resource to take Block1 uploads (`TeepResource`)."""

    def take_block(self, request: Message) -> tuple[Message | None, Message | None]:
        """One Block1 request: (its answer now, None) or, on the last block, (None, the whole request)."""

    async def render(self, request: Message) -> Message:
        """The answer to an assembled request (its checks were made block by block)."""


BERT_SZX = 7  # RFC 8323 BERT: not for UDP; left to aiocoap's own cutting


def _no_monitor() -> None:
    """A separate CON response that failed (RST, timeout): nobody waits for it here."""


class FastPath:
    """`process_request` of one server token manager, with the served path answered here."""

    def __init__(
        self,
        token_manager: Any,
        path: tuple[str, ...],
        respond: Responder,
        uploads: BlockUploads | None = None,
    ) -> None:
        self._tm = token_manager
        self._original = token_manager.process_request
        self._original_error = token_manager.dispatch_error
        self._path = path
        self._respond = respond
        self._uploads = uploads
        self._blocks = BoundedTimeoutDict(TransportTuning().MAX_TRANSMIT_WAIT, MAX_BLOCK2_RESPONSES)
        self._tasks: set[asyncio.Task[None]] = set()
        self._rendering: dict[Any, int] = {}  # remote -> answers being computed for it
        self._gone: set[Any] = set()  # remotes among those that ended meanwhile (DTLS session closed)
        self.answered = 0  # requests rendered here (an upload: once, its assembled request)
        self.blocks_taken = 0  # Block1 requests taken here (every block of an upload)
        self.blocks_served = 0  # later Block2 blocks answered from this path's cache
        self.unsent = 0  # answers not sent: their peer's session had ended

    def dispatch_error(self, error: Exception, remote: Any) -> None:
        """A remote ended (as aiocoap's pipe stops its requests): answers still being computed for
        it are not sent, so no separate CON response is retransmitted into a closed session."""
        if remote in self._rendering:
            self._gone.add(remote)
        self._original_error(error, remote)

    def process_request(self, request: Message) -> None:
        opt = request.opt
        if (
            request.code != Code.POST
            or opt.uri_path != self._path
            or opt.observe is not None
            or (opt.block1 is not None and self._uploads is None)
            or (request.token, request.remote) in self._tm.incoming_requests
        ):
            self._original(request)
            return
        if opt.block1 is not None:
            self._take_block(request)
            return
        block2 = opt.block2
        if block2 is not None and block2.block_number > 0:
            block = self._cached_block(request)
            if block is None:  # not cut here: aiocoap's Block2 cache may have it
                self._original(request)
                return
            self._send(request, block)
            return
        self.answered += 1
        task = asyncio.get_running_loop().create_task(self._render(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take_block(self, request: Message) -> None:
        assert self._uploads is not None
        self.blocks_taken += 1
        try:
            answer, assembled = self._uploads.take_block(request)
        except Exception:  # the resource catches what it expects; this is a last resort
            log.exception("taking block of %r failed", request)
            answer, assembled = Message(code=Code.INTERNAL_SERVER_ERROR), None
        if assembled is None:
            self._send(request, answer or Message(code=Code.INTERNAL_SERVER_ERROR))
            return
        self.answered += 1
        task = asyncio.get_running_loop().create_task(self._render(request, assembled))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def later_block(self, request: Message) -> bytes | None:
        """The reply datagram to a follow-up request for a later block of a response this path
        keeps; None for anything else. The plain-CoAP datagram gate sends it before aiocoap's
        message layer sees the request (`EarlyAnswer.later_block`), and over DTLS it goes back into
        the session (`serve_later_blocks_over_dtls`): serving a block again is harmless, so a
        retransmitted CON needs no duplicate-cache entry. A request with No-Response goes the long
        way (the message manager applies it)."""
        opt = request.opt
        block2 = opt.block2
        if (
            block2 is None
            or block2.block_number == 0
            or request.code != Code.POST
            or opt.uri_path != self._path
            or opt.block1 is not None
            or opt.observe is not None
            or opt.no_response is not None
            or (request.token, request.remote) in self._tm.incoming_requests
        ):
            return None
        full = self._kept(request)
        if full is None:
            return None
        datagram = block_datagram(full, request)
        return encode_reply(request, _block(full, request)) if datagram is None else datagram

    def _cached_block(self, request: Message) -> Message | None:
        full = self._kept(request)
        return None if full is None else _block(full, request)

    def _kept(self, request: Message) -> Message | None:
        """The whole response whose later block `request` asks for, counted as served; or None."""
        try:
            full = self._blocks[block_key(request)]
        except KeyError:
            return None
        self.blocks_served += 1
        return full

    async def _render(self, request: Message, assembled: Message | None = None) -> None:
        """Answer `request`; for the last block of an upload, render the `assembled` whole."""
        remote = request.remote
        self._rendering[remote] = self._rendering.get(remote, 0) + 1
        try:
            if assembled is None:
                response = await self._respond(request)
            else:
                assert self._uploads is not None
                response = await self._uploads.render(assembled)
        except Exception:  # the responder catches its handler's errors; this is a last resort
            log.exception("answering %r failed", request)
            response = Message(code=Code.INTERNAL_SERVER_ERROR)
        finally:
            left = self._rendering.pop(remote) - 1
            if left:
                self._rendering[remote] = left
        if remote in self._gone:
            if not left:
                self._gone.discard(remote)
            self.unsent += 1
            return
        block2 = request.opt.block2
        size = len(response.payload)
        if size > request.remote.maximum_payload_size or (block2 is not None and size > block2.size):
            self._blocks[block_key(request)] = response
            response = _block(response, request)
        if assembled is not None:
            # the answer's first (or only) block echoes the last Block1, as aiocoap's pipe does; the
            # kept whole does not, so the later blocks carry none
            response.opt.block1 = request.opt.block1
        self._send(request, response)

    def _send(self, request: Message, response: Message) -> None:
        """What aiocoap's pipe does with a response: address it, then the message manager."""
        response.token = request.token
        response.remote = request.remote.as_response_address()
        response.request = request
        if response.opt.no_response is None:
            response.opt.no_response = request.opt.no_response
        try:
            self._tm.token_interface.send_message(response, _no_monitor)
        except Exception as exc:  # the peer went away meanwhile (DTLS session ended): nothing to do
            log.debug("response to %s not sent: %s", request.remote, exc)

    def pending(self) -> int:
        """Requests whose answer is being computed now."""
        return len(self._tasks)


def _block(full: Message, request: Message) -> Message:
    """Block `request` asks for (or the first, at the remote's block size) of `full`, as aiocoap's
    Block2 cache cuts it, without a deep copy of the options."""
    block2 = request.opt.block2
    if block2 is None:
        number, szx = 0, request.remote.maximum_block_size_exp
    else:
        number, szx = block2.block_number, block2.size_exponent
    if szx == BERT_SZX:
        return full._extract_block(number, szx, request.remote.maximum_payload_size)
    size = 1 << (szx + 4)
    start = number * size
    payload = full.payload
    if start >= len(payload):
        return Message(code=Code.BAD_REQUEST, payload=b"Block request out of bounds")
    end = min(start + size, len(payload))
    chunk = copy.copy(full)
    options = _SharedOptions()
    options._options = {k: list(v) for k, v in full.opt._options.items()}
    chunk.opt = options
    chunk.payload = payload[start:end]
    chunk.mid = None
    chunk.opt.block2 = (number, end < len(payload), szx)
    return chunk


_BLOCK2 = OptionNumber.BLOCK2
_WIRE = "_teep_block_wire"  # attribute of a kept response: what all its blocks share on the wire


def block_datagram(full: Message, request: Message) -> bytes | None:
    """`encode_reply(request, _block(full, request))` for a later block, built from the bytes all
    blocks of `full` share (its code and options, encoded once by aiocoap's encoder and kept with
    it) and the block's own Block2 option and payload slice. None where that does not hold (an
    option numbered from Block2 on, BERT, a block beyond the end): the caller goes the long way.

    A `coap-constrained` session (64-byte blocks) has about 25 later blocks; copying the response,
    its options and encoding them all again for each was about a fifth of the TAM's CPU there.
    `tests/transport/test_coap_fast_path.py` compares the bytes with the long way's."""
    block2 = request.opt.block2
    number, szx = block2.block_number, block2.size_exponent
    if szx == BERT_SZX:
        return None
    wire = getattr(full, _WIRE, None)
    if wire is None:
        numbers = full.opt._options
        fits = all(n < _BLOCK2 for n in numbers)
        wire = (bytes((int(full.code),)), full.opt.encode(), max(numbers, default=0)) if fits else ()
        setattr(full, _WIRE, wire)
    if not wire:
        return None
    code, options, last = wire
    size = 1 << (szx + 4)
    start = number * size
    payload = full.payload
    if start >= len(payload):
        return None
    end = min(start + size, len(payload))
    value = _to_minimum_bytes((number << 4) + ((end < len(payload)) << 3) + szx)
    delta, extended_delta = _write_extended_field_value(_BLOCK2 - last)
    length, extended_length = _write_extended_field_value(len(value))
    token = request.token
    if request.mtype is CON:
        mtype, mid = ACK, request.mid
    else:
        mtype, mid = NON, int.from_bytes(os.urandom(2), "big")
    return b"".join(
        (
            bytes((0x40 | (int(mtype) << 4) | len(token),)),  # version 1, type, token length
            code,
            mid.to_bytes(2, "big"),
            token,
            options,
            bytes(((delta << 4) | length,)),
            extended_delta,
            extended_length,
            value,
            b"\xff",
            payload[start:end],
        )
    )


def serve_later_blocks_over_dtls(context: aiocoap.Context, fast: FastPath) -> bool:
    """Send the later blocks `fast` keeps straight back into the DTLS session they are asked on,
    as the plain-CoAP datagram gate does (`EarlyAnswer.later_block`): the decrypted request is not
    dispatched to the message manager. The session already authenticated the peer. False if
    `context` has no DTLS server transport."""
    pool = dtls_pool(context)
    if pool is None:
        return False
    plaintext = pool._message_interface._plaintext_interface
    dispatch = plaintext._received_datagram

    def received_plaintext(address: Any, datagram: bytes) -> None:
        try:
            request = Message.decode(datagram, remote=address)
        except UnparsableMessage:
            dispatch(address, datagram)  # aiocoap logs and ignores it
            return
        block = fast.later_block(request) if request.mtype in (CON, NON) else None
        if block is None:
            plaintext._mman.dispatch_message(request)
            return
        try:
            address.send(block)
        except Exception as exc:  # the session ended meanwhile: nothing to send it into
            log.debug("block for %s not sent: %s", address, exc)

    plaintext._received_datagram = received_plaintext
    return True


def install_fast_path(
    context: aiocoap.Context, path: tuple[str, ...], respond: Responder, uploads: BlockUploads | None = None
) -> FastPath | None:
    """Answer POSTs for `path` on the server `context` with `respond`, and Block1 uploads to it with
    `uploads` if given (see the module's docstring); None if the context has no token manager to put
    it in front of."""
    for ri in context.request_interfaces:
        if hasattr(ri, "incoming_requests") and hasattr(ri, "token_interface"):
            fast = FastPath(ri, path, respond, uploads)
            ri.process_request = fast.process_request
            ri.dispatch_error = fast.dispatch_error
            return fast
    return None


__all__ = ["BlockUploads", "FastPath", "Responder", "install_fast_path", "serve_later_blocks_over_dtls"]
