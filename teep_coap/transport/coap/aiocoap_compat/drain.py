"""A server socket reads every datagram already queued when it wakes up, up to READ_BATCH.

asyncio's datagram transport, and aiocoap 0.4.17's recvmsg transport for plain CoAP (modelled on
it), read one datagram per readiness callback. A TAM busy with one message while others queue pays
a whole event-loop round per datagram: `epoll_wait`, the ready list, the callback, and on plain CoAP
a second `recvmsg` on the socket's error queue. Reading on until the socket is empty (at most
READ_BATCH, so timers and other sockets still get their turn) saved about 0.09 ms (3.5 %) of TAM
CPU per coaps-psk session in `bench sessions` and nothing measurable over plain CoAP (docs/scale.md,
"session 8"); an idle socket costs one extra `recvmsg` that finds nothing.

Only the server transports of a context are changed (`drain_server_reads`): aiocoap's udp6 transport
looks its `_read_ready` up at every wake-up, so an instance attribute replaces it; asyncio's transport
(aiocoap's tinydtls_server, Python 3.11's selector loop) registered its bound method with the loop,
so its reader is registered again with the draining one (the loop's `_remove_reader` / `_add_reader`:
the public `add_reader` refuses a descriptor a transport owns).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiocoap
from aiocoap.util.asyncio.recvmsg import RecvmsgSelectorDatagramTransport

from teep_coap.transport.coap.aiocoap_compat.contexts import message_interfaces

log = logging.getLogger("teep_coap.transport.coap")

READ_BATCH = 16  # datagrams read per wake-up at most (the first one included)


def _drain_recvmsg(transport: RecvmsgSelectorDatagramTransport) -> None:
    """aiocoap's udp6 transport: its own read (error queue, one datagram), then what is queued."""
    read_one = transport._read_ready
    sock = transport.get_extra_info("socket")

    def read_ready() -> None:
        read_one()
        for _ in range(READ_BATCH - 1):
            protocol = transport._protocol
            if protocol is None or sock.fileno() < 0:  # closed meanwhile
                return
            try:
                data, ancdata, flags, address = sock.recvmsg(transport.max_size, 1024)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                protocol.error_received(exc)
                return
            protocol.datagram_msg_received(data, ancdata, flags, address)

    transport._read_ready = read_ready


def _drain_asyncio(transport: Any, loop: asyncio.AbstractEventLoop) -> bool:
    """asyncio's selector datagram transport: its reader registered again, reading a batch."""
    sock = getattr(transport, "_sock", None)  # the socket itself (get_extra_info wraps it)
    if sock is None or not hasattr(transport, "_conn_lost") or not hasattr(sock, "recvfrom"):
        return False
    fd = sock.fileno()

    def read_ready() -> None:
        for _ in range(READ_BATCH):
            if transport._conn_lost:
                return
            try:
                data, address = sock.recvfrom(transport.max_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                transport._protocol.error_received(exc)
                return
            transport._protocol.datagram_received(data, address)

    selector_loop: Any = loop
    if not selector_loop._remove_reader(fd):  # not reading (paused or closed): leave it as it is
        return False
    selector_loop._add_reader(fd, read_ready)
    return True


def drain_server_reads(context: aiocoap.Context) -> int:
    """Make the server transports of `context` read up to READ_BATCH queued datagrams per wake-up;
    how many were changed (0 when none was found)."""
    changed = 0
    loop = asyncio.get_running_loop()
    for mi in message_interfaces(context):
        transport = getattr(mi, "transport", None)
        if isinstance(transport, RecvmsgSelectorDatagramTransport):
            _drain_recvmsg(transport)
            changed += 1
            continue
        pooled = getattr(getattr(mi, "_pool", None), "_transport", None)  # tinydtls_server's socket
        if pooled is not None and _drain_asyncio(pooled, loop):
            changed += 1
    if not changed:
        log.debug("no server transport to drain in %r", context)
    return changed


__all__ = ["READ_BATCH", "drain_server_reads"]
