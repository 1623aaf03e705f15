"""A UDP relay on loopback that counts datagrams and bytes per direction and can inject faults.

It sits between a client and a server (`client -> relay -> server`) and forwards datagrams without
looking inside them. Uses: the size benchmark counts the real bytes of a session (CoAP, DTLS and
OSCORE overhead included); the fault tests drop, duplicate and reorder datagrams with a seeded random
generator so a failing run can be repeated exactly.

Each client address gets its own upstream socket, so the server sees one peer per client (as DTLS
and CoAP de-duplication need).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from teep_coap.transport.base import TransportError

log = logging.getLogger("teep_coap.transport.relay")

UP = "up"  # client -> server
DOWN = "down"  # server -> client
LOOPBACK = ("127.0.0.1", "::1", "localhost")
MAX_CLIENTS = 4096  # upstream sockets kept; bounded so a flood cannot exhaust file descriptors
# Called with (direction, client address, datagram) for every datagram offered, before the faults
# (the pcap writer of `teep-coap … --pcap` listens here).
Tap = Callable[[str, tuple[str, int], bytes], None]


@dataclass(frozen=True)
class FaultPlan:
    """Probabilities (0..1) of what happens to each datagram, and the seed that fixes the sequence."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # held back and sent after the next datagram (or after `reorder_delay`)
    seed: int = 0
    reorder_delay: float = 0.05  # seconds a held datagram waits at most
    # Spare DTLS handshake records (content types 20-22, RFC 6347 §4.1) from the faults. aiocoap's
    # tinydtls rarely completes a handshake once one of its flights is lost, duplicated or reordered
    # (docs/coap-binding.md); this lets a test put the faults on the CoAP exchanges only. It is the
    # only place the relay looks at a datagram, and it reads one byte.
    spare_dtls_handshake: bool = False
    delay: float = 0.0  # seconds every delivered datagram takes (one-way latency of a slow link)

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"FaultPlan.{name} must be within 0..1, got {value}")
        if not 0.0 <= self.delay <= 60.0:
            raise ValueError(f"FaultPlan.delay must be within 0..60 seconds, got {self.delay}")

    @property
    def active(self) -> bool:
        return bool(self.drop or self.duplicate or self.reorder)


@dataclass
class DirectionStats:
    """What one direction carried: offered by the sender, and what the faults did to it."""

    datagrams: int = 0
    bytes: int = 0
    delivered_datagrams: int = 0
    delivered_bytes: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0


@dataclass(frozen=True)
class Datagram:
    """One datagram as offered by its sender (recorded when `record=True`)."""

    direction: str
    client: str
    payload: bytes
    time: float


@dataclass
class RelayStats:
    up: DirectionStats = field(default_factory=DirectionStats)
    down: DirectionStats = field(default_factory=DirectionStats)

    def __getitem__(self, direction: str) -> DirectionStats:
        return self.up if direction == UP else self.down


class _Upstream(asyncio.DatagramProtocol):
    """The relay's socket towards the server on behalf of one client."""

    def __init__(self, relay: UdpRelay, client: tuple[str, int]) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay._forward(DOWN, data, self.client, lambda d: self.relay._send_down(d, self.client))


class _Downstream(asyncio.DatagramProtocol):
    """The relay's listening socket, facing the clients."""

    def __init__(self, relay: UdpRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay._client_datagram(data, addr)


class UdpRelay:
    """`async with UdpRelay(target) as relay:` then point the client at `relay.port`."""

    def __init__(
        self,
        target: tuple[str, int],
        listen: tuple[str, int] = ("127.0.0.1", 0),
        faults: FaultPlan | None = None,
        record: bool = False,
        tap: Tap | None = None,
    ) -> None:
        if target[0] not in LOOPBACK or listen[0] not in LOOPBACK:
            raise TransportError("the relay only runs on loopback")
        self.target = target
        self.listen = listen
        self.faults = faults or FaultPlan()
        self.record = record
        self.tap = tap
        self.stats = RelayStats()
        self.datagrams: list[Datagram] = []
        self._rng = random.Random(self.faults.seed)
        self._down: asyncio.DatagramTransport | None = None
        self._upstreams: dict[tuple[str, int], _Upstream] = {}
        self._pending: list[asyncio.Task[None]] = []
        self._held: dict[str, tuple[bytes, asyncio.TimerHandle, Callable[[bytes], None]]] = {}
        self.port = 0
        # Directions (UP, DOWN) whose every datagram is dropped while listed: an outage a test switches
        # on and off around one message, so that message (all its retransmissions) is lost.
        self.blackhole: set[str] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Downstream(self), local_addr=self.listen)
        self._down = transport
        self.port = transport.get_extra_info("sockname")[1]

    @property
    def host(self) -> str:
        return self.listen[0]

    def reset(self) -> None:
        """Zero the counters and forget recorded datagrams (e.g. between two measured sessions)."""
        self.stats = RelayStats()
        self.datagrams.clear()

    def _client_datagram(self, data: bytes, client: tuple[str, int]) -> None:
        up = self._upstreams.get(client)
        if up is None:
            if len(self._upstreams) >= MAX_CLIENTS:
                log.warning("relay: too many clients, dropping datagram from %s", client)
                return
            up = _Upstream(self, client)
            self._upstreams[client] = up
            task = asyncio.ensure_future(self._open_upstream(up, data))
            self._pending.append(task)
            return
        self._forward(UP, data, client, lambda d: self._send_up(up, d))

    async def _open_upstream(self, up: _Upstream, first: bytes) -> None:
        loop = asyncio.get_running_loop()
        family_host = "::1" if ":" in self.target[0] else "127.0.0.1"
        await loop.create_datagram_endpoint(lambda: up, local_addr=(family_host, 0))
        self._forward(UP, first, up.client, lambda d: self._send_up(up, d))

    def _send_up(self, up: _Upstream, data: bytes) -> None:
        if up.transport is not None and not up.transport.is_closing():
            up.transport.sendto(data, self.target)

    def _send_down(self, data: bytes, client: tuple[str, int]) -> None:
        if self._down is not None and not self._down.is_closing():
            self._down.sendto(data, client)

    def _forward(
        self, direction: str, data: bytes, client: tuple[str, int], send: Callable[[bytes], None]
    ) -> None:
        stats = self.stats[direction]
        stats.datagrams += 1
        stats.bytes += len(data)
        if self.record:
            self.datagrams.append(
                Datagram(direction, f"{client[0]}:{client[1]}", bytes(data), time.monotonic())
            )
        if self.tap is not None:
            self.tap(direction, client, bytes(data))
        deliver = send
        delay = self.faults.delay

        def out(d: bytes) -> None:
            stats.delivered_datagrams += 1
            stats.delivered_bytes += len(d)
            if delay:
                asyncio.get_running_loop().call_later(delay, deliver, d)  # same delay: order kept
            else:
                deliver(d)

        if direction in self.blackhole:
            stats.dropped += 1
            return
        plan = self.faults
        if plan.spare_dtls_handshake and data[:1] in (b"\x14", b"\x15", b"\x16"):
            out(data)
            return
        if plan.active:
            roll = self._rng.random()
            if roll < plan.drop:
                stats.dropped += 1
                return
            key = f"{direction}:{client}"
            if self._rng.random() < plan.reorder and key not in self._held:
                stats.reordered += 1
                loop = asyncio.get_running_loop()
                handle = loop.call_later(plan.reorder_delay, self._release, key)
                self._held[key] = (data, handle, out)
                return
            out(data)
            if self._rng.random() < plan.duplicate:
                stats.duplicated += 1
                out(data)
            self._release(key)  # a held datagram now goes after this one: reordered
            return
        out(data)

    def _release(self, key: str) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            data, handle, out = held
            handle.cancel()
            out(data)

    async def close(self) -> None:
        for key in list(self._held):
            _, handle, _ = self._held.pop(key)
            handle.cancel()
        for task in self._pending:
            task.cancel()
        for up in self._upstreams.values():
            if up.transport is not None:
                up.transport.close()
        self._upstreams.clear()
        if self._down is not None:
            self._down.close()
            self._down = None

    async def __aenter__(self) -> UdpRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
