"""A fix to aiocoap 0.4.17's DTLS transports: the clock its handshake retransmission timer reads.

tinydtls (in DTLSSocket) counts time in milliseconds from the whole second at which the process
created its first DTLS context; `checkRetransmit()` answers when the next retransmission is due on
that clock. aiocoap 0.4.17 turns the answer into a sleep with its own clock, whose origin is the
float time at which `aiocoap.transports.tinydtls` was imported (`DTLS_CLOCK_OFFSET`). The two agree
only if the first context is made in the same second as that import. In a program that imports first
and handshakes later (every `agent run`: it loads keys and state in between, seconds under load; a
TAM: until its first client) the computed wait is negative, and:

- the client (`DTLSClientConnection._run_retransmissions`, a `while True` loop) spins at full CPU
  until tinydtls' retransmission time, during every handshake: 200 Agents started at once spent their
  CPU spinning instead of answering, and the TAM starved with them (most handshakes died);
- the server (`_AddressDTLS._run_retransmissions`) re-creates its task in a busy loop.

A second, smaller addition: the client's per-connection protocol counts the datagrams it receives
(`datagrams_received`), so teep-coap's handshake-stall restart can tell a slow handshake (the TAM
answers, late, on a loaded machine) from a wedged one (nothing arrives) and restart only the latter.

`apply()` replaces both methods with ones that read tinydtls' clock (`tinydtls_now`) and sleep at
least RETRANSMIT_FLOOR and at most RETRANSMIT_CEILING (so an error in the clock estimate costs at most
that much lateness, never a busy loop). Upstream-style: the same change belongs in aiocoap's
tinydtls.py / tinydtls_server.py; this module checks the aiocoap version it was written for and leaves
any other version alone (with a warning) rather than patch code it has not seen.
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
    """The whole second tinydtls' clock counts from (initialising the clock now if it is not yet).

    The first DTLS context of a process sets tinydtls' clock; making one here, before any connection,
    pins that moment. Contexts made before `apply()` (none in teep-coap) would make this an estimate,
    which RETRANSMIT_CEILING bounds.
    """
    if _state["epoch"] is None:
        from DTLSSocket import dtls

        before = time.time()
        _state["clock_context"] = dtls.DTLS(  # kept: DTLSSocket's destructor is fragile at exit
            read=lambda *_: 0,
            write=lambda *_: 0,
            event=lambda *_: 0,
            pskId=b"clock",
            pskStore={b"clock": b"0" * 16},
        )
        _state["epoch"] = float(math.floor(before))
    epoch: float = _state["epoch"]
    return epoch


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
    _tinydtls_epoch()
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
    "tinydtls_now",
]
