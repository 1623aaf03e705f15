"""The relay of a TEEP gateway: device requests in (any server binding), the TAM's answers back.

A `GatewayRelay` is a `MessageHandler` for the device-side server (CoAP: coaps-psk, OSCORE, plain)
that posts every request payload to the TAM through an upstream `MessageClient` (HTTP(S) per
draft-ietf-teep-otrp-over-http, or CoAP) and returns the answer: the cross-proxy mapping of RFC 8075
for one resource. It moves opaque bytes and never parses them: TEEP's COSE signatures go end to end,
so the gateway can read but not forge or alter a message (a changed byte fails the signature check at
the Agent or the TAM).

Sessions: a device is known by its transport identity (DTLS PSK identity, OSCORE sender) or, for
plain CoAP, its address. An empty payload starts a device session and opens a fresh upstream client
for it (HTTP: one connection per session, as the binding's Broker does); the session ends when the
TAM has nothing more, when it fails, or after `idle_timeout` without a message; at most
`max_sessions` are kept (the least recently used go first). The TAM correlates a session's messages
by their content (token, kid), not by the connection, so a restarted gateway loses nothing the TAM
can finish: the device's next message goes upstream on a new connection.

Failures upstream become gateway errors at once, never a hang: no answer within `upstream_timeout`
→ 5.04 Gateway Timeout; connection refused, TLS or protocol failure → 5.02 Bad Gateway; the TAM's
own error statuses map to the device-side rejection of the same meaning (RFC 8075 §7).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from teep_coap.transport.base import (
    MessageClient,
    PeerInfo,
    PeerRejected,
    Rejection,
    RequestRejected,
    TransportError,
    TransportTimeout,
)

log = logging.getLogger("teep_coap.gateway")

MAX_SESSIONS = 4096  # device sessions kept at once (each may hold an upstream connection)
IDLE_TIMEOUT = 120.0  # seconds without a message after which a device session is forgotten

# Upstream error status (HTTP or CoAP text) → the device-side rejection (RFC 8075 §7 in spirit:
# the device learns what the TAM said; anything else is the gateway's 5.02).
UPSTREAM_STATUS: dict[str, Rejection] = {
    "400": Rejection.BAD_REQUEST,
    "4.00": Rejection.BAD_REQUEST,
    "403": Rejection.FORBIDDEN,
    "4.03": Rejection.FORBIDDEN,
    "413": Rejection.TOO_LARGE,
    "4.13": Rejection.TOO_LARGE,
    "415": Rejection.UNSUPPORTED_MEDIA,
    "4.15": Rejection.UNSUPPORTED_MEDIA,
    "500": Rejection.SERVER_ERROR,
    "5.00": Rejection.SERVER_ERROR,
    "503": Rejection.OVERLOADED,
    "5.03": Rejection.OVERLOADED,
    "504": Rejection.GATEWAY_TIMEOUT,
    "5.04": Rejection.GATEWAY_TIMEOUT,
}


@dataclass
class RelayStats:
    """Counters a test, the CLI log or a benchmark reads."""

    sessions_started: int = 0
    sessions_done: int = 0
    sessions_failed: int = 0
    sessions_expired: int = 0  # dropped idle or beyond MAX_SESSIONS
    messages_up: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    upstream_errors: dict[str, int] = field(default_factory=dict)  # rejection value → count

    def error(self, rejection: Rejection) -> None:
        self.upstream_errors[rejection.value] = self.upstream_errors.get(rejection.value, 0) + 1


@dataclass
class _DeviceSession:
    client: MessageClient
    last_used: float


class GatewayRelay:
    """MessageHandler that carries each device message to the TAM and its answer back, unchanged."""

    def __init__(
        self,
        upstream: Callable[[], MessageClient],
        *,
        upstream_timeout: float,
        shared_upstream: bool = False,
        max_sessions: int = MAX_SESSIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if upstream_timeout <= 0:
            raise TransportError(f"upstream timeout must be positive, got {upstream_timeout}")
        self._factory = upstream
        self._shared: MessageClient | None = upstream() if shared_upstream else None
        self.upstream_timeout = upstream_timeout
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._sessions: OrderedDict[str, _DeviceSession] = OrderedDict()
        self.stats = RelayStats()

    @property
    def open_sessions(self) -> int:
        return len(self._sessions)

    # Hooks: what goes up and what comes down. The relay passes bytes through; a test subclass that
    # alters them shows that the end-to-end signatures catch it.
    def to_upstream(self, payload: bytes, peer: PeerInfo) -> bytes:
        return payload

    def to_device(self, answer: bytes | None, peer: PeerInfo) -> bytes | None:
        return answer

    def _key(self, peer: PeerInfo) -> str:
        return peer.identity or peer.address

    async def _session(self, key: str, fresh: bool) -> _DeviceSession:
        now = self._clock()
        old = self._sessions.pop(key, None)
        if old is not None and (fresh or now - old.last_used > self.idle_timeout):
            await self._close(old)
            old = None
        await self._expire(now)
        if old is None:
            client = self._shared if self._shared is not None else self._factory()
            old = _DeviceSession(client, now)
            self.stats.sessions_started += 1
        old.last_used = now
        self._sessions[key] = old  # most recently used last
        return old

    async def _expire(self, now: float) -> None:
        while self._sessions:
            key, oldest = next(iter(self._sessions.items()))
            if now - oldest.last_used <= self.idle_timeout and len(self._sessions) < self.max_sessions:
                break
            del self._sessions[key]
            self.stats.sessions_expired += 1
            await self._close(oldest)

    async def _close(self, session: _DeviceSession) -> None:
        if session.client is self._shared:
            return
        try:
            await asyncio.wait_for(session.client.close(), 5.0)
        except (TimeoutError, TransportError, OSError) as exc:
            log.debug("closing an upstream client: %s", exc)

    async def _end(self, key: str, failed: bool) -> None:
        session = self._sessions.pop(key, None)
        if session is not None:
            await self._close(session)
        if failed:
            self.stats.sessions_failed += 1
        else:
            self.stats.sessions_done += 1

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None:
        key = self._key(peer)
        session = await self._session(key, fresh=not payload)
        up = self.to_upstream(payload, peer)
        self.stats.messages_up += 1
        self.stats.bytes_up += len(up)
        try:
            answer = await asyncio.wait_for(session.client.post(up), self.upstream_timeout)
        except (TimeoutError, TransportTimeout):
            raise await self._fail(key, Rejection.GATEWAY_TIMEOUT, "TAM did not answer in time") from None
        except PeerRejected as exc:
            rejection = UPSTREAM_STATUS.get(exc.status, Rejection.BAD_GATEWAY)
            raise await self._fail(key, rejection, f"TAM answered {exc.status}: {exc.detail}") from None
        except TransportError as exc:
            raise await self._fail(key, Rejection.BAD_GATEWAY, f"TAM unreachable: {exc}") from None
        down = self.to_device(answer, peer)
        self.stats.bytes_down += len(down or b"")
        if down is None:
            await self._end(key, failed=False)
        return down

    async def _fail(self, key: str, rejection: Rejection, reason: str) -> RequestRejected:
        self.stats.error(rejection)
        log.warning("device %s: %s", key, reason)
        await self._end(key, failed=True)
        return RequestRejected(
            rejection, reason, retry_after=1.0 if rejection is Rejection.OVERLOADED else None
        )

    async def close(self) -> None:
        """Close every upstream client (the device-side server is closed by its owner)."""
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            await self._close(session)
        if self._shared is not None:
            shared, self._shared = self._shared, None
            await shared.close()
