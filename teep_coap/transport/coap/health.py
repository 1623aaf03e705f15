"""`GET /health` over CoAP (transport.health says what the answer means and why it is cheap).

Over plain CoAP the datagram gate (early_answer) answers it before aiocoap's request pipeline, at
the cost of a decode and an encode; its answer (at most 4 + 8 + 2 + 14 bytes with the longest token)
is smaller than 3x the shortest GET /health (11 bytes plus the same token), so no spoofed request
gets an amplified answer, Echo or not. Over OSCORE an unprotected GET reaches it through aiocoap's
site, as any unprotected request does; over DTLS only a peer that completed a handshake reaches it.
"""

from __future__ import annotations

import aiocoap.resource
from aiocoap import Message
from aiocoap.numbers.codes import Code

from teep_coap.transport.health import HEALTH_PATH, health_text

HEALTH = tuple(p for p in HEALTH_PATH.split("/") if p)  # the Uri-Path options of the health path
TEXT_PLAIN = 0  # Content-Format text/plain; charset=utf-8


def health_answer() -> Message:
    """2.05 `ok pid N`: the same few bytes for every GET."""
    return Message(code=Code.CONTENT, payload=health_text().encode(), content_format=TEXT_PLAIN)


class HealthResource(aiocoap.resource.Resource):
    """The health path as an aiocoap resource (DTLS, OSCORE: no datagram gate in front)."""

    async def render_get(self, request: Message) -> Message:
        return health_answer()


__all__ = ["HEALTH", "HealthResource", "health_answer"]
