"""The TAM's UDP socket: a receive buffer for bursts (the busy-port refusal: transport.shared_port),
and no ICMP errors queued where the event loop would stop reading at one.

A burst of clients (every device of a site powering up at once) sends hundreds of ClientHellos and
retransmissions before the TAM reads one. Linux's default receive buffer (net.core.rmem_default,
208 KiB) holds about 200 small datagrams on loopback (each costs its skb's true size, not its
payload); the rest are dropped (`RcvbufErrors` in /proc/net/snmp) and each drop costs the client a
retransmission timeout. `enlarge_receive_buffer` asks for RECEIVE_BUFFER bytes; the kernel caps the
request at net.core.rmem_max, which is logged when it is the smaller.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from aiocoap.util import socknumbers

log = logging.getLogger("teep_coap.transport.coap.server")

RECEIVE_BUFFER = 4 * 1024 * 1024  # bytes asked for the server socket's SO_RCVBUF


def enlarge_receive_buffer(sock: socket.socket, wanted: int = RECEIVE_BUFFER) -> int:
    """Ask for a `wanted`-byte receive buffer; return what the kernel granted (it reports double)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    except OSError as exc:
        log.warning("cannot enlarge the UDP receive buffer: %s", exc)
        return 0
    if granted < wanted:
        log.warning(
            "UDP receive buffer is %d bytes, not %d: raise net.core.rmem_max for bursts of clients",
            granted,
            wanted,
        )
    return granted


def stops_reading_on_socket_error(loop: asyncio.AbstractEventLoop) -> bool:
    """uvloop: a descriptor watched with `add_reader` that reports an error (EPOLLERR) is no longer
    watched (libuv's poll handle stops); asyncio's selector loops call the reader and go on."""
    return type(loop).__module__.split(".")[0] == "uvloop"


def ignore_icmp_errors(sock: socket.socket) -> None:
    """Queue no ICMP errors on `sock` (IP_RECVERR and IPV6_RECVERR off, which aiocoap's udp6 transport
    turns on to learn of unreachable peers early).

    A queued error makes the socket report EPOLLERR, and under uvloop the reader of aiocoap's plain
    CoAP, OSCORE and EDHOC transport (`add_reader`) then stops for good: one ICMP "port unreachable",
    sent by any peer that closed its socket before our answer arrived, and the TAM never read again
    (docs/scale.md, sessions 22 and 23). Without the option an unconnected UDP socket is not told of
    ICMP errors at all; what aiocoap loses is the early end of its retransmissions to such a peer."""
    if not socknumbers.HAS_RECVERR:
        return
    for level, option in (
        (socket.IPPROTO_IPV6, socknumbers.IPV6_RECVERR),
        (socket.IPPROTO_IP, socknumbers.IP_RECVERR),
    ):
        try:
            sock.setsockopt(level, option, 0)
        except OSError as exc:  # an IPv4-only socket has no IPv6 level
            log.debug("cannot turn off ICMP error reports (level %d): %s", level, exc)


__all__ = ["RECEIVE_BUFFER", "enlarge_receive_buffer", "ignore_icmp_errors", "stops_reading_on_socket_error"]
