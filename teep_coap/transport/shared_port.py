"""A TAM's listening port: refused when another program holds it, shared by the workers of one TAM.

Both bindings can bind with SO_REUSEPORT (aiocoap always does; the HTTP server does when asked), and
then a second server on the same port starts without a word while the kernel splits the peers
between the two. `ensure_port_free` binds the address once without SO_REUSEPORT; any socket already
bound there (with or without the option) makes that fail with EADDRINUSE, reported as `PortInUse`.

The workers of one `tam serve --workers N` do want that sharing: their parent probes the port once,
then starts each worker with SHARED_PORT_ENV naming the protocol and address, and a server bound to
exactly that address skips its own probe (its siblings already hold the port) and, over TCP, binds
with SO_REUSEPORT so the kernel spreads new connections over the workers.

Port 0 is no safe "any free port" under SO_REUSEPORT: Linux may give a socket that binds port 0 with
the option a port another such socket of the same user already holds (measured here: 20 of 1,000
sockets bound at once shared a port), and the two then split each other's datagrams. A CoAP server
asked for port 0 therefore binds the port `pick_port` found free, and a CoAP server that shares its
port with nobody clears SO_REUSEPORT once bound (`keep_port_to_ourselves`), so no later socket can join it.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Literal

from teep_coap.transport.base import TransportError

Protocol = Literal["udp", "tcp"]

SHARED_PORT_ENV = "TEEP_COAP_SHARED_PORT"  # "PROTOCOL/HOST:PORT" the parent of this worker probed for it


class PortInUse(TransportError):
    """Another socket is bound to the address the TAM was asked to serve on."""


def port_in_use(protocol: Protocol, host: str, port: int) -> PortInUse:
    """The error for a busy (host, port), saying what to do about it."""
    return PortInUse(
        f"{protocol.upper()} port {port} on {host} is already in use (another `tam serve`?); "
        "stop it or choose another --bind"
    )


def _socket(protocol: Protocol, host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.socket(family, socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM)


def ensure_port_free(host: str, port: int, protocol: Protocol = "udp") -> None:
    """Raise PortInUse if a socket of `protocol` is already bound to (host, port); port 0 is free."""
    if port == 0:
        return
    probe = _socket(protocol, host)
    try:
        if protocol == "tcp":
            # What every server sets (aiohttp too): connections of a stopped TAM that linger in
            # TIME_WAIT do not make the port busy; a listening socket still does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise port_in_use(protocol, host, port) from None
        raise TransportError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
    finally:
        probe.close()


def pick_port(host: str, protocol: Protocol = "udp") -> int:
    """A port of `protocol` free right now on `host` (port 0 cannot be shared: each worker would
    get its own)."""
    with _socket(protocol, host) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def keep_port_to_ourselves(sock: socket.socket) -> None:
    """Clear SO_REUSEPORT on a bound socket: Linux checks the flag of the sockets already on a port
    at each bind, so from now on no other socket can bind this port, with or without the option."""
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)


def shared_port_value(protocol: Protocol, host: str, port: int) -> str:
    """The SHARED_PORT_ENV value for a worker serving `protocol` on (host, port)."""
    return f"{protocol}/{host}:{port}"


def port_shared_by_parent(protocol: Protocol, host: str, port: int) -> bool:
    """True in a `tam serve --workers` worker serving the address its parent probed."""
    return port != 0 and os.environ.get(SHARED_PORT_ENV) == shared_port_value(protocol, host, port)


__all__ = [
    "SHARED_PORT_ENV", "PortInUse", "ensure_port_free", "keep_port_to_ourselves", "pick_port", "port_in_use",
    "port_shared_by_parent", "shared_port_value",
]  # fmt: skip
