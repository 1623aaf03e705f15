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
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from teep_coap.transport.junklog import JUNK

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 1024  # open TCP connections; at most half the process's open-file limit
MAX_UNFINISHED = 256  # of those, connections not through a whole request
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


__all__ = ["MAX_CONNECTIONS", "MAX_UNFINISHED", "REQUEST_DEADLINE", "ConnectionGuard", "connection_cap"]
