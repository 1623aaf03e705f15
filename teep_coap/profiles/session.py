"""The async glue between the sans-IO engines and the transports.

- `TamHandler`: a transport `MessageHandler` around a TamEngine (empty payload = ProcessConnect),
  mapping engine errors to transport rejections (4.00 / 4.03 / 5.00) and logging one line per session.
  Engine calls run on the event loop when the database answers within a local round trip (SQLite,
  or PostgreSQL on the same host), where they cost less CPU than on a thread pool; over a database
  on another host they run on a small pool, so the event loop keeps serving other peers, DTLS
  handshakes and timeouts while one call waits on the network (see ENGINE_THREADS).
- `run_session` / `run_until_done`: the Broker loop (BrokerSession ↔ MessageClient), with a timeout on
  every exchange, and a summary of what was installed or removed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from teep_coap.errors import TeepCoapError
from teep_coap.profiles.rejections import rejection_for
from teep_coap.protocol.broker import BrokerSession, Done, Send
from teep_coap.protocol.events import SessionEnded, TamEvent, reply_of
from teep_coap.protocol.tam import BatchOutcome, TamRequest
from teep_coap.transport.base import MessageClient, PeerInfo, Rejection, RequestRejected, TransportError
from teep_coap.transport.junklog import JUNK

log = logging.getLogger("teep_coap.session")


ENGINE_THREADS = 4  # engine calls in flight at once over a store on another host (a connection each)
# A store on the same host (SQLite; PostgreSQL over a Unix socket or loopback: `same_host`) gets 0,
# the engine on the event loop. Since session 9 PostgreSQL's statements go 3-5 per message in one
# round trip each (store/tam_pg.py), about 30 us each over a Unix socket, so the loop waits little
# on them. Measured 2026-12-05 23:47-23:52 UTC, load 3.9-5.8, 2 workers on PostgreSQL (Unix
# socket), coaps-psk, --devices 1000 --concurrency 32 --sessions 3000, alternating: 4.50, 4.42,
# 4.25 ms TAM CPU per session on the loop against 5.47, 4.90, 5.78 on 4 threads (the engine calls
# cost the same, ~3.1 ms; the rest of the worker 0.9 ms more beside a pool), at 91-131 against
# 98-118 sessions/s; p99 latency 690-715 against 445-540 ms. What the loop gives up: while a call
# waits on PostgreSQL (a lock another worker holds, a slow server; at most
# tam_pg.ROUND_TRIP_TIMEOUT) the worker answers no one. Over a network each round trip is a
# network's: the loop would wait most of the time, which a pool hides.
# SQLite, measured 2026-12-05 16:37 UTC on 2 cores, load ~1, bench sessions --devices 1000
# --concurrency 32: coaps-psk 3.4-3.6 ms TAM CPU per session on the loop against 3.9-4.2 ms on 4
# threads; plain coap 3.9 against 4.8-5.0 ms. Both the
# engine calls (+14 %) and the loop (+40 %) get slower when they run side by side: the GIL passes
# between them at every socket call. A batching pool with one hot worker (fewer wake-ups) measured
# the same, so the cost is the contention itself.
# TEEP_COAP_ENGINE_THREADS overrides the choice for every TamHandler of the process (and `tam serve
# --workers` children).
ENGINE_THREADS_ENV = "TEEP_COAP_ENGINE_THREADS"
# Requests per group commit at most. Each runs in a savepoint; PostgreSQL keeps the ids of up to 64
# subtransactions of a transaction in shared memory and, past that, makes every other session's
# snapshot look them up on disk.
MAX_BATCH = 32
# Commit delay (as PostgreSQL's commit_delay, MySQL's binlog_group_commit_sync_delay): when other
# requests are about (the queue or the last batch held more than one) and fewer than FULL_ENOUGH
# wait, the flusher waits this long for more to join before it hands the batch over. A lone device
# never waits. Measured 2026-12-06 about 07:35 UTC, load 0.8-1.3, coaps-psk, --devices 1000
# --concurrency 32 --sessions 3000, alternating: 1.71, 1.74, 1.75 ms TAM CPU per session with 2 ms
# (8.7 requests per engine call) against 1.94, 1.91, 1.84 without (4.1-4.3), p99 157-170 ms both;
# 5 ms measured the same as 2 on SQLite (docs/scale.md, session 12).
COMMIT_DELAY = 0.002  # seconds
COMMIT_DELAY_ENV = "TEEP_COAP_COMMIT_DELAY_MS"
MAX_COMMIT_DELAY_MS = 100
FULL_ENOUGH = MAX_BATCH // 4


class EngineThreadsError(TeepCoapError):
    """TEEP_COAP_ENGINE_THREADS is not a whole number from 0 to 64."""


def engine_threads(*, same_host_store: bool = False) -> int:
    """Threads for engine calls: TEEP_COAP_ENGINE_THREADS if set (0..64), else 0 for a store on
    the same host and ENGINE_THREADS for one on another host."""
    value = os.environ.get(ENGINE_THREADS_ENV, "").strip()
    if not value:
        return 0 if same_host_store else ENGINE_THREADS
    if not value.isdigit() or int(value) > 64:
        raise EngineThreadsError(
            f"{ENGINE_THREADS_ENV}={value!r}: give a whole number from 0 (engine on the event loop) to 64"
        )
    return int(value)


class CommitDelayError(TeepCoapError):
    """TEEP_COAP_COMMIT_DELAY_MS is not a number of milliseconds from 0 to MAX_COMMIT_DELAY_MS."""


def commit_delay_seconds() -> float:
    """Seconds a group commit waits for more requests: TEEP_COAP_COMMIT_DELAY_MS if set, else
    COMMIT_DELAY."""
    value = os.environ.get(COMMIT_DELAY_ENV, "").strip()
    if not value:
        return COMMIT_DELAY
    try:
        ms = float(value)
    except ValueError:
        ms = -1.0
    if not 0 <= ms <= MAX_COMMIT_DELAY_MS:  # NaN fails too
        raise CommitDelayError(
            f"{COMMIT_DELAY_ENV}={value!r}: give milliseconds from 0 (hand each batch over at once) "
            f"to {MAX_COMMIT_DELAY_MS}"
        )
    return ms / 1000


class SessionFailed(TeepCoapError):
    """A Broker session ended without success; the message says where and why."""


SUCCESSFUL_OUTCOMES = frozenset({"success", "up-to-date"})


class TamHandler:
    """MessageHandler of a TAM: ProcessConnect / ProcessTeepMessage with errors mapped to codes.

    `tam` is a `TamEngine`: its `handle_*` calls run on `threads` worker threads, its timer when due
    before a call. `threads=0` runs the engine on the event loop: the default for a store on the
    same host (`engine_threads`), and what a store that cannot be shared between threads needs (in-memory
    SQLite: one database per connection).

    The handler keeps no session state: the engine's store does. It logs one line per session from
    the engine's `SessionEnded` events (sessions of silent devices end at the timer, as
    "abandoned") and one per refused message, and counts them. It also sums the CPU time of the
    engine calls (`engine_cpu`, the calling thread's CPU clock), so that a benchmark can tell the
    engine's share of the process's CPU from the transport's and the event loop's.

    With `group_commit` (the default) the requests that arrive while the engine is busy, or
    together in one turn of the event loop, go to the engine as one batch (`handle_batch`, at most
    MAX_BATCH): one database transaction and one commit for all of them, each answered once it is
    committed. When other requests are about, a batch first waits `commit_delay` seconds (default
    `commit_delay_seconds()`) for more to join, unless FULL_ENOUGH already wait: fewer, larger
    commits. Without group commit each request is its own call and transaction, and runs to its end
    within the handler's first step on the loop (`threads=0`), as the in-process crash tests need.
    """

    def __init__(
        self,
        tam: Any,
        *,
        session_log: logging.Logger | None = None,
        threads: int | None = None,
        group_commit: bool = True,
        commit_delay: float | None = None,
    ) -> None:
        self.tam = tam
        self.log = session_log or log
        self.sessions_done = 0
        self.sessions_failed = 0
        same_host = bool(getattr(getattr(tam, "store", None), "same_host", False))
        self._threads = engine_threads(same_host_store=same_host) if threads is None else threads
        self._pool: ThreadPoolExecutor | None = None
        self._timer_running = False
        self.engine_calls = 0
        self.engine_cpu = 0.0  # seconds of thread CPU time inside engine calls
        self._cpu_lock = threading.Lock()  # engine calls on several threads add to the same sums
        self._group_commit = group_commit and hasattr(tam, "handle_batch")
        self._queue: list[tuple[TamRequest, asyncio.Future[BatchOutcome]]] = []
        self._flushing = 0  # batches being handed over: at most one per engine thread
        self._flush_tasks: set[asyncio.Task[None]] = set()  # (referenced until done)
        self.batches = 0  # handle_batch calls made (engine_calls / batches: the mean batch)
        self._commit_delay = commit_delay_seconds() if commit_delay is None else commit_delay
        self._last_batch = 0  # requests in the last batch handed over
        self.delayed = 0  # batches that waited for the commit delay

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

    async def _run(self, call: Callable[[], Any], requests: int = 1) -> Any:
        if self._threads == 0:
            return self._timed(call, requests)
        return await asyncio.get_running_loop().run_in_executor(self._executor(), self._timed, call, requests)

    def _timed(self, call: Callable[[], Any], requests: int = 1) -> Any:
        """`call()`, its thread's CPU time added to `engine_cpu` (on whichever thread runs it)."""
        start = time.thread_time()
        try:
            return call()
        finally:
            spent = time.thread_time() - start
            with self._cpu_lock:
                self.engine_calls += requests
                self.engine_cpu += spent

    async def _batched(self, request: TamRequest) -> BatchOutcome:
        """Queue `request` for the next batch; its outcome once that batch is committed."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[BatchOutcome] = loop.create_future()
        self._queue.append((request, outcome))
        if self._flushing < max(1, self._threads):
            # a task, so the requests that arrived in this turn of the loop join the same batch
            self._flushing += 1
            flusher = loop.create_task(self._flush())
            self._flush_tasks.add(flusher)
            flusher.add_done_callback(self._flush_tasks.discard)
        return await outcome

    async def _flush(self) -> None:
        """Hand the queued requests to the engine, MAX_BATCH at a time, until none are left. It counts
        itself out as it finds the queue empty, in the same step: a request queued after that starts
        a new flusher (the task's done-callback would come a turn of the loop too late)."""
        try:
            await self._flush_queue()
        finally:
            self._flushing -= 1

    async def _flush_queue(self) -> None:
        while self._queue:
            waiting = len(self._queue)
            if self._commit_delay > 0 and waiting < FULL_ENOUGH and (waiting > 1 or self._last_batch > 1):
                self.delayed += 1
                try:
                    await asyncio.sleep(self._commit_delay)
                except BaseException:  # the server closing: nobody will hand these over
                    for _, waiter in self._queue:
                        waiter.cancel()
                    self._queue.clear()
                    raise
            batch = self._queue[:MAX_BATCH]
            del self._queue[:MAX_BATCH]
            self._last_batch = len(batch)
            call = functools.partial(self.tam.handle_batch, [request for request, _ in batch])
            try:
                outcomes: list[BatchOutcome] = await self._run(call, len(batch))
            except BaseException as exc:  # a bug, a simulated crash, or the server closing: all of it
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(exc)
                if not isinstance(exc, Exception):  # cancelled, interrupted: the flusher stops too
                    raise
                continue
            self.batches += 1
            for (_, waiter), result in zip(batch, outcomes, strict=True):
                if not waiter.done():
                    waiter.set_result(result)

    async def _timer(self, now: float) -> None:
        """The engine's housekeeping when due; one sweep at a time, the other calls go on."""
        if now < self.tam.next_timer() or self._timer_running:
            return
        self._timer_running = True
        try:
            events: tuple[TamEvent, ...] = await self._run(functools.partial(self.tam.handle_timer, now), 0)
        except TeepCoapError as exc:  # the sweep is retried at the next call; the request goes on
            self.log.warning("TAM housekeeping failed: %s", exc)
            return
        finally:
            self._timer_running = False
        self._note(events, None, now)

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None:
        now = float(self.tam.clock())
        await self._timer(now)
        if self._group_commit:
            outcome = await self._batched(TamRequest(payload, now, peer.identity))
            if isinstance(outcome, TeepCoapError):
                raise self._rejected(outcome, peer) from None
            events: tuple[TamEvent, ...] = outcome
        else:
            call = (
                functools.partial(self.tam.handle_connect, now, peer.identity)
                if not payload
                else functools.partial(self.tam.handle_message, payload, now, peer.identity)
            )
            try:
                events = await self._run(call)
            except TeepCoapError as exc:  # every engine error; `rejection_for` says which answer
                raise self._rejected(exc, peer) from None
        self._note(events, peer, now)
        return reply_of(events)

    def _rejected(self, exc: TeepCoapError, peer: PeerInfo) -> RequestRejected:
        """Count and log a refused or failed request; the transport's rejection for it."""
        rejection = rejection_for(exc) or Rejection.SERVER_ERROR
        self.sessions_failed += 1
        outcome = "failed" if rejection is Rejection.SERVER_ERROR else "refused"
        # a peer's junk must not flood the log: the line is rate-limited (`transport.junklog`)
        self.log.info("message from %s via %s %s (%s)", _who(peer), peer.transport, outcome, exc, extra=JUNK)
        return RequestRejected(rejection, str(exc))

    def _note(self, events: tuple[TamEvent, ...], peer: PeerInfo | None, now: float) -> None:
        """Count and log the sessions these events ended; a failed one's line is rate-limited."""
        for event in events:
            if not isinstance(event, SessionEnded):
                continue
            ok = event.outcome in SUCCESSFUL_OUTCOMES
            if ok:
                self.sessions_done += 1
            else:
                self.sessions_failed += 1
            if not self.log.isEnabledFor(logging.INFO):  # its line's text is not worth making unread
                continue
            where = f" of {_who(peer)} via {peer.transport}" if peer is not None else ""
            took = f" after {(now - event.started_at) * 1000:.1f} ms" if event.started_at is not None else ""
            self.log.info(
                "session %d%s: %s%s", event.session_id, where, event.outcome, took, extra=None if ok else JUNK
            )


def _who(peer: PeerInfo) -> str:
    return peer.identity or peer.address


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

    `timeout` bounds each exchange (the client bounds it too; this is the belt to its braces). A
    client whose next exchange may rightly take longer (a CoAP client's first DTLS handshake has its
    own budget) says so with `longest_wait()`.
    """

    session = BrokerSession(agent, tam_uri, max_rounds=max_rounds)
    t0 = time.perf_counter()
    action: Send | Done = session.start()
    while isinstance(action, Send):
        try:
            longest = getattr(client, "longest_wait", None)
            bound = max(timeout, longest()) if longest is not None else timeout
            answer = await asyncio.wait_for(client.post(action.payload), bound + 1.0)
        except TimeoutError:
            action = session.on_transport_error(f"no answer within {bound:g} s")
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
