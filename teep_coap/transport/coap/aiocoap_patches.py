"""A fix to aiocoap 0.4.17's DTLS transports: the clock its handshake retransmission timer reads.

tinydtls (in DTLSSocket 0.2.3) counts time in milliseconds from a whole second that DTLSSocket resets
in every `DTLS()` constructor (it re-runs tinydtls' init, clock included): the clock restarts when
the process makes any DTLS context. `checkRetransmit()` answers when the next retransmission is due
on that clock. aiocoap 0.4.17 turns the answer into a sleep with its own clock, whose origin is the
float time at which `aiocoap.transports.tinydtls` was imported (`DTLS_CLOCK_OFFSET`). The two agree
only if the context is made within the second of that import. In a program that imports first and
handshakes later (every `agent run`: it loads keys and state in between, seconds under load) the
computed wait is negative, and:

- the client (`DTLSClientConnection._run_retransmissions`, a `while True` loop) spins at full CPU
  until tinydtls' retransmission time, during every handshake: 200 Agents started at once spent their
  CPU spinning instead of answering, and the TAM starved with them (most handshakes died);
- the server (`_AddressDTLS._run_retransmissions`) re-creates its task in a busy loop.

`apply()` wraps `DTLSSocket.dtls.DTLS` to note each clock restart, and replaces both methods with
ones that read tinydtls' clock (`tinydtls_now`) and sleep at least RETRANSMIT_FLOOR and at most
RETRANSMIT_CEILING (so an error in the clock estimate costs at most that much lateness, never a busy
loop). It also counts the datagrams each client connection receives (`datagrams_received`): a
handshake that timed out after the TAM answered points at a wrong PSK, one that heard nothing at an
absent TAM (`diagnosis`).

Left alone: on a TAM every new client's context restarts the clock for the handshakes in progress,
so their server-side retransmissions come later than tinydtls meant (a DTLSSocket matter).
Upstream-style: the same change belongs in aiocoap's tinydtls.py / tinydtls_server.py; this module
checks the aiocoap version it was written for and leaves any other version alone (with a warning)
rather than patch code it has not seen.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import aiocoap.meta

log = logging.getLogger("teep_coap.transport.coap")

WRITTEN_FOR = "0.4.17"  # the aiocoap release whose DTLS transports this module patches
RETRANSMIT_FLOOR = 0.02  # seconds: shortest wait between two retransmission checks
RETRANSMIT_CEILING = 1.0  # seconds: longest, so a wrong clock estimate is never late by more

_state: dict[str, Any] = {"epoch": None, "applied": False}


def _tinydtls_epoch() -> float:
    """The whole second tinydtls' clock counts from.

    DTLSSocket 0.2.3 initialises tinydtls (and with it the process-wide clock, `time(NULL)`) in
    every `DTLS()` constructor, so the clock restarts whenever any context is made: on a TAM, with
    every new client. `apply()` wraps the constructor to note each restart; before the first context
    there is no clock to read (then `now` is 0, and RETRANSMIT_CEILING bounds any error).
    """
    epoch = _state["epoch"]
    return time.time() if epoch is None else float(epoch)


def _noting_clock_restarts(original: Any) -> Any:
    """`dtls.DTLS` that records the second at which the new context restarted tinydtls' clock."""

    def make_context(*args: Any, **kwargs: Any) -> Any:
        context = original(*args, **kwargs)
        _state["epoch"] = math.floor(time.time())
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
    _state["client_datagram_received"](self, data, addr)


def datagrams_received(connection: Any) -> int:
    """Datagrams a DTLS client connection has received so far (0 before `apply()`)."""
    return int(getattr(connection, "_teep_datagrams", 0))


_HANDSHAKE_RECORD = 22
_CLIENT_HELLO = 1


def restarts_authenticated_session(connection: Any, datagram: bytes) -> bool:
    """True if `datagram` is a ClientHello in epoch 0 sent to a server-side session that has
    already looked up a PSK (so it belongs to a handshake that got past its ClientKeyExchange).

    aiocoap's DTLS server keeps one session per client address and its key store refuses a second
    identity on a session ("DTLS stack tried accessing different keys", an exception out of the
    datagram handler). When a client's ephemeral port is reused by another device (a burst of
    clients, or a client that restarted its handshake on a fresh socket), the new device's
    handshake would fail on the old session for ever; RFC 6347 §4.2.8 lets a server treat such a
    ClientHello as a new connection, which the caller does by dropping the old session first.
    """
    if len(datagram) < 14 or datagram[0] != _HANDSHAKE_RECORD or datagram[13] != _CLIENT_HELLO:
        return False
    if datagram[3:5] != b"\x00\x00":  # not epoch 0: a renegotiation inside the session
        return False
    store = getattr(connection, "_psk_store", None)
    return getattr(store, "_claims", None) is not None


def apply() -> bool:
    """Patch aiocoap's DTLS client and server transports once; False if the version is not ours."""
    if _state["applied"]:
        return True
    if aiocoap.meta.version != WRITTEN_FOR:
        log.warning(
            "aiocoap %s is not %s: its DTLS retransmission timer is left unpatched",
            aiocoap.meta.version,
            WRITTEN_FOR,
        )
        return False
    try:
        from aiocoap.transports import tinydtls, tinydtls_server
    except ImportError:  # DTLSSocket not installed: nothing to patch, coaps is unavailable anyway
        return False
    from DTLSSocket import dtls

    dtls.DTLS = _noting_clock_restarts(dtls.DTLS)
    tinydtls.DTLSClientConnection._run_retransmissions = _client_retransmissions
    single = tinydtls.DTLSClientConnection.SingleConnection
    _state["client_datagram_received"] = single.datagram_received
    single.datagram_received = _counting_datagram_received
    tinydtls_server._AddressDTLS._run_retransmissions = _server_retransmissions
    _state["applied"] = True
    return True


def applied() -> bool:
    """True once `apply()` has patched aiocoap (tests check that the pinned version gets the fix)."""
    return bool(_state["applied"])


__all__ = [
    "RETRANSMIT_CEILING",
    "RETRANSMIT_FLOOR",
    "WRITTEN_FOR",
    "applied",
    "apply",
    "datagrams_received",
    "restarts_authenticated_session",
    "tinydtls_now",
]
