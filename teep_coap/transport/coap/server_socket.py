"""The TAM's UDP socket: a receive buffer for bursts (the busy-port refusal: transport.shared_port).

A burst of clients (every device of a site powering up at once) sends hundreds of ClientHellos and
retransmissions before the TAM reads one. Linux's default receive buffer (net.core.rmem_default,
208 KiB) holds about 200 small datagrams on loopback (each costs its skb's true size, not its
payload); the rest are dropped (`RcvbufErrors` in /proc/net/snmp) and each drop costs the client a
retransmission timeout. `enlarge_receive_buffer` asks for RECEIVE_BUFFER bytes; the kernel caps the
request at net.core.rmem_max, which is logged when it is the smaller.
"""

from __future__ import annotations

import logging
import socket

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


__all__ = ["RECEIVE_BUFFER", "enlarge_receive_buffer"]
