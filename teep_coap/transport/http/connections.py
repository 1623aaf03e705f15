"""How many TCP connections the HTTP(S) TAM holds, and for how long one may take to send a request.

aiohttp holds a connection that has sent part of a request for as long as the peer likes, and the
server counted a request whose body was still arriving among its requests in flight. So, tried on
loopback before this module: 64 connections that each sent a request's headers and two bytes of
its body made the TAM answer 503 to every device, and about 1,000 connections that each sent half a
request line used up a TAM's 1,024 file descriptors, so no device could connect; neither ever ended.

`ConnectionGuard` keeps every connection in one of two states. *Unfinished*: opened, or answered,
and not yet through a whole request (headers and body); anyone can hold one of these. *Busy*: its
request is with the TAM's handler (whose own time limit bounds it). An unfinished connection is
closed once it has been unfinished for `deadline` seconds; at most `max_unfinished` are kept (the
oldest is closed for a new one), and when `max_connections` are open a new connection closes the
oldest unfinished one, or is itself closed when all are busy. A busy connection is never closed
for another: a flood of connections only ever pushes out other unfinished ones (and idle
keep-alive connections, which are unfinished too: a client opens a new one).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

from teep_coap.transport.junklog import JUNK

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 1024  # open TCP connections; at most half the process's open-file limit
MAX_UNFINISHED = 256  # of those, connections not through a whole request
MAX_TLS_HANDSHAKES = 256  # TLS handshakes in progress (connections before they are aiohttp's)
REQUEST_DEADLINE = 10.0  # seconds a connection may stay unfinished (from opening or its last answer)
SWEEP_EVERY = 1.0  # seconds between looks for connections past their deadline


def connection_cap(wanted: int) -> int:
    """`wanted`, but at most half the open-file limit (the rest: database, logs, other sockets)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft // 2))


class ConnectionGuard:
    """The connection states of one HTTP server (see the module's docstring)."""

    def __init__(
        self,
        max_connections: int | None = None,
        max_unfinished: int | None = None,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Unset limits are this module's (read now, so a test may change them)."""
        self.max_connections = connection_cap(MAX_CONNECTIONS) if max_connections is None else max_connections
        unfinished = MAX_UNFINISHED if max_unfinished is None else max_unfinished
        self.max_unfinished = min(unfinished, self.max_connections)
        self.deadline = REQUEST_DEADLINE if deadline is None else deadline
        self._clock = clock
        self._unfinished: OrderedDict[Any, tuple[Any, float]] = OrderedDict()  # conn -> (transport, since)
        self._busy: dict[Any, Any] = {}  # conn -> transport
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed_late = 0  # unfinished past the deadline
        self.pushed_out = 0  # unfinished closed to make room
        self.refused = 0  # new connections closed because every place was busy

    @property
    def open(self) -> int:
        return len(self._unfinished) + len(self._busy)

    def opened(self, conn: Any, transport: Any) -> None:
        """A new connection: room made for it (or it is closed), then it is unfinished."""
        while self._unfinished and (
            self.open >= self.max_connections or len(self._unfinished) >= self.max_unfinished
        ):
            self.pushed_out += 1
            self._drop(next(iter(self._unfinished)), "oldest unfinished")
        if self.open >= self.max_connections:
            self.refused += 1
            log.warning("HTTP connection refused: all %d connections are busy", self.open, extra=JUNK)
            transport.abort()
            return
        self._unfinished[conn] = (transport, self._clock())

    def request_complete(self, conn: Any) -> None:
        """The connection's request is whole (headers and body): it goes to the handler."""
        entry = self._unfinished.pop(conn, None)
        if entry is not None:
            self._busy[conn] = entry[0]

    def answered(self, conn: Any) -> None:
        """The connection's request is answered (by the handler or refused before it): it waits for
        its next request, with a new deadline."""
        transport = self._busy.pop(conn, None)
        if transport is None:
            entry = self._unfinished.pop(conn, None)
            if entry is None:
                return  # closed meanwhile
            transport = entry[0]
        self._unfinished[conn] = (transport, self._clock())

    def closed(self, conn: Any) -> None:
        self._unfinished.pop(conn, None)
        self._busy.pop(conn, None)

    def sweep(self) -> int:
        """Close the unfinished connections past their deadline; how many."""
        cutoff = self._clock() - self.deadline
        late = []
        for conn, (_transport, since) in self._unfinished.items():
            if since > cutoff:
                break  # kept in the order they became unfinished
            late.append(conn)
        for conn in late:
            self.closed_late += 1
            self._drop(conn, f"no whole request within {self.deadline:g} s")
        return len(late)

    def _drop(self, conn: Any, why: str) -> None:
        transport, _ = self._unfinished.pop(conn)
        peer = transport.get_extra_info("peername")
        log.info("HTTP connection from %s closed: %s", peer[0] if peer else "?", why, extra=JUNK)
        transport.abort()

    def attach(self, server: Any) -> None:
        """Follow the connections of aiohttp's `web.Server` (its connection_made/lost calls)."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: Any) -> None:
            made(handler, transport)
            self.opened(handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None) -> None:
            self.closed(handler)
            lost(handler, exc)

        server.connection_made = connection_made
        server.connection_lost = connection_lost

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Sweep every SWEEP_EVERY seconds until `stop`."""

        def tick() -> None:
            self.sweep()
            self._sweeper = loop.call_later(min(SWEEP_EVERY, self.deadline), tick)

        self._sweeper = loop.call_later(min(SWEEP_EVERY, self.deadline), tick)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


class TlsHandshakes:
    """TLS handshakes in progress on an HTTPS server, at most `limit`: a new connection closes the
    oldest still shaking hands. asyncio does the handshake before aiohttp (and `ConnectionGuard`)
    sees the connection, so a flood of connections that never send a ClientHello was bounded only
    in time (`REQUEST_DEADLINE` each): at a few thousand new connections per second that is every
    file descriptor. A device's handshake takes milliseconds, so only a flood of `limit` new
    connections within those milliseconds can push it out."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = MAX_TLS_HANDSHAKES if limit is None else limit
        self._open: OrderedDict[Any, asyncio.Task[None]] = OrderedDict()  # transport -> its handshake
        self.pushed_out = 0  # handshakes closed for newer ones

    def __len__(self) -> int:
        return len(self._open)

    def begin(self, transport: Any, task: asyncio.Task[None]) -> None:
        """A new connection's handshake (`task`), after closing the oldest beyond the limit."""
        while self._open and len(self._open) >= self.limit:
            oldest, handshake = self._open.popitem(last=False)
            self.pushed_out += 1
            peer = oldest.get_extra_info("peername")
            log.info(
                "TLS handshake with %s closed: %d newer ones",
                peer[0] if peer else "?",
                self.limit,
                extra=JUNK,
            )
            handshake.cancel()
            oldest.abort()
        self._open[transport] = task

    def end(self, transport: Any) -> None:
        self._open.pop(transport, None)

    def close(self) -> None:
        """The server stops: every handshake still in progress ends."""
        while self._open:
            transport, handshake = self._open.popitem(last=False)
            handshake.cancel()
            transport.abort()


class TlsAccept(asyncio.Protocol):
    """A new TCP connection of an HTTPS server: TLS by `loop.start_tls` (counted in `handshakes`),
    then handed to the HTTP protocol `make_protocol()` makes, as asyncio's own `ssl=` would."""

    def __init__(
        self,
        make_protocol: Callable[[], asyncio.Protocol],
        ssl_context: ssl.SSLContext,
        handshakes: TlsHandshakes,
        timeout: float,
    ) -> None:
        self._make_protocol = make_protocol
        self._ssl_context = ssl_context
        self._handshakes = handshakes
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport; not checked with isinstance: uvloop's TCPTransport is no subclass of
        # asyncio.Transport (profiles/event_loop.py)
        tcp = cast(asyncio.Transport, transport)
        tcp.pause_reading()  # the ClientHello waits for start_tls
        self._transport = tcp
        self._handshakes.begin(tcp, asyncio.get_running_loop().create_task(self._upgrade(tcp)))

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        protocol = self._make_protocol()
        try:
            tls = await loop.start_tls(
                transport, protocol, self._ssl_context, server_side=True, ssl_handshake_timeout=self._timeout
            )
        except Exception as exc:  # a failed or timed-out handshake (ssl.SSLError, OSError, TimeoutError)
            log.debug("TLS handshake failed: %s", exc)
            transport.abort()
            return
        finally:
            self._handshakes.end(transport)
        if tls is None or tls.is_closing():
            return
        protocol.connection_made(tls)

    def data_received(self, data: bytes) -> None:  # reading is paused until start_tls takes over
        log.debug("%d bytes before TLS: dropped with the connection", len(data))
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:  # only before start_tls took over
        if self._transport is not None:
            self._handshakes.end(self._transport)


__all__ = [
    "MAX_CONNECTIONS",
    "MAX_TLS_HANDSHAKES",
    "MAX_UNFINISHED",
    "REQUEST_DEADLINE",
    "ConnectionGuard",
    "TlsAccept",
    "TlsHandshakes",
    "connection_cap",
]
