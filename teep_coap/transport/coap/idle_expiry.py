"""Idle expiry of per-peer server state: memory bounded by the request rate, not the device count.

The TAM keeps two kinds of per-peer state that used to be bounded only by count: server-side DTLS
sessions (`MAX_DTLS_SESSIONS`, each a tinydtls session plus aiocoap's per-peer objects) and the
addresses that proved themselves with RFC 9175 Echo (`echo.PROVEN_MAX`). With 10,000 devices the
counts were reached and held: a device that had finished its session long ago still cost memory.

`IdleTracker` remembers when each peer was last heard, in the order last heard, so the peers idle
longer than the limit are always at the front and a sweep costs only the entries it drops. The
limit is the profile's `[limits] idle_timeout` (seconds, default 60). A DTLS client that comes back
after its session expired simply handshakes again (the client restarts a silent session already).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Iterator

IDLE_TIMEOUT = 60.0  # seconds a peer may stay silent before its server-side state is freed
# A datagram sweeps the idle peers at most once per this share of the timeout: a peer is freed at
# most that much later, and the other datagrams of a burst (eight per coaps-psk session) skip the look.
SWEEP_SHARE = 1 / 16


class IdleTracker:
    """Last-heard times of peers, oldest first; `expired(now)` yields and forgets the idle ones."""

    def __init__(self, timeout: float = IDLE_TIMEOUT) -> None:
        if timeout <= 0:
            raise ValueError(f"idle timeout must be positive, not {timeout!r}")
        self.timeout = timeout
        self._heard: dict[Hashable, float] = {}  # insertion order = order last heard

    def __len__(self) -> int:
        return len(self._heard)

    def __contains__(self, peer: Hashable) -> bool:
        return peer in self._heard

    def heard(self, peer: Hashable, now: float) -> None:
        """`peer` sent something at `now`: it moves to the back of the order."""
        self._heard.pop(peer, None)
        self._heard[peer] = now

    def forget(self, peer: Hashable) -> None:
        self._heard.pop(peer, None)

    def pop_oldest(self) -> Hashable:
        """Forget and return the peer heard longest ago (for a count bound on top of the time bound)."""
        peer = next(iter(self._heard))
        del self._heard[peer]
        return peer

    def expired(self, now: float) -> Iterator[Hashable]:
        """Peers silent for longer than the timeout, removed from the tracker as they are yielded."""
        while self._heard:
            peer, last = next(iter(self._heard.items()))
            if now - last <= self.timeout:
                return
            del self._heard[peer]
            yield peer


class IdleSweeper:
    """Frees idle peers on the event loop: when a datagram arrives and every quarter of the timeout,
    so a silent server also gives its memory back. `drop(peer)` frees one peer's state; the timer
    stops once `running()` says the server is gone."""

    def __init__(
        self,
        tracker: IdleTracker,
        drop: Callable[[Hashable], None],
        running: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tracker = tracker
        self._drop = drop
        self._running = running
        self._clock = clock
        self.expired = 0  # peers freed for idleness (for tests and logs)
        self._timer: asyncio.TimerHandle | None = None
        self._sweep_gap = tracker.timeout * SWEEP_SHARE
        self._next_sweep = float("-inf")

    def heard(self, peer: Hashable) -> None:
        """A datagram from `peer`: sweep the idle ones (unless a datagram did within the last
        SWEEP_SHARE of the timeout), then note `peer` as heard now."""
        now = self._clock()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_gap
            self.sweep(now)
        self.tracker.heard(peer, now)

    def sweep(self, now: float) -> None:
        for peer in self.tracker.expired(now):
            self.expired += 1
            self._drop(peer)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Sweep every quarter of the timeout until the server stops."""
        self._timer = loop.call_later(self.tracker.timeout / 4, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if not self._running():
            return
        self.sweep(self._clock())
        self.start(loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
