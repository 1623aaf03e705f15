"""The async glue between the sans-IO engines and the transports.

- `TamHandler`: a transport `MessageHandler` around a TamEngine (empty payload = ProcessConnect),
  mapping engine errors to transport rejections (4.00 / 4.03 / 5.00) and logging one line per session.
  Over a networked database (PostgreSQL) engine calls run on a small thread pool, so the event loop
  keeps serving other peers, DTLS handshakes and timeouts while one call waits on the database;
  over SQLite they run on the loop, where they cost less (see ENGINE_THREADS).
- `run_session` / `run_until_done`: the Broker loop (BrokerSession ↔ MessageClient), with a timeout on
  every exchange, and a summary of what was installed or removed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from teep_coap.errors import TeepCoapError
from teep_coap.profiles.rejections import rejection_for
from teep_coap.protocol.broker import BrokerSession, Done, Send
from teep_coap.protocol.events import SessionEnded, TamEvent, reply_of
from teep_coap.transport.base import MessageClient, PeerInfo, Rejection, RequestRejected, TransportError
from teep_coap.transport.junklog import JUNK

log = logging.getLogger("teep_coap.session")


MAX_OPEN_SESSIONS = 4096  # sessions the TAM log tracks at once; the oldest unfinished ones are dropped
ENGINE_THREADS = 4  # engine calls in flight at once over a networked store (one connection per thread)
# An embedded store (SQLite) gets 0, the engine on the event loop. Measured 2026-12-05 16:37 UTC on
# 2 cores, load ~1, bench sessions --devices 1000 --concurrency 32: coaps-psk 3.4-3.6 ms TAM CPU per
# session on the loop against 3.9-4.2 ms on 4 threads; plain coap 3.9 against 4.8-5.0 ms. Both the
# engine calls (+14 %) and the loop (+40 %) get slower when they run side by side: the GIL passes
# between them at every socket call. A batching pool with one hot worker (fewer wake-ups) measured
# the same, so the cost is the contention itself. A SQLite call waits on no network, so the loop
# loses little by running it; a PostgreSQL call waits a round trip per statement, which threads hide.
# TEEP_COAP_ENGINE_THREADS overrides the choice for every TamHandler of the process (and `tam serve
# --workers` children).
ENGINE_THREADS_ENV = "TEEP_COAP_ENGINE_THREADS"


class EngineThreadsError(TeepCoapError):
    """TEEP_COAP_ENGINE_THREADS is not a whole number from 0 to 64."""


def engine_threads(*, embedded_store: bool = False) -> int:
    """Threads for engine calls: TEEP_COAP_ENGINE_THREADS if set (0..64), else 0 for an embedded
    store and ENGINE_THREADS for a networked one."""
    value = os.environ.get(ENGINE_THREADS_ENV, "").strip()
    if not value:
        return 0 if embedded_store else ENGINE_THREADS
    if not value.isdigit() or int(value) > 64:
        raise EngineThreadsError(
            f"{ENGINE_THREADS_ENV}={value!r}: give a whole number from 0 (engine on the event loop) to 64"
        )
    return int(value)


class SessionFailed(TeepCoapError):
    """A Broker session ended without success; the message says where and why."""


@dataclass
class _Open:
    started: float
    rounds: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class TamHandler:
    """MessageHandler of a TAM: ProcessConnect / ProcessTeepMessage with errors mapped to codes.

    `tam` is a `TamEngine` (its `handle_*` calls run on `threads` worker threads, and its timer is
    run when due before a call), or any object with the byte-in/byte-out `connect`/`receive` pair
    (test scripts, adapters), which is called on the event loop as before. `threads=0` runs the
    engine on the event loop: the default for an embedded store (`engine_threads`), and what a store
    that cannot be shared between threads needs (in-memory SQLite: one database per connection).
    """

    def __init__(
        self, tam: Any, *, session_log: logging.Logger | None = None, threads: int | None = None
    ) -> None:
        self.tam = tam
        self.log = session_log or log
        self.sessions_done = 0
        self.sessions_failed = 0
        self._open: dict[str, _Open] = {}
        self._evented = hasattr(tam, "handle_message")
        embedded = bool(getattr(getattr(tam, "store", None), "embedded", False))
        self._threads = engine_threads(embedded_store=embedded) if threads is None else threads
        self._pool: ThreadPoolExecutor | None = None
        self._timer_running = False

    @property
    def threads(self) -> int:
        """Worker threads for engine calls (0: on the event loop)."""
        return self._threads

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="tam-engine")
        return self._pool

    def close(self) -> None:
        """Stop the worker threads (calls in flight finish first)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def _run(self, call: Callable[[], Any]) -> Any:
        if self._threads == 0:
            return call()
        return await asyncio.get_running_loop().run_in_executor(self._executor(), call)

    async def _engine_call(self, payload: bytes, identity: str | None) -> bytes | None:
        if not self._evented:
            return self.tam.connect(identity) if not payload else self.tam.receive(payload, identity)
        now = float(self.tam.clock())
        if now >= self.tam.next_timer() and not self._timer_running:
            self._timer_running = True  # one sweep at a time; the others go on
            try:
                await self._run(functools.partial(self.tam.handle_timer, now))
            finally:
                self._timer_running = False
        call = (
            functools.partial(self.tam.handle_connect, now, identity)
            if not payload
            else functools.partial(self.tam.handle_message, payload, now, identity)
        )
        events: tuple[TamEvent, ...] = await self._run(call)
        ended = [e for e in events if isinstance(e, SessionEnded)]
        if ended:
            self.log.debug("session %d ended: %s", ended[-1].session_id, ended[-1].outcome)
        return reply_of(events)

    def _key(self, peer: PeerInfo) -> str:
        return peer.identity or peer.address

    def _end(self, peer: PeerInfo, outcome: str, *, junk: bool = False) -> bool:
        """Log the one line of a session; False if no session of this peer was open."""
        key = self._key(peer)
        st = self._open.pop(key, None)
        if st is None:
            return False
        self._log_line(key, peer.transport, outcome, st, junk=junk)
        return True

    def _log_line(self, key: str, transport: str, outcome: str, st: _Open, *, junk: bool = False) -> None:
        """One line per session; a line caused by a peer's junk is rate-limited (`transport.junklog`)."""
        ms = (time.monotonic() - st.started) * 1000
        self.log.info(
            "session %s via %s %s: %d rounds, %d B in, %d B out, %.1f ms",
            key,
            transport,
            outcome,
            st.rounds,
            st.bytes_in,
            st.bytes_out,
            ms,
            extra=JUNK if junk else None,
        )

    def _start(self, peer: PeerInfo) -> None:
        key = self._key(peer)
        if key in self._open:  # a peer may restart at will: its line is rate-limited as junk
            self._end(peer, "abandoned (a new session started)", junk=True)
        while len(self._open) >= MAX_OPEN_SESSIONS:  # bounded: peers that vanish must not pile up
            old_key = next(iter(self._open))
            self._log_line(old_key, "?", "abandoned (never finished)", self._open.pop(old_key), junk=True)
        self._open[key] = _Open(time.monotonic())

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None:
        key = self._key(peer)
        if not payload:
            self._start(peer)
        st = self._open.get(key)
        if st is not None:
            st.rounds += 1
            st.bytes_in += len(payload)
        try:
            answer = await self._engine_call(payload, peer.identity)
        except TeepCoapError as exc:  # every engine error; `rejection_for` says which answer
            rejection = rejection_for(exc) or Rejection.SERVER_ERROR
            self._fail(peer, f"{'failed' if rejection is Rejection.SERVER_ERROR else 'refused'} ({exc})")
            raise RequestRejected(rejection, str(exc)) from None
        if answer is None:
            if self._end(peer, "done"):
                self.sessions_done += 1
            return None
        if st is not None:
            st.bytes_out += len(answer)
        return bytes(answer)

    def _fail(self, peer: PeerInfo, outcome: str) -> None:
        self.sessions_failed += 1
        if not self._end(peer, outcome, junk=True):  # a message outside any session still gets its line
            self.log.info("message from %s via %s %s", self._key(peer), peer.transport, outcome, extra=JUNK)


@dataclass
class SessionResult:
    """One Broker session: outcome, exchanges, bytes of TEEP messages, time."""

    ok: bool
    reason: str
    rounds: int
    bytes_sent: int
    bytes_received: int
    seconds: float
    sent: list[bytes] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)


async def run_session(
    agent: Any,
    client: MessageClient,
    tam_uri: str,
    *,
    timeout: float,
    max_rounds: int = 16,
    on_exchange: Callable[[bytes, bytes | None], Awaitable[None] | None] | None = None,
) -> SessionResult:
    """One session: empty POST, then Agent ↔ TAM until one side has nothing more.

    `timeout` bounds each exchange (the client bounds it too; this is the belt to its braces).
    """

    session = BrokerSession(agent, tam_uri, max_rounds=max_rounds)
    t0 = time.perf_counter()
    action: Send | Done = session.start()
    while isinstance(action, Send):
        try:
            answer = await asyncio.wait_for(client.post(action.payload), timeout + 1.0)
        except TimeoutError:
            action = session.on_transport_error(f"no answer within {timeout:g} s")
            continue
        except TransportError as exc:
            action = session.on_transport_error(exc)
            continue
        if on_exchange is not None:
            maybe = on_exchange(action.payload, answer)
            if maybe is not None:
                await maybe
        action = session.on_response(answer)
    return SessionResult(
        ok=action.ok,
        reason=action.reason,
        rounds=session.rounds,
        bytes_sent=session.bytes_sent,
        bytes_received=session.bytes_received,
        seconds=time.perf_counter() - t0,
        sent=list(session.sent),
        received=list(session.received),
    )


@dataclass
class RunReport:
    """What `run_until_done` did: sessions, and the components installed and removed."""

    sessions: list[SessionResult]
    installed: list[tuple[tuple[bytes, ...], int]]  # (component id, sequence number)
    removed: list[tuple[bytes, ...]]
    updated: list[tuple[tuple[bytes, ...], int, int]]  # (component id, old seq, new seq)
    # An Update an earlier run began and never saw confirmed (lost Success, crash), now settled:
    # {"applied_before": bool, "changes": [{component_id, from, to}]}; None when there was none.
    recovered: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return bool(self.sessions) and all(s.ok for s in self.sessions)


def _snapshot(agent: Any) -> dict[tuple[bytes, ...], int]:
    return {tuple(e.component_id): int(e.sequence_number) for e in agent.state.components.list()}


async def run_until_done(
    agent: Any,
    client: MessageClient,
    tam_uri: str,
    *,
    timeout: float,
    max_rounds: int = 16,
    max_sessions: int = 8,
) -> RunReport:
    """Sessions until one changes nothing on the device (the TAM has nothing more), or one fails."""
    before = _snapshot(agent)
    earlier = agent.unconfirmed() if hasattr(agent, "unconfirmed") else None
    recovered: dict[str, Any] | None = None
    sessions: list[SessionResult] = []
    for _ in range(max_sessions):
        prior = _snapshot(agent)
        result = await run_session(agent, client, tam_uri, timeout=timeout, max_rounds=max_rounds)
        sessions.append(result)
        if result.ok and hasattr(agent, "confirm"):
            changes = agent.confirm()  # the TAM answered to the end: nothing is left unconfirmed
            if earlier is not None and recovered is None:
                recovered = {"applied_before": bool(earlier.get("applied")), "changes": changes}
        if not result.ok or _snapshot(agent) == prior:
            break
    after = _snapshot(agent)
    installed = [(cid, seq) for cid, seq in after.items() if cid not in before]
    removed = [cid for cid in before if cid not in after]
    updated = [(cid, before[cid], seq) for cid, seq in after.items() if cid in before and before[cid] != seq]
    return RunReport(sessions, installed, removed, updated, recovered)
