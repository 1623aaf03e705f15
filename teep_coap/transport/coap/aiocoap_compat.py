"""Every use of aiocoap's internals, in one place, for the one aiocoap release it was written for.

teep-coap adapts aiocoap 0.4.17 where its public API cannot do what a TAM under attack needs:
bounded per-peer caches, 4.08 for a Block1 gap, junk options dropped instead of raised, cheaper
option copies, DTLS sessions that end and are bounded, a DTLS retransmission timer on the right clock,
and an early look at each plain-CoAP datagram before aiocoap's dispatch. Each of those touches names
aiocoap does not promise to keep (attributes and methods starting with `_`). They all live here, and
no other module may touch them (`tests/transport/test_aiocoap_compat.py` greps for it), so moving to
another aiocoap release means reading this one file.

Importing this module checks the installed aiocoap version: another one raises
`AiocoapVersionError` naming both versions, unless the environment variable
`TEEP_COAP_AIOCOAP_UNCHECKED=1` says to go on anyway (then each adaptation is applied as written,
at the operator's risk, with one warning).

**DTLS retransmission clock.** tinydtls (DTLSSocket 0.2.3) counts milliseconds from a whole second
reset by every `DTLS()` constructor; aiocoap 0.4.17 turns its "next retransmission at T" into a sleep
on its own clock, which starts at aiocoap's import. In a program that handshakes seconds after the
import (every `agent run`) the wait was negative and `_run_retransmissions` spun at full CPU through
every handshake (client) or re-created its task in a busy loop (server). `apply_dtls_fixes()` keeps
tinydtls' clock on its first origin, sleeps on that clock (RETRANSMIT_FLOOR to RETRANSMIT_CEILING),
and counts the datagrams each client connection receives (`datagrams_received`, for `diagnosis`).
Upstream-style, the timer fix belongs in aiocoap's tinydtls*.py, the clock in DTLSSocket.
"""

from __future__ import annotations

import asyncio
import copy
import ctypes
import functools
import logging
import math
import os
import socket
import time
import types
from collections.abc import Callable
from typing import Any

import aiocoap
import aiocoap.error
import aiocoap.meta
import aiocoap.resource
from aiocoap import Message
from aiocoap.blockwise import Block1Spool, Block2Cache, IncompleteException
from aiocoap.error import UnparsableMessage
from aiocoap.numbers import TransportTuning
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.options import Options
from aiocoap.util.asyncio.timeoutdict import TimeoutDict

from teep_coap.errors import TeepCoapError
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
    MAX_BLOCK1_ASSEMBLIES,
    MAX_BLOCK1_BYTES,
    MAX_BLOCK2_RESPONSES,
    MAX_DTLS_SESSIONS,
    MAX_RECENT_MESSAGES,
    DuplicateCache,
)

log = logging.getLogger("teep_coap.transport.coap")

WRITTEN_FOR = "0.4.17"  # the aiocoap release every adaptation below was written for and tested with
UNCHECKED_ENV = "TEEP_COAP_AIOCOAP_UNCHECKED"  # "1": use another aiocoap release anyway
RETRANSMIT_FLOOR = 0.02  # seconds: shortest wait between two retransmission checks
RETRANSMIT_CEILING = 1.0  # seconds: longest, so a wrong clock estimate is never late by more


class AiocoapVersionError(TeepCoapError):
    """The installed aiocoap is not the release teep-coap's adaptations were written for."""


def check_version(installed: str, environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """True if `installed` is WRITTEN_FOR; False (one warning) if the override is set; else raise."""
    if installed == WRITTEN_FOR:
        return True
    if environ.get(UNCHECKED_ENV) == "1":
        log.warning(
            "aiocoap %s is not %s: its internals are adapted as for %s (%s=1)",
            installed,
            WRITTEN_FOR,
            WRITTEN_FOR,
            UNCHECKED_ENV,
        )
        return False
    raise AiocoapVersionError(
        f"teep-coap needs aiocoap {WRITTEN_FOR} (installed: {installed}): install aiocoap=={WRITTEN_FOR}, "
        f"or set {UNCHECKED_ENV}=1 to try this one at your own risk"
    )


check_version(aiocoap.meta.version)

_state: dict[str, Any] = {"epoch": None, "applied": False}


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
    parent = self.parent()
    if parent is not None:
        parent._teep_datagrams = getattr(parent, "_teep_datagrams", 0) + 1
        if data[:1] == bytes((APPLICATION_DATA,)):
            parent._teep_app_records = getattr(parent, "_teep_app_records", 0) + 1
    _state["client_datagram_received"](self, data, addr)


def datagrams_received(connection: Any) -> int:
    """Datagrams a DTLS client connection has received so far (0 before `apply_dtls_fixes()`)."""
    return int(getattr(connection, "_teep_datagrams", 0))


def dtls_client_app_records(context: aiocoap.Context) -> int:
    """Application-data records (CoAP messages: ACKs, responses) all DTLS client connections of a
    client `context` have received so far; alerts and handshake records are not counted."""
    total = 0
    for mi in _message_interfaces(context):
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
    single = tinydtls.DTLSClientConnection.SingleConnection
    _state["client_datagram_received"] = single.datagram_received
    single.datagram_received = _counting_datagram_received
    tinydtls_server._AddressDTLS._run_retransmissions = _server_retransmissions
    _state["applied"] = True
    return True


def dtls_fixes_applied() -> bool:
    """True once `apply_dtls_fixes()` has patched aiocoap."""
    return bool(_state["applied"])


def _message_interfaces(context: aiocoap.Context) -> list[Any]:
    found = []
    for ri in context.request_interfaces:
        mi = getattr(getattr(ri, "token_interface", None), "message_interface", None)
        if mi is not None:
            found.append(mi)
    return found


def _dtls_pool(context: aiocoap.Context) -> Any:
    for mi in _message_interfaces(context):
        pool = getattr(mi, "_pool", None)
        if pool is not None and hasattr(pool, "_connections"):
            return pool
    return None


def dtls_client_in_handshake(context: aiocoap.Context) -> Any:
    """The tinydtls client connection of a client `context` still in its handshake, or None."""
    for mi in _message_interfaces(context):
        pool = getattr(mi, "_pool", None)
        if pool is None or not hasattr(pool, "values"):
            continue
        for conn in list(pool.values()):
            if getattr(conn, "_queue", None) is not None:  # aiocoap queues sends until connected
                return conn
    return None


def dtls_server_sessions(context: aiocoap.Context | None) -> int:
    """Server-side DTLS sessions a server `context` keeps (0 without a DTLS server)."""
    pool = _dtls_pool(context) if context is not None else None
    return len(pool._connections) if pool is not None else 0


def _sending(watch: HandshakeWatch, send: Callable[[bytes], None], data: bytes) -> None:
    watch.server_sent(data)
    send(data)


def tidy_dtls_server(
    context: aiocoap.Context, on_bad_finished: Callable[[str, str], None] | None = None
) -> None:
    """Make aiocoap's DTLS server forget sessions that are over, bound how many it keeps, and tell a
    client at once when its Finished does not verify.

    aiocoap 0.4.17 logs a peer's close_notify (alert level *warning*) as "unhandled" and keeps the
    session, and never calls its own purge: every finished session stayed in memory, and a client
    that later got the same ephemeral port had its new ClientHello fed to the dead session. Here a
    warning-level close_notify ends the session as the fatal one does, a new ClientHello on an
    authenticated session's address starts afresh, and more than MAX_DTLS_SESSIONS sessions drop the
    least recently used.

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

    pool = _dtls_pool(context)
    if pool is None:
        return

    class _Address(tinydtls_server._AddressDTLS):
        teep_connected = False

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.teep_watch = HandshakeWatch()
            super().__init__(*args, **kwargs)
            # our ServerHello flight on its way out (overriding `_write`, the callback DTLSSocket
            # holds, made the interpreter crash in garbage collection)
            self._underlying_address.send = functools.partial(
                _sending, self.teep_watch, self._underlying_address.send
            )

        def _event(self, level: int, code: int) -> None:
            if (level, code) == (LEVEL_NOALERT, DTLS_EVENT_CONNECTED):
                self.teep_connected = True
            if (level, code) == (LEVEL_WARNING, CODE_CLOSE_NOTIFY):
                if pool._connections.get(self._underlying_address.address) is self:
                    self._inject_error(CloseNotifyReceived())
                return
            super()._event(level, code)

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

    original = pool.datagram_received

    def datagram_received(data: bytes, sockaddr: Any) -> None:
        known = pool._connections.get(sockaddr)
        if known is not None and restarts_authenticated_session(known, data):
            known._inject_error(CloseNotifyReceived())  # a new client on an old port: start afresh
        if sockaddr not in pool._connections:
            while len(pool._connections) >= MAX_DTLS_SESSIONS:
                _, oldest = next(iter(pool._connections.items()))
                oldest._inject_error(
                    aiocoap.error.LibraryShutdown("DTLS session dropped (least recently used)")
                )
        # copies of the handshake records: tinydtls decrypts `data` in place, bytes or not
        client_records = records(data) if data[:1] in (b"\x14", b"\x16") else []
        known = pool._connections.get(sockaddr)
        if client_records and isinstance(known, _Address) and not known.teep_connected:
            known.teep_watch.before(client_records)
        original(data, sockaddr)
        session = pool._connections.get(sockaddr)
        if client_records and isinstance(session, _Address):
            check_finished(session, client_records, sockaddr)

    pool._Address = _Address
    pool.datagram_received = datagram_received


def server_socket(context: aiocoap.Context) -> socket.socket | None:
    """The UDP socket the (single) server transport of `context` is bound to, None if not found."""
    for mi in _message_interfaces(context):
        transport = getattr(mi, "transport", None)
        if transport is None:  # tinydtls_server / simplesocketserver keep it in their pool
            transport = getattr(getattr(mi, "_pool", None), "_transport", None)
        if transport is not None:
            sock: socket.socket = transport.get_extra_info("socket")
            return sock
    return None


def release_oscore_context(security_context: Any) -> None:
    """Persist an OSCORE FilesystemSecurityContext's sequence number and release its lock now (not
    whenever the garbage collector runs); nothing for any other credential."""
    if getattr(security_context, "lockfile", None) is not None:
        security_context._destroy()


# --- plain CoAP: a look at each datagram before aiocoap's dispatch ------------------------------

DatagramGate = Callable[[bytes, Any], "bytes | bool"]


def install_datagram_gate(context: aiocoap.Context, gate: DatagramGate) -> bool:
    """Run `gate(datagram, remote)` on every datagram the plain-CoAP (udp6) server transport of
    `context` receives, before aiocoap decodes and dispatches it (`remote` is the address object
    aiocoap would give the message): True passes it on to aiocoap, False drops it, bytes are sent
    back to the sender instead (from the address it was sent to). False if `context` has no udp6
    transport (DTLS, OSCORE-only), and nothing is installed.
    """
    from aiocoap.transports.udp6 import MessageInterfaceUDP6, UDP6EndpointAddress

    for mi in _message_interfaces(context):
        if not isinstance(mi, MessageInterfaceUDP6):
            continue
        original = mi.datagram_msg_received

        def datagram_msg_received(
            data: bytes, ancdata: Any, flags: int, address: Any, mi: Any = mi, original: Any = original
        ) -> None:
            pktinfo = None
            for level, kind, value in ancdata:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                    pktinfo = value
            verdict = gate(data, UDP6EndpointAddress(address, mi, pktinfo=pktinfo))
            if verdict is True:
                original(data, ancdata, flags, address)
            elif verdict:
                source = [] if pktinfo is None else [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, pktinfo)]
                try:
                    mi.transport.sendmsg(verdict, source, 0, address)
                except OSError as exc:  # the peer's address may be unreachable: nothing to tell it
                    log.debug("early answer to %s not sent: %s", address, exc)

        mi.datagram_msg_received = datagram_msg_received
        return True
    return False


# --- caches: bounded, and a Block1 gap is 4.08 ---------------------------------------------------


class BoundedTimeoutDict(TimeoutDict[Any, Message]):
    """aiocoap's TimeoutDict holding at most `max_items` entries and `max_bytes` of payload; beyond,
    the oldest entries are dropped (as if they had timed out)."""

    def __init__(self, timeout: float, max_items: int, max_bytes: int | None = None) -> None:
        super().__init__(timeout)
        self.max_items = max_items
        self.max_bytes = max_bytes

    def __setitem__(self, key: Any, value: Message) -> None:
        items = self._items
        items.pop(key, None)  # re-inserted below: a replaced entry counts as the newest
        while items and len(items) >= self.max_items:
            del items[next(iter(items))]
        self.make_room(key, len(value.payload))
        super().__setitem__(key, value)

    def make_room(self, key: Any, extra: int) -> None:
        """Drop the oldest entries other than `key` until `extra` more payload bytes fit."""
        if self.max_bytes is None:
            return
        items = self._items
        total = sum(len(m.payload) for m in items.values()) + extra
        for old in [k for k in items if k != key]:
            if total <= self.max_bytes:
                break
            total -= len(items.pop(old).payload)

    def discard(self, key: Any) -> None:
        """Forget `key` if present."""
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


def _block_key(request: Message) -> Any:
    from aiocoap.blockwise import _extract_block_key

    return _extract_block_key(request)


class BoundedBlock1Spool(Block1Spool):
    """Block1 assembly with bounded memory, and 4.08 (not 5.00) for a block that leaves a gap."""

    def __init__(self) -> None:
        super().__init__()
        self._assemblies = BoundedTimeoutDict(
            TransportTuning().MAX_TRANSMIT_WAIT, MAX_BLOCK1_ASSEMBLIES, MAX_BLOCK1_BYTES
        )

    def feed_and_take(self, req: Message) -> Message:
        block1 = req.opt.block1
        if block1 is not None and block1.block_number > 0:
            self._assemblies.make_room(_block_key(req), len(req.payload))
        elif block1 is not None:
            # aiocoap appends each block with `payload += block`: on bytes that copies the whole body
            # per block (quadratic: 16-byte blocks of a 1 MiB body copy 32 GiB); a bytearray grows in place
            req.payload = bytearray(req.payload)
        try:
            return super().feed_and_take(req)
        except ValueError:  # aiocoap's "gap or overlap" (a bare ValueError from _append_request_block)
            self._assemblies.discard(_block_key(req))
            raise IncompleteException from None


class BoundedBlock2Cache(Block2Cache):
    """Block2 response cache holding at most MAX_BLOCK2_RESPONSES responses."""

    def __init__(self) -> None:
        super().__init__()
        self._completes = BoundedTimeoutDict(TransportTuning().MAX_TRANSMIT_WAIT, MAX_BLOCK2_RESPONSES)


def bound_resource_caches(resource: aiocoap.resource.Resource) -> None:
    """Give a resource (after its `__init__`) the bounded Block1 spool and Block2 cache."""
    resource._block1 = BoundedBlock1Spool()
    resource._block2 = BoundedBlock2Cache()


def _deduplicate_message(self: Any, message: Message) -> bool:
    """aiocoap's `MessageManager._deduplicate_message` over a `DuplicateCache`: same answers, no
    timer per message, bounded size."""
    key = (message.remote, message.mid)
    cache: DuplicateCache = self._recent_messages
    if key in cache:
        if message.mtype is aiocoap.CON and cache[key] is not None:
            self._send_initially(cache[key])  # the stored response again (RFC 7252 §4.5)
        return True
    cache.remember(key, time.monotonic(), message.transport_tuning.EXCHANGE_LIFETIME)
    return False


def bound_duplicate_caches(context: aiocoap.Context) -> None:
    """Give every message manager of a server context the bounded duplicate cache."""
    for ri in context.request_interfaces:
        mm = getattr(ri, "token_interface", None)
        if mm is None or not hasattr(mm, "_recent_messages"):
            continue
        cache = DuplicateCache(MAX_RECENT_MESSAGES)
        cache.update(mm._recent_messages)
        mm._recent_messages = cache
        mm._deduplicate_message = types.MethodType(_deduplicate_message, mm)


_original_decode = Message.decode.__func__


@functools.wraps(_original_decode)
def _decode(cls: type[Message], rawdata: bytes, remote: Any = None) -> Message:
    try:
        return _original_decode(cls, rawdata, remote)
    except UnparsableMessage:
        raise
    except Exception as exc:  # an option value that does not decode (UTF-8, block, uint): junk
        raise UnparsableMessage(f"option does not decode: {type(exc).__name__}") from None


def harden_message_decode() -> None:
    """Make every option decoding failure of `aiocoap.Message.decode` an `UnparsableMessage`, which
    all of aiocoap's transports drop with one log line (idempotent; process-wide)."""
    if Message.decode.__func__ is not _decode:
        Message.decode = classmethod(_decode)


# --- cheaper copies of requests and responses ----------------------------------------------------

_URI_PATH = OptionNumber.URI_PATH


class _SharedOptions(Options):
    """Options whose (deep) copy shares the option objects and copies only the per-number lists.

    aiocoap copies messages with `Message.copy`, which deep-copies the options: the Site's path
    strip (twice per request) and each Block2 chunk of a response; ≈ 1 ms of the TAM's CPU per
    session in all. aiocoap replaces options, it never changes an option object in place, so
    sharing them is safe; the lists are copied so that adding an option to one message does not
    add it to the other.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedOptions:
        new = _SharedOptions()
        new._options = {k: list(v) for k, v in self._options.items()}
        return new


def with_shared_options(msg: Message) -> Message:
    """`msg` with options that copy cheaply (same slots, so the class can be swapped in place)."""
    msg.opt.__class__ = _SharedOptions
    return msg


def _without_path(request: Message) -> Message:
    """`request.copy(uri_path=())` without a deep copy of every option."""
    new = copy.copy(request)
    opts = _SharedOptions()
    opts._options = {k: list(v) for k, v in request.opt._options.items() if k != _URI_PATH}
    new.opt = opts
    return new


class ExactPathSite(aiocoap.resource.Site):
    """aiocoap's Site with a cheaper path strip for exact matches (the TEEP resource's path)."""

    def _find_child_and_pathstripped_message(self, request: Message) -> tuple[Any, Message]:
        child = self._resources.get(request.opt.uri_path)
        if child is None:
            return super()._find_child_and_pathstripped_message(request)
        stripped = getattr(request, "_teep_stripped", None)
        if stripped is None:  # the same request is looked up twice (block-wise check, then render)
            stripped = _without_path(request)
            stripped._original_request_uri = (
                getattr(request, "_original_request_uri", None) or request.get_request_uri()
            )
            request._teep_stripped = stripped
        return child, stripped


__all__ = [
    "RETRANSMIT_CEILING",
    "RETRANSMIT_FLOOR",
    "UNCHECKED_ENV",
    "WRITTEN_FOR",
    "AiocoapVersionError",
    "BoundedBlock1Spool",
    "BoundedBlock2Cache",
    "BoundedTimeoutDict",
    "ExactPathSite",
    "apply_dtls_fixes",
    "bound_duplicate_caches",
    "bound_resource_caches",
    "check_version",
    "datagrams_received",
    "dtls_client_app_records",
    "dtls_client_in_handshake",
    "dtls_fixes_applied",
    "dtls_server_sessions",
    "harden_message_decode",
    "install_datagram_gate",
    "release_oscore_context",
    "restarts_authenticated_session",
    "server_socket",
    "tidy_dtls_server",
    "tinydtls_now",
    "with_shared_options",
]


def is_edhoc_responder_context(value: Any) -> bool:
    """Whether `value` is the security context aiocoap's OSCORE site stores for an EDHOC handshake.

    aiocoap 0.4.17 keeps each responder-side EDHOC session as an extra credentials entry under a
    random ":<uuid>" label and never removes it; its connection identifiers C_R come from the 48
    one-byte CBOR integers, so the 49th handshake answers 5.00 "Too many contexts". The server's
    credentials map uses this test to keep only the newest ones (`IndexedCredentials`).
    """
    return type(value).__name__ == "EdhocResponderContext" and type(value).__module__ == "aiocoap.edhoc"


_EDHOC_FIX = "_teep_edhoc_once"


def apply_edhoc_client_fix() -> bool:
    """One EDHOC handshake per client credentials entry, not one per request (aiocoap 0.4.17).

    aiocoap's OSCORE transport asks `EdhocCredentials._established_context` whether a handshake is
    already done, but stores the handshake on the transport instead (`self._established_context`),
    so the question is always "no" and every request runs EDHOC again: three handshakes for a TEEP
    session, a new responder context at the TAM each time. Here the credentials object keeps one
    handshake task and, once it succeeded, marks itself established; aiocoap then awaits the task
    it kept (still the same one, as long as the client context talks to one peer, which each
    `CoapClient` does). A failed handshake is forgotten, so the next request tries again.
    Upstream-style, the fix is one attribute name in aiocoap/transports/oscore.py.
    """
    from aiocoap.edhoc import EdhocCredentials

    if getattr(EdhocCredentials, _EDHOC_FIX, False):
        return False
    original = EdhocCredentials.establish_context

    def establish_context(self: Any, *args: Any, **kwargs: Any) -> Any:
        task = self.__dict__.get(_EDHOC_FIX)
        if task is None:
            task = asyncio.ensure_future(original(self, *args, **kwargs))
            self.__dict__[_EDHOC_FIX] = task

            def settled(done: asyncio.Future[Any]) -> None:
                if done.cancelled() or done.exception() is not None:
                    self.__dict__.pop(_EDHOC_FIX, None)
                else:
                    self._established_context = done

            task.add_done_callback(settled)
        return task

    EdhocCredentials.establish_context = establish_context
    setattr(EdhocCredentials, _EDHOC_FIX, True)
    return True
