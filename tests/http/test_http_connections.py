"""Connections that never finish a request cannot starve the HTTP(S) TAM (transport/http/connections.py).

Before: 64 connections that sent a request's headers and two bytes of its body made the TAM answer
503 to every device, and about 1,000 that sent half a request line took all of a TAM's 1,024 file
descriptors; neither ever ended. Real sockets on loopback against a real `HttpTamServer`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from teep_coap.model.codes import MEDIA_TYPE_TEEP_CBOR
from teep_coap.security import certs
from teep_coap.transport.base import PeerInfo
from teep_coap.transport.http import HttpServerOptions, HttpTamServer
from teep_coap.transport.http import connections as http_connections
from teep_coap.transport.http.connections import ConnectionGuard

pytestmark = pytest.mark.timeout(120)

CBOR = {"Content-Type": MEDIA_TYPE_TEEP_CBOR, "Accept": MEDIA_TYPE_TEEP_CBOR}


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> Any:
        return ("192.0.2.1", 1) if name == "peername" else None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_new_connections_push_out_only_unfinished_ones_and_never_a_busy_one() -> None:
    clock = Clock()
    guard = ConnectionGuard(max_connections=4, max_unfinished=3, deadline=10, clock=clock)
    conns = {name: FakeTransport() for name in "abcdefg"}
    guard.opened("a", conns["a"])
    guard.request_complete("a")  # a's request is with the handler
    for name in "bcd":
        clock.now += 1
        guard.opened(name, conns[name])
    assert guard.open == 4 and not any(t.aborted for t in conns.values())
    guard.opened("e", conns["e"])  # full: the oldest unfinished (b) goes, busy a stays
    assert conns["b"].aborted and not conns["a"].aborted and guard.open == 4
    guard.closed("b")  # aiohttp's connection_lost after the abort changes nothing
    for name in "cde":
        guard.request_complete(name)
    guard.opened("f", conns["f"])  # all four busy: the new one is refused
    assert conns["f"].aborted and guard.refused == 1 and guard.open == 4


def test_the_deadline_runs_from_opening_or_the_last_answer() -> None:
    clock = Clock()
    guard = ConnectionGuard(max_connections=10, max_unfinished=10, deadline=10, clock=clock)
    idle, answered, refused, slow = FakeTransport(), FakeTransport(), FakeTransport(), FakeTransport()
    guard.opened("idle", idle)
    guard.opened("answered", answered)
    guard.opened("refused", refused)
    clock.now += 5
    guard.opened("slow", slow)
    guard.request_complete("answered")
    clock.now += 4
    guard.answered("answered")  # its next request has 10 s from now
    guard.answered("refused")  # refused before the handler (a 405, say): a new deadline too
    clock.now += 1.5
    assert guard.sweep() == 1 and idle.aborted and not answered.aborted and not slow.aborted
    clock.now += 9
    assert guard.sweep() == 3 and answered.aborted and refused.aborted and slow.aborted
    assert guard.closed_late == 4 and guard.open == 0
    guard.answered("gone")  # a connection closed meanwhile: nothing


def test_the_cap_follows_the_open_file_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert http_connections.connection_cap(10**6) == (10**6 if soft == resource.RLIM_INFINITY else soft // 2)
    assert http_connections.connection_cap(20) == min(20, max(16, soft // 2))


async def _echo(payload: bytes, peer: PeerInfo) -> bytes | None:
    return payload[::-1]


def _hold(port: int, data: bytes, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(data)
        held.append(sock)
    return held


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed `sock` (its end of file, or a reset), within 2 s."""
    sock.settimeout(2)
    try:
        while sock.recv(4096):
            pass  # an answer before the close (none is expected: the request never finished)
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


async def _post(uri: str, body: bytes, ssl_ctx: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(uri, data=body, headers=CBOR, ssl=ssl_ctx if ssl_ctx is not None else True) as r,
    ):
        return r.status, await r.read()


async def test_bodies_that_never_arrive_do_not_make_the_tam_answer_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_connections, "REQUEST_DEADLINE", 1.0)
    async with HttpTamServer(_echo, HttpServerOptions(max_concurrent_requests=64)) as server:
        head = (
            f"POST /tam HTTP/1.1\r\nHost: x\r\nContent-Type: {MEDIA_TYPE_TEEP_CBOR}\r\n"
            f"Accept: {MEDIA_TYPE_TEEP_CBOR}\r\nContent-Length: 1000\r\n\r\nab"
        ).encode()
        held = await asyncio.to_thread(_hold, server.port, head, 80)
        try:
            await asyncio.sleep(0.3)
            assert await _post(server.uri, b"hello") == (200, b"olleh")  # was 503
            await asyncio.sleep(2.0)  # past the deadline: the server closed them
            closed = await asyncio.to_thread(lambda: sum(_closed_by_server(s) for s in held))
            assert closed == len(held)
            assert server._guard is not None and server._guard.closed_late >= len(held)
        finally:
            for sock in held:
                sock.close()


async def test_half_requests_cannot_take_every_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_connections, "MAX_CONNECTIONS", 32)
    monkeypatch.setattr(http_connections, "MAX_UNFINISHED", 16)
    async with HttpTamServer(_echo) as server:
        held = await asyncio.to_thread(_hold, server.port, b"POST /tam HTTP/1.1\r\nHo", 200)
        try:
            await asyncio.sleep(0.3)
            guard = server._guard
            assert guard is not None and guard.open <= 16 and guard.pushed_out >= 200 - 16
            assert await _post(server.uri, b"hello") == (200, b"olleh")
        finally:
            for sock in held:
                sock.close()


async def test_over_https_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_connections, "REQUEST_DEADLINE", 1.0)
    bundle = certs.write_bundle(tmp_path / "certs")
    server_ctx = certs.server_ssl_context(bundle.server_cert, bundle.server_key)
    options = HttpServerOptions(ssl_context=server_ctx, max_concurrent_requests=8)
    client_ctx = certs.client_ssl_context(bundle.ca_cert)
    async with HttpTamServer(_echo, options) as server:

        def hold_tls(count: int) -> list[ssl.SSLSocket]:
            held = []
            for _ in range(count):
                raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                tls = client_ctx.wrap_socket(raw, server_hostname="127.0.0.1")
                tls.sendall(
                    b"POST /tam HTTP/1.1\r\nHost: x\r\nContent-Type: application/teep+cbor\r\n"
                    b"Accept: application/teep+cbor\r\nContent-Length: 100\r\n\r\nab"
                )
                held.append(tls)
            return held

        held = await asyncio.to_thread(hold_tls, 12)
        try:
            await asyncio.sleep(0.3)
            assert await _post(server.uri, b"hello", client_ctx) == (200, b"olleh")
            await asyncio.sleep(2.0)
            guard = server._guard
            assert guard is not None and guard.closed_late >= 12 and guard.open == 0
        finally:
            for sock in held:
                sock.close()


async def test_connections_that_never_start_tls_are_closed_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """They are not aiohttp's until their handshake is done, so not the guard's: asyncio held them 60 s."""
    monkeypatch.setattr(http_connections, "REQUEST_DEADLINE", 1.0)
    bundle = certs.write_bundle(tmp_path / "certs")
    options = HttpServerOptions(ssl_context=certs.server_ssl_context(bundle.server_cert, bundle.server_key))
    async with HttpTamServer(_echo, options) as server:
        held = await asyncio.to_thread(_hold, server.port, b"", 20)
        try:
            await asyncio.sleep(1.5)
            closed = await asyncio.to_thread(lambda: sum(_closed_by_server(s) for s in held))
            assert closed == len(held)
            client_ctx = certs.client_ssl_context(bundle.ca_cert)
            assert await _post(server.uri, b"hello", client_ctx) == (200, b"olleh")
        finally:
            for sock in held:
                sock.close()


def test_a_serving_process_raises_its_open_file_limit_to_the_hard_one() -> None:
    import resource
    import subprocess
    import sys

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.fail(f"this machine's hard open-file limit is {hard}: too low to test raising it")

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    code = (
        "import resource; from teep_coap.cli.serving import raise_open_file_limit as r; "
        "print(r(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=low_soft_limit, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    returned, soft = (int(v) for v in out.stdout.split())
    assert returned == soft and soft > 256
    assert soft == (hard if hard != resource.RLIM_INFINITY else 1 << 20)


async def test_tls_handshakes_in_progress_are_bounded_in_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections that never send a ClientHello were bounded only in time (10 s each), so a few
    thousand new ones a second held every descriptor; now a new one closes the oldest beyond
    MAX_TLS_HANDSHAKES, and a device's handshake, milliseconds long, still completes."""
    monkeypatch.setattr(http_connections, "MAX_TLS_HANDSHAKES", 16)
    bundle = certs.write_bundle(tmp_path / "certs")
    options = HttpServerOptions(ssl_context=certs.server_ssl_context(bundle.server_cert, bundle.server_key))
    async with HttpTamServer(_echo, options) as server:
        assert server._runner is not None
        (site,) = server._runner.sites
        held = await asyncio.to_thread(_hold, server.port, b"", 40)
        try:
            for _ in range(50):  # the server accepts them one turn of its loop at a time
                if site.handshakes.pushed_out >= 24:
                    break
                await asyncio.sleep(0.05)
            assert len(site.handshakes) == 16 and site.handshakes.pushed_out == 24
            closed = await asyncio.to_thread(lambda: [_closed_by_server(s) for s in held[:24]])
            assert all(closed)  # the oldest 24, closed at once (not after the 10 s deadline)
            newest = held[-1]
            newest.settimeout(0.5)
            with pytest.raises(TimeoutError):
                newest.recv(1)  # still open, waiting for its ClientHello
            client_ctx = certs.client_ssl_context(bundle.ca_cert)
            assert await _post(server.uri, b"hello", client_ctx) == (200, b"olleh")
        finally:
            for sock in held:
                sock.close()
    assert len(site.handshakes) == 0  # the server stopped: none left behind
