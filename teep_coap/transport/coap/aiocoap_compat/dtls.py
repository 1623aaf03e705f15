"""DTLS (tinydtls): the retransmission clock, datagram counts, bounded and tidy server sessions."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import aiocoap
import aiocoap.error
import aiocoap.meta
import aiocoap.resource

from teep_coap.transport.coap.aiocoap_compat.contexts import dtls_pool, message_interfaces
from teep_coap.transport.coap.dtls_finished import finished_decrypts
from teep_coap.transport.coap.dtls_watch import (
    APPLICATION_DATA,
    CLIENT_HELLO,
    DECRYPT_ERROR,
    HANDSHAKE_RECORD,
    HandshakeWatch,
    Record,
    fatal_alert,
    records,
)
from teep_coap.transport.coap.hardening import (
    MAX_DTLS_HANDSHAKES,
    MAX_DTLS_SESSIONS,
    MAX_DTLS_SESSIONS_PER_IDENTITY,
)
from teep_coap.transport.coap.idle_expiry import IDLE_TIMEOUT, IdleSweeper, IdleTracker

log = logging.getLogger("teep_coap.transport.coap")


RETRANSMIT_FLOOR = 0.02  # seconds: shortest wait between two retransmission checks
RETRANSMIT_CEILING = 1.0  # seconds: longest, so a wrong clock estimate is never late by more

_state: dict[str, Any] = {"epoch": None, "applied": False}


DATAGRAM_LIMIT = 1232  # bytes: IPv6's minimum MTU (1280) less its header and UDP's; records joined up to it


class _Flight:
    """A server session's output while one datagram of its peer is handled: tinydtls writes every
    record of a flight (ServerHello, ServerHelloDone; ChangeCipherSpec, Finished) with its own call,
    and each was its own datagram (one `sendto` each at the TAM, one receive at the client). RFC 6347
    §4.1.1 lets several records share a datagram; they are joined up to DATAGRAM_LIMIT."""

    __slots__ = ("records", "watching")

    def __init__(self) -> None:
        self.records: list[bytes] | None = None  # None: not collecting, send at once
        self.watching = True  # the handshake watch looks at our records until the session is up


class _NothingDue:
    """The retransmission "task" of a session that has nothing to retransmit (its handshake is over):
    aiocoap only ever cancels it."""

    @staticmethod
    def cancel() -> bool:
        return False


_NOTHING_DUE = _NothingDue()


def _inert_io(_peer: Any, data: bytes) -> int:
    return len(data)


def _inert_event(_level: int, _code: int) -> None:
    return None


# The callbacks an ended session's DTLSSocket context is left with. aiocoap gives each peer its own
# tinydtls context whose callbacks are the peer object's bound methods: a reference cycle, so an
# ended session (a failed handshake included) was freed only by the cyclic collector's rare full
# collections. 20,000 handshakes that failed after the server's hello flight held 150 MB until one
# came (2026-12-06); with these (and `_release`) the context and the peer go as soon as the pool
# lets go of them.
_INERT_CALLBACKS = {"read": _inert_io, "write": _inert_io, "event": _inert_event}


def _release(session: Any) -> None:
    """Break an ended server session's cycles (call it outside tinydtls' own calls): its DTLSSocket
    context's callbacks, and the `send` that `tidy_dtls_server` put on its socket address (a partial
    over that address's own bound method)."""
    socket = getattr(session, "_dtls_socket", None)
    if socket is not None:
        socket.pycb = _INERT_CALLBACKS
    session._retransmission_task.cancel()
    session._retransmission_task = _NOTHING_DUE
    vars(session._underlying_address).pop("send", None)


def join_records(records: list[bytes], limit: int = DATAGRAM_LIMIT) -> list[bytes]:
    """Records joined into as few datagrams of at most `limit` bytes as their order allows."""
    datagrams: list[bytes] = []
    current = b""
    for record in records:
        if current and len(current) + len(record) > limit:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams


# --- DTLS: retransmission clock, datagram counts, sessions --------------------------------------


def _tinydtls_epoch() -> float:
    """The whole second tinydtls' clock counts from (kept by `_pinning_the_clock`); before the first
    context there is no clock to read (then `now` is 0, and RETRANSMIT_CEILING bounds any error)."""
    epoch = _state["epoch"]
    return time.time() if epoch is None else float(epoch)


def _clock_offset(dtls_module: Any) -> Any:
    """tinydtls' `dtls_clock_offset` (a `time_t`, exported by DTLSSocket's extension), or None."""
    try:
        return ctypes.c_long.in_dll(ctypes.CDLL(dtls_module.__file__), "dtls_clock_offset")
    except (OSError, ValueError, AttributeError):
        return None


def _pinning_the_clock(original: Any, offset: Any) -> Any:
    """`dtls.DTLS` that keeps tinydtls' clock on its first origin.

    Each constructor re-runs tinydtls' init, which restarts the process-wide clock at the current
    second. On a TAM a new client's context made every handshake in progress see its queued
    retransmissions (due times on the old origin) come late by the time since the last restart:
    during a burst of clients, seconds to tens of seconds. Writing the first origin back after each
    constructor keeps one clock for every session. Without the symbol (`offset` None) the restart is
    only noted, so that waits are computed on the new origin.
    """

    def make_context(*args: Any, **kwargs: Any) -> Any:
        context = original(*args, **kwargs)
        if offset is None:
            _state["epoch"] = math.floor(time.time())
        elif _state["epoch"] is None:
            _state["epoch"] = int(offset.value)
        else:
            offset.value = int(_state["epoch"])
        return context

    make_context.__wrapped__ = original  # type: ignore[attr-defined]
    return make_context


def tinydtls_now() -> float:
    """Seconds on tinydtls' clock (the scale of `checkRetransmit() / DTLS_TICKS_PER_SECOND`)."""
    return time.time() - _tinydtls_epoch()


def retransmission_wait(due_ticks: int) -> float:
    """Seconds to sleep until tinydtls' next retransmission, bounded to [FLOOR, CEILING]."""
    from aiocoap.transports.tinydtls import DTLS_TICKS_PER_SECOND

    wait = due_ticks / DTLS_TICKS_PER_SECOND - tinydtls_now()
    return min(max(wait, RETRANSMIT_FLOOR), RETRANSMIT_CEILING)


async def _client_retransmissions(self: Any) -> None:
    """DTLSClientConnection._run_retransmissions on tinydtls' clock (sleeps, never spins)."""
    while True:
        due = self._dtls_socket.checkRetransmit()
        if due == 0:
            return
        await asyncio.sleep(retransmission_wait(due))


def _retransmit_when_due(session: Any) -> None:
    """A server session's due handshake retransmissions (tinydtls sends them in `checkRetransmit`),
    then a loop timer for the next, kept where aiocoap keeps its retransmission task (aiocoap only
    cancels it). aiocoap started a task per datagram for this: a coroutine, a first step, a sleep
    and, at the next datagram, a cancellation step (about 12 µs against 2 µs for a timer; two per
    coaps-psk session). The session ending cancels the timer, which lets go of the session."""
    due = session._dtls_socket.checkRetransmit()
    if due == 0:
        session._retransmission_task = _NOTHING_DUE
        return
    session._retransmission_task = asyncio.get_running_loop().call_later(
        retransmission_wait(due), _retransmit_when_due, session
    )


async def _server_retransmissions(self: Any) -> None:
    """_AddressDTLS._run_retransmissions on tinydtls' clock (one wait, then the next task)."""
    due = self._dtls_socket.checkRetransmit()
    if due == 0:
        return
    await asyncio.sleep(retransmission_wait(due))
    self._retransmission_task = asyncio.create_task(
        self._run_retransmissions(), name="DTLS server handshake retransmissions"
    )


def _counting_datagram_received(self: Any, data: bytes, addr: Any) -> None:
    """Counts the client connection's datagrams, and sends the records tinydtls writes while it
    handles one (its ClientKeyExchange, ChangeCipherSpec, Finished) joined (see `_Flight`)."""
    parent = self.parent()
    if parent is None:
        _state["client_datagram_received"](self, data, addr)
        return
    parent._teep_datagrams = getattr(parent, "_teep_datagrams", 0) + 1
    if data[:1] == bytes((APPLICATION_DATA,)):
        parent._teep_app_records = getattr(parent, "_teep_app_records", 0) + 1
    parent._teep_held = []
    try:
        _state["client_datagram_received"](self, data, addr)
    finally:
        held, parent._teep_held = parent._teep_held, None
        for datagram in join_records(held):
            _state["client_write"](parent, None, datagram)


def _client_write(self: Any, recipient: Any, data: bytes) -> int:
    """DTLSClientConnection._write, holding records back while a datagram is handled."""
    try:
        held = self._teep_held
    except Exception:  # tinydtls' callbacks during interpreter shutdown: as aiocoap's own
        held = None
    if held is None:
        return int(_state["client_write"](self, recipient, data))
    held.append(bytes(data))
    return len(data)


def datagrams_received(connection: Any) -> int:
    """Datagrams a DTLS client connection has received so far (0 before `apply_dtls_fixes()`)."""
    return int(getattr(connection, "_teep_datagrams", 0))


def dtls_client_app_records(context: aiocoap.Context) -> int:
    """Application-data records (CoAP messages: ACKs, responses) all DTLS client connections of a
    client `context` have received so far; alerts and handshake records are not counted."""
    total = 0
    for mi in message_interfaces(context):
        pool = getattr(mi, "_pool", None)
        if pool is None or not hasattr(pool, "values"):
            continue
        total += sum(int(getattr(conn, "_teep_app_records", 0)) for conn in list(pool.values()))
    return total


def restarts_authenticated_session(connection: Any, datagram: bytes) -> bool:
    """True if `datagram` is a ClientHello in epoch 0 sent to a server-side session that has
    already looked up a PSK (so it belongs to a handshake that got past its ClientKeyExchange).

    aiocoap's DTLS server keeps one session per client address and its key store refuses a second
    identity on a session ("DTLS stack tried accessing different keys", an exception out of the
    datagram handler). When a client's ephemeral port is reused by another device, the new device's
    handshake would fail on the old session for ever; RFC 6347 §4.2.8 lets a server treat such a
    ClientHello as a new connection, which the caller does by dropping the old session first.
    """
    if len(datagram) < 14 or datagram[0] != HANDSHAKE_RECORD or datagram[13] != CLIENT_HELLO:
        return False
    if datagram[3:5] != b"\x00\x00":  # not epoch 0: a renegotiation inside the session
        return False
    store = getattr(connection, "_psk_store", None)
    return getattr(store, "_claims", None) is not None


def apply_dtls_fixes() -> bool:
    """Patch aiocoap's DTLS client and server transports once; False if DTLSSocket is missing."""
    if _state["applied"]:
        return True
    try:
        from aiocoap.transports import tinydtls, tinydtls_server
    except ImportError:  # DTLSSocket not installed: nothing to patch, coaps is unavailable anyway
        return False
    from DTLSSocket import dtls

    dtls.DTLS = _pinning_the_clock(dtls.DTLS, _clock_offset(dtls))
    tinydtls.DTLSClientConnection._run_retransmissions = _client_retransmissions
    tinydtls.DTLSClientConnection._teep_held = None
    _state["client_write"] = tinydtls.DTLSClientConnection._write
    tinydtls.DTLSClientConnection._write = _client_write
    single = tinydtls.DTLSClientConnection.SingleConnection
    _state["client_datagram_received"] = single.datagram_received
    single.datagram_received = _counting_datagram_received
    tinydtls_server._AddressDTLS._run_retransmissions = _server_retransmissions
    _state["recognize_remote"] = tinydtls.MessageInterfaceTinyDTLS.recognize_remote
    _state["client_connection"] = tinydtls.DTLSClientConnection
    tinydtls.MessageInterfaceTinyDTLS.recognize_remote = _recognize_client_connection
    _state["applied"] = True
    return True


async def _recognize_client_connection(self: Any, remote: Any) -> bool:
    """aiocoap's `MessageInterfaceTinyDTLS.recognize_remote` (asked for every request a client
    sends) without a walk over its whole pool of connections (`remote in pool.values()` on a
    WeakValueDictionary: 1.6 µs with one connection pooled, 0.4 µs this way): a connection is only
    ever pooled under its own (host, port, PSK identity)."""
    return (
        isinstance(remote, _state["client_connection"])
        and self._pool.get((remote._host, remote._port, remote._pskId)) is remote
    )


def dtls_fixes_applied() -> bool:
    """True once `apply_dtls_fixes()` has patched aiocoap."""
    return bool(_state["applied"])


def dtls_client_sessions(context: aiocoap.Context) -> list[Any]:
    """The DTLS client connections a client `context` holds now (aiocoap keeps them weakly)."""
    return [
        conn
        for mi in message_interfaces(context)
        if hasattr(getattr(mi, "_pool", None), "values")
        for conn in list(mi._pool.values())
    ]


def dtls_client_in_handshake(context: aiocoap.Context) -> Any:
    """The tinydtls client connection of a client `context` still in its handshake, or None."""
    for mi in message_interfaces(context):
        pool = getattr(mi, "_pool", None)
        if pool is None or not hasattr(pool, "values"):
            continue
        for conn in list(pool.values()):
            if getattr(conn, "_queue", None) is not None:  # aiocoap queues sends until connected
                return conn
    return None


def dtls_server_sessions(context: aiocoap.Context | None) -> int:
    """Server-side DTLS sessions a server `context` keeps (0 without a DTLS server)."""
    pool = dtls_pool(context) if context is not None else None
    return len(pool._connections) if pool is not None else 0


def tidy_dtls_server(
    context: aiocoap.Context,
    on_bad_finished: Callable[[str, str], None] | None = None,
    idle_timeout: float = IDLE_TIMEOUT,
) -> IdleSweeper | None:
    """Make aiocoap's DTLS server forget sessions that are over, bound how many it keeps, and tell a
    client at once when its Finished does not verify.

    aiocoap 0.4.17 logs a peer's close_notify (alert level *warning*) as "unhandled" and keeps the
    session, and never calls its own purge: every finished session stayed in memory, and a client
    that later got the same ephemeral port had its new ClientHello fed to the dead session. Here a
    warning-level close_notify ends the session as the fatal one does, a new ClientHello on an
    authenticated session's address starts afresh, and a session silent for longer than
    `idle_timeout` is freed (`idle_expiry`; the returned sweeper counts them).

    aiocoap makes a session for any datagram from a new address, so a session count alone let
    unauthenticated datagrams push out established sessions. Handshakes not finished are kept apart:
    at most MAX_DTLS_HANDSHAKES of them (the oldest goes), and when MAX_DTLS_SESSIONS are held a new
    address pushes out the oldest unfinished handshake, an established session (the least recently
    used) only when none is left. One PSK identity holds at most MAX_DTLS_SESSIONS_PER_IDENTITY
    established sessions (its oldest goes), so one key cannot fill the table either.

    A client whose PSK differs from ours sends a Finished that tinydtls drops without a word (RFC
    6347 §4.1.2.7): the client waited out its whole timeout. When a session is still not connected
    after the client's Finished (`dtls_watch`) and that Finished does not decrypt under the PSK of
    the identity it named (`dtls_finished`), the server sends a fatal `decrypt_error` alert in epoch
    0 (RFC 5246 §7.4.9), drops the session and calls `on_bad_finished(peer, claims)`. A Finished that
    decrypts but does not verify (tinydtls' transcript after a duplicated message) stays unanswered:
    the client starts its handshake again.
    """
    from aiocoap.transports import tinydtls_server
    from aiocoap.transports.tinydtls import (
        CODE_CLOSE_NOTIFY,
        DTLS_EVENT_CONNECTED,
        LEVEL_NOALERT,
        LEVEL_WARNING,
        CloseNotifyReceived,
        FatalDTLSError,
    )

    pool = dtls_pool(context)
    if pool is None:
        return None

    collecting: list[tuple[_Flight, Callable[[bytes], None]]] = []  # flights with records held back
    unfinished: OrderedDict[Any, Any] = OrderedDict()  # address -> session in its handshake, oldest 1st
    handling = [False]  # inside one datagram's handling: hold tinydtls' records back
    # PSK identity -> its established sessions by address, oldest first; and those over the cap,
    # ended once tinydtls' call is over (ending one inside it would skip `_release`)
    established: dict[bytes, OrderedDict[Any, Any]] = {}
    over_cap: list[tuple[Any, Any]] = []

    def sending(flight: _Flight, watch: HandshakeWatch, send: Callable[[bytes], None], data: bytes) -> None:
        if flight.watching:
            watch.server_sent(data)
        if flight.records is not None:
            flight.records.append(bytes(data))
        elif handling[0]:
            flight.records = [bytes(data)]
            collecting.append((flight, send))
        else:  # a retransmission, a response rendered later: at once
            send(data)

    def flush() -> None:
        while collecting:
            flight, send = collecting.pop()
            held, flight.records = flight.records or [], None
            for datagram in join_records(held):
                send(datagram)

    class _Address(tinydtls_server._AddressDTLS):
        teep_connected = False

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.teep_watch = HandshakeWatch()
            self.teep_flight = _Flight()
            super().__init__(*args, **kwargs)
            # our records on their way out: watched (ServerHello flight) and joined per flight
            # (overriding `_write`, the callback DTLSSocket holds, made the interpreter crash in
            # garbage collection)
            self._underlying_address.send = functools.partial(
                sending, self.teep_flight, self.teep_watch, self._underlying_address.send
            )
            unfinished[self._underlying_address.address] = self

        def _event(self, level: int, code: int) -> None:
            if (level, code) == (LEVEL_NOALERT, DTLS_EVENT_CONNECTED):
                self.teep_connected = True
                self.teep_flight.watching = False
                address = self._underlying_address.address
                if unfinished.get(address) is self:
                    del unfinished[address]
                identity = self.teep_watch.identity
                if identity is not None:
                    held = established.setdefault(identity, OrderedDict())
                    held[address] = self
                    while len(held) > MAX_DTLS_SESSIONS_PER_IDENTITY:
                        over_cap.append(held.popitem(last=False))
            if (level, code) == (LEVEL_WARNING, CODE_CLOSE_NOTIFY):
                if pool._connections.get(self._underlying_address.address) is self:
                    self._inject_error(CloseNotifyReceived())
                return
            super()._event(level, code)

        def _inject_error(self, e: Exception) -> None:
            """aiocoap's end of a session, then its cycles broken (`_release`); inside tinydtls' own
            call (a datagram being handled) `received_datagram` does that once the call is over."""
            address = self._underlying_address.address
            if unfinished.get(address) is self:
                del unfinished[address]
            held = established.get(self.teep_watch.identity or b"")
            if held is not None and held.get(address) is self:
                del held[address]
                if not held:
                    del established[self.teep_watch.identity or b""]
            super()._inject_error(e)
            if not handling[0]:
                _release(self)

    def check_finished(session: Any, client_records: list[Record], sockaddr: Any) -> None:
        """After tinydtls handled the records: was one a Finished under another key than ours?"""
        if session.teep_connected:
            return
        watch: HandshakeWatch = session.teep_watch
        finished = watch.after(client_records)
        claims = getattr(session._psk_store, "_claims", None)
        if finished is None or claims is None:  # no identity known: tinydtls has sent its own alert
            return
        try:
            psk = bytes(session._psk_store[watch.identity])
        except (KeyError, RuntimeError):
            return
        if any(finished_decrypts(finished, psk, *t) for t in watch.transcripts()):
            return  # the right key, a transcript tinydtls did not like: the client starts again
        pool._transport.sendto(fatal_alert(DECRYPT_ERROR), sockaddr)
        if pool._connections.get(sockaddr) is session:
            session._inject_error(FatalDTLSError(DECRYPT_ERROR))
        if on_bad_finished is not None:
            on_bad_finished(str(session.hostinfo), str(claims))

    def drop_idle(sockaddr: Any) -> None:
        session = pool._connections.get(sockaddr)
        if session is not None:
            session._inject_error(aiocoap.error.LibraryShutdown("DTLS session dropped (idle)"))

    def make_room() -> None:
        """Before a session for a new address: the handshakes and the sessions within their caps."""
        while unfinished and (
            len(unfinished) >= MAX_DTLS_HANDSHAKES or len(pool._connections) >= MAX_DTLS_SESSIONS
        ):
            address, session = next(iter(unfinished.items()))
            if pool._connections.get(address) is session:
                session._inject_error(
                    aiocoap.error.LibraryShutdown("DTLS handshake dropped (oldest unfinished)")
                )
            else:  # ended without telling us: forget it
                del unfinished[address]
        while len(pool._connections) >= MAX_DTLS_SESSIONS:
            _, oldest = next(iter(pool._connections.items()))
            oldest._inject_error(aiocoap.error.LibraryShutdown("DTLS session dropped (least recently used)"))

    def serving() -> bool:
        return pool._transport is not None and not pool._transport.is_closing()

    idle = IdleSweeper(IdleTracker(idle_timeout), drop_idle, serving)
    idle.start(asyncio.get_running_loop())
    original = pool.datagram_received

    def datagram_received(data: bytes, sockaddr: Any) -> None:
        idle.heard(sockaddr)
        known = pool._connections.get(sockaddr)
        if known is not None and restarts_authenticated_session(known, data):
            known._inject_error(CloseNotifyReceived())  # a new client on an old port: start afresh
        if sockaddr not in pool._connections:
            make_room()
        # copies of the handshake records: tinydtls decrypts `data` in place, bytes or not
        client_records = records(data) if data[:1] in (b"\x14", b"\x16") else []
        known = pool._connections.get(sockaddr)
        if client_records and isinstance(known, _Address) and not known.teep_connected:
            known.teep_watch.before(client_records)
        handling[0] = True
        try:
            original(data, sockaddr)
        finally:
            handling[0] = False
            flush()
            while over_cap:
                address, oldest = over_cap.pop()
                if pool._connections.get(address) is oldest:
                    oldest._inject_error(
                        aiocoap.error.LibraryShutdown("DTLS session dropped (its identity has newer ones)")
                    )
        session = pool._connections.get(sockaddr)
        if client_records and isinstance(session, _Address):
            check_finished(session, client_records, sockaddr)

    def received_datagram(address: Any, data: bytes) -> None:
        """aiocoap's GoingThroughMessageDecryption._received_datagram with a loop timer for the
        handshake's retransmissions instead of a new task per datagram (`_retransmit_when_due`)."""
        address._retransmission_task.cancel()
        address._dtls_socket.handleMessage(address._dtls_session, data)
        if pool._connections.get(address._underlying_address.address) is not address:
            _release(address)  # the session ended in this datagram (an alert, a failed handshake)
            return
        _retransmit_when_due(address)

    pool._Address = _Address
    pool.datagram_received = datagram_received
    pool._message_interface._received_datagram = received_datagram
    return idle
