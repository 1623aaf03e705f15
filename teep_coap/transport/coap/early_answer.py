"""Answer the cheapest-to-refuse plain-CoAP requests before aiocoap's request pipeline sees them.

Every request that reaches the TEEP resource costs the TAM a fixed 200–450 µs in aiocoap (message
manager, duplicate cache, Site look-up, block-wise checks, response pipe), whatever its size: a
12-byte GET or a 13-byte empty POST cost 17–39 ms of CPU per KiB received, above the target of
10 ms/KiB for anything an unauthenticated peer can send. `EarlyAnswer` looks at each datagram the
plain-CoAP server socket receives (installed by `aiocoap_compat.install_datagram_gate`), decodes it
once with aiocoap's own `Message` codec, and answers on the spot, statelessly:

- not a CoAP 1 datagram, or options that do not decode: dropped (aiocoap drops them too);
- a request for a path the server does not serve: 4.04, no payload (aiocoap's Site would answer the
  same after its whole pipeline: 4–7-byte junk with an odd Uri-Path cost 10 ms of CPU per KiB);
- a request for the TEEP path with a method other than POST: 4.05, no payload;
- a GET of the health path (`coap.health`): its 2.05 `ok pid N`, a few bytes; another method there: 4.05;
- a POST from an address that has not proven itself (RFC 9175 Echo, `echo.EchoGuard`): 4.01 + Echo,
  unless it is a padded connect (the resource answers it within 3x its size);
- a Block1 block smaller than MIN_BLOCK_SIZE (32 bytes): 4.00. Each block costs the same fixed
  pipeline work, so 16-byte blocks made a body cost 11 ms of CPU per KiB; no profile uses blocks
  below 64 bytes (`check tam` probes with 32), and the peer is not authenticated yet on plain CoAP;
- a single-block POST with a Content-Format or Accept the binding does not serve: 4.15 / 4.06 with
  the same diagnostic the resource gives.

Everything else (a valid POST, block-wise transfers, the other paths served, empty messages,
responses, Resets) goes on to aiocoap unchanged, and the resource still makes every one of these
checks (the gate is a shortcut, not the only guard). A repeated CON gets the same answer again:
nothing was stored. Plain CoAP only: DTLS records and OSCORE-protected requests are not readable here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiocoap import CON, NON, Message
from aiocoap.error import UnparsableMessage
from aiocoap.numbers.codes import Code

from teep_coap.transport.coap.aiocoap_compat import encode_reply
from teep_coap.transport.coap.echo import EchoGuard
from teep_coap.transport.coap.health import HEALTH, health_answer
from teep_coap.transport.coap.options import CoapOptions
from teep_coap.transport.junklog import JUNK

log = logging.getLogger("teep_coap.transport.coap.server")

MIN_BLOCK_SZX = 1  # RFC 7959 SZX: 32-byte blocks; profiles use 64 and up (coap-constrained: 64)
MIN_BLOCK_SIZE = 2 ** (MIN_BLOCK_SZX + 4)
DIAGNOSTIC_MAX = 120  # bytes of diagnostic payload in error responses (RFC 7252 §5.5.2)
_FIRST_RESPONSE_CODE = 64  # 2.00: codes below are requests (1..31) or empty (0)

Counter = Callable[[Code], None]


class EarlyAnswer:
    """`gate(datagram, remote) -> True (pass on) | Message (pass on, already decoded: aiocoap does not
    decode it again) | False (drop) | bytes (the answer to send)`."""

    def __init__(
        self,
        profile: CoapOptions,
        echo: EchoGuard | None,
        count: Counter,
        other_paths: frozenset[tuple[str, ...]] = frozenset(),
    ) -> None:
        link = profile.transport
        self.path = tuple(p for p in link.path.split("/") if p)
        self.other_paths = other_paths  # served beside the TEEP path (their requests go on to aiocoap)
        self.content_format = link.content_format
        self.echo = echo
        self.count = count
        self.answered = 0  # datagrams refused here (tests and the benchmark read it)
        self.dropped = 0  # datagrams dropped here
        self.health_answered = 0  # GETs of the health path answered here
        # `FastPath.later_block`: the Block2 follow-ups of an admitted peer answered without aiocoap
        # (each went through the message manager, its duplicate cache and a timer: with a 1 KiB
        # component that fourth exchange was most of what plain CoAP cost the TAM beyond HTTP)
        self.later_block: Callable[[Message], bytes | None] | None = None

    def __call__(self, datagram: bytes, remote: Any) -> bytes | bool | Message:
        if len(datagram) < 4 or datagram[0] >> 6 != 1:
            self.dropped += 1
            return False
        code = datagram[1]
        if code == 0 or code >= _FIRST_RESPONSE_CODE:  # ping / empty ACK / RST / a response
            return True
        try:
            request = Message.decode(datagram, remote)
        except UnparsableMessage:
            self.dropped += 1
            return False
        if request.mtype not in (CON, NON):
            return request
        path = request.opt.uri_path
        answer: Message | None
        if path == HEALTH:
            if request.code == Code.GET:  # served, not refused: not counted in `answered`
                self.health_answered += 1
                return encode_reply(request, health_answer())
            answer = self._refuse(request, Code.METHOD_NOT_ALLOWED, "")
        elif path != self.path:
            if path in self.other_paths:
                return request
            answer = self._refuse(request, Code.NOT_FOUND, "")
        else:
            answer = self._answer(request, len(datagram))
            if answer is None:  # admitted: a later block of a kept response is sent from here
                block = self.later_block(request) if self.later_block is not None else None
                return request if block is None else block
        if answer is None:
            return request
        self.answered += 1
        return encode_reply(request, answer)

    def _answer(self, request: Message, size: int) -> Message | None:
        """The refusal for `request` (`size` bytes on the wire), or None if aiocoap and the resource
        should handle it."""
        if request.code != Code.POST:
            return self._refuse(request, Code.METHOD_NOT_ALLOWED, "")
        if self.echo is not None:
            address = str(request.remote.hostinfo)
            connect = size if not request.payload else 0  # a padded connect is served within 3x
            if self.echo.admit(address, request.opt.echo, connect_size=connect) is None:
                return self.echo.challenge(address)
        block1 = request.opt.block1
        if block1 is not None and block1.size_exponent < MIN_BLOCK_SZX:
            return self._refuse(
                request, Code.BAD_REQUEST, f"Block1 blocks below {MIN_BLOCK_SIZE} bytes are not served"
            )
        if block1 is not None or request.opt.block2 is not None:
            return None  # block-wise: the resource judges the assembled request
        cf, wanted = request.opt.content_format, self.content_format
        if (cf is not None and int(cf) != wanted) or (request.payload and cf is None):
            return self._refuse(request, Code.UNSUPPORTED_CONTENT_FORMAT, f"Content-Format must be {wanted}")
        if request.opt.accept is not None and int(request.opt.accept) != wanted:
            return self._refuse(request, Code.NOT_ACCEPTABLE, f"only Content-Format {wanted} is served")
        return None

    def _refuse(self, request: Message, code: Code, reason: str) -> Message:
        self.count(code)
        log.warning("rejected %s from %s: %s", code, request.remote.hostinfo, reason or code.name, extra=JUNK)
        return Message(code=code, payload=reason.encode()[:DIAGNOSTIC_MAX])


__all__ = ["EarlyAnswer"]
