"""Finding the message interfaces, the DTLS pool and the socket inside an aiocoap Context."""

from __future__ import annotations

import logging
import socket
from typing import Any

import aiocoap
import aiocoap.error
import aiocoap.meta
import aiocoap.resource

log = logging.getLogger("teep_coap.transport.coap")


def message_interfaces(context: aiocoap.Context) -> list[Any]:
    found = []
    for ri in context.request_interfaces:
        mi = getattr(getattr(ri, "token_interface", None), "message_interface", None)
        if mi is not None:
            found.append(mi)
    return found


def dtls_pool(context: aiocoap.Context) -> Any:
    for mi in message_interfaces(context):
        pool = getattr(mi, "_pool", None)
        if pool is not None and hasattr(pool, "_connections"):
            return pool
    return None


def server_socket(context: aiocoap.Context) -> socket.socket | None:
    """The UDP socket the (single) server transport of `context` is bound to, None if not found."""
    for mi in message_interfaces(context):
        transport = getattr(mi, "transport", None)
        if transport is None:  # tinydtls_server / simplesocketserver keep it in their pool
            transport = getattr(getattr(mi, "_pool", None), "_transport", None)
        if transport is not None:
            sock: socket.socket = transport.get_extra_info("socket")
            return sock
    return None
