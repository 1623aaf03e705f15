"""A UDP port deliberately shared by the workers of one `tam serve --workers N`.

The busy-port refusal (server_socket.ensure_port_free) keeps a second TAM from silently sharing a
port through aiocoap's SO_REUSEPORT. The workers of one TAM do want exactly that sharing: their
parent probes the port once, then starts each worker with SHARED_PORT_ENV naming the address, and a
server bound to that address skips its own probe (the siblings already hold it).
"""

from __future__ import annotations

import os

SHARED_PORT_ENV = "TEEP_COAP_SHARED_PORT"  # "HOST:PORT" the parent of this worker probed for it


def shared_port_value(host: str, port: int) -> str:
    """The SHARED_PORT_ENV value for a worker serving on (host, port)."""
    return f"{host}:{port}"


def port_shared_by_parent(host: str, port: int) -> bool:
    """True in a `tam serve --workers` worker serving the address its parent probed."""
    return port != 0 and os.environ.get(SHARED_PORT_ENV) == shared_port_value(host, port)


__all__ = ["SHARED_PORT_ENV", "port_shared_by_parent", "shared_port_value"]
