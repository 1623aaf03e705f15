"""A CoAP TAM's UDP port is its own: aiocoap binds with SO_REUSEPORT, and on Linux a socket bound
with that option to port 0 may be given a port another such socket holds (the two then split each
other's datagrams: a device's QueryResponse reached another TAM as "unknown signer")."""

from __future__ import annotations

import contextlib
import errno
import resource
import socket
from collections.abc import Iterator

import pytest
from coap_helpers import Creds, quick

from teep_coap.transport.base import PeerInfo
from teep_coap.transport.coap import CoapServer
from teep_coap.transport.coap.credentials import load_tam_credentials

pytestmark = pytest.mark.timeout(60)


async def _nothing(payload: bytes, peer: PeerInfo) -> bytes | None:
    return None


def _reuseport_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


@contextlib.contextmanager
def _holders(count: int) -> Iterator[set[int]]:
    """`count` sockets bound to port 0 with SO_REUSEPORT (as other aiocoap servers of this user);
    yields their ports."""
    socks = [_reuseport_socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        yield {sock.getsockname()[1] for sock in socks}
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("name", ["coap", "coaps-psk", "coap-oscore"])
async def test_nobody_can_join_a_serving_port(name: str, creds: Creds) -> None:
    devices = load_tam_credentials(creds.tam_dir) if name != "coap" else ()
    async with CoapServer(quick(name), _nothing, devices=devices) as server:
        with _reuseport_socket() as intruder, pytest.raises(OSError) as refused:
            intruder.bind(("127.0.0.1", server.port))
        assert refused.value.errno == errno.EADDRINUSE


def _descriptors_for(wanted: int) -> int:
    """Raise this process's open-file limit toward `wanted` + 200 (up to the hard limit); how many
    holder sockets fit under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + 200 if hard == resource.RLIM_INFINITY else min(wanted + 200, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return wanted if soft == resource.RLIM_INFINITY else min(wanted, soft - 200)


async def test_port_zero_is_never_a_port_another_reuseport_socket_holds() -> None:
    """With 2,000 such sockets bound, each of 30 servers asked for port 0 would land on one of their
    ports with a probability of about 7 % if it bound port 0 itself with SO_REUSEPORT (fewer
    sockets where the open-file limit cannot be raised that far)."""
    count = _descriptors_for(2000)
    assert count >= 500, f"the open-file limit leaves room for {count} sockets only"
    with _holders(count) as held:
        for _ in range(30):
            async with CoapServer(quick("coap"), _nothing) as server:
                assert server.port not in held
