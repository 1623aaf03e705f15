"""A TCP relay on loopback that forwards bytes unchanged and records every chunk it moved.

The size report (`teep_coap.bench.sizes`) counts what really crosses the wire for HTTP and HTTPS:
the Broker connects to the relay, the relay to the TAM, and each read is logged with its direction,
its connection and a copy of the bytes, so TLS records can be split afterwards
(`teep_coap.bench.wire.tls_records`; the relay itself never looks inside).
Counts are of TCP payload: IP and TCP headers (and the SYN/FIN segments) are not seen by a socket and
are not included, exactly as the UDP relay of the CoAP side counts UDP payload only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from teep_coap.transport.base import TransportError

C2S = "c2s"  # client (Broker) -> server (TAM)
S2C = "s2c"
READ_SIZE = 65536
# Called with (connection number, client address, direction, bytes) for every read, and with empty
# bytes when a direction ends (the pcap writer of `teep-coap … --pcap` listens here).
TcpTap = Callable[[int, tuple[str, int], str, bytes], None]


@dataclass(frozen=True)
class Chunk:
    """One read the relay forwarded."""

    t: float  # time.perf_counter() when read
    conn: int  # connection number, from 0
    direction: str  # C2S or S2C
    data: bytes


@dataclass
class TcpCountingRelay:
    """Forward `listen_host:port` -> `target_host:target_port`; `chunks` holds what moved."""

    target_host: str
    target_port: int
    listen_host: str = "127.0.0.1"
    listen_port: int = 0  # 0: any free port
    connect_timeout: float = 5.0
    record: bool = True  # keep every chunk in `chunks` (a long-running relay with a tap may not)
    tap: TcpTap | None = None
    chunks: list[Chunk] = field(default_factory=list)
    connections: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    # Directions (C2S, S2C) whose bytes are read and thrown away while listed: a test loses one
    # message this way (the connection is then useless, as after a real outage).
    blackhole: set[str] = field(default_factory=set)

    async def start(self) -> int:
        """Listen on `listen_port` (default: a free port); returns it."""
        self._server = await asyncio.start_server(self._accept, self.listen_host, self.listen_port)
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def port(self) -> int:
        if self._server is None:
            raise TransportError("relay not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and cut every relayed connection."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)

    async def __aenter__(self) -> TcpCountingRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def mark(self) -> int:
        """Position in `chunks`: everything before it happened before this call."""
        return len(self.chunks)

    def count(self, start: int = 0, end: int | None = None, direction: str | None = None) -> int:
        """Bytes moved in chunks[start:end], optionally of one direction."""
        return sum(
            len(c.data) for c in self.chunks[start:end] if direction is None or c.direction == direction
        )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.connections
        self.connections += 1
        self._writers.append(writer)
        peer = writer.get_extra_info("peername") or ("127.0.0.1", 0)
        client = (str(peer[0]), int(peer[1]))
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port), self.connect_timeout
            )
        except (OSError, TimeoutError):
            writer.close()
            return
        self._writers.append(up_writer)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, conn, client, C2S)),
            asyncio.create_task(self._pump(up_reader, writer, conn, client, S2C)),
        ]
        for task in pumps:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.wait(pumps)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: int,
        client: tuple[str, int],
        direction: str,
    ) -> None:
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                if self.record:
                    self.chunks.append(Chunk(time.perf_counter(), conn, direction, data))
                if self.tap is not None:
                    self.tap(conn, client, direction, data)
                if direction in self.blackhole:
                    continue
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            if self.tap is not None:
                self.tap(conn, client, direction, b"")
            with contextlib.suppress(Exception):
                if writer.can_write_eof():
                    writer.write_eof()
