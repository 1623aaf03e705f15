"""The TAM's UDP socket: refuse a port another server holds, and a receive buffer for bursts.

aiocoap binds its server sockets with SO_REUSEPORT, so a second `tam serve` on the same port starts
without a word and the kernel then spreads datagrams between the two processes: half the DTLS
handshakes and sessions land on the wrong TAM. `ensure_port_free` binds the address once without
SO_REUSEPORT before aiocoap does; any socket already bound there (with or without the option) makes
that fail with EADDRINUSE.

A burst of clients (every device of a site powering up at once) sends hundreds of ClientHellos and
retransmissions before the TAM reads one. Linux's default receive buffer (net.core.rmem_default,
208 KiB) holds about 200 small datagrams on loopback (each costs its skb's true size, not its
payload); the rest are dropped (`RcvbufErrors` in /proc/net/snmp) and each drop costs the client a
retransmission timeout. `enlarge_receive_buffer` asks for RECEIVE_BUFFER bytes; the kernel caps the
request at net.core.rmem_max, which is logged when it is the smaller.
"""

from __future__ import annotations

import errno
import logging
import socket

from teep_coap.transport.base import TransportError

log = logging.getLogger("teep_coap.transport.coap.server")

RECEIVE_BUFFER = 4 * 1024 * 1024  # bytes asked for the server socket's SO_RCVBUF


class PortInUse(TransportError):
    """Another socket is bound to the address the TAM was asked to serve on."""


def ensure_port_free(host: str, port: int) -> None:
    """Raise PortInUse if a UDP socket is already bound to (host, port); port 0 is always free."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"UDP port {port} on {host} is already in use (another `tam serve`?); "
                "stop it or choose another --bind"
            ) from None
        raise TransportError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
    finally:
        probe.close()


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


__all__ = ["RECEIVE_BUFFER", "PortInUse", "enlarge_receive_buffer", "ensure_port_free"]
