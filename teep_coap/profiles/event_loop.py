"""The event loop a TAM server runs on: uvloop for CoAP where it is installed, else asyncio's own.

uvloop is asyncio's API over libuv, with the loop's handles, timers, futures' scheduling and the UDP
and TCP transports in C. The TAM's code is the same on both loops; under uvloop `tam serve` counts
2.9 % fewer instructions per coaps-psk session and 2.7 % fewer per plain-CoAP session
(`scripts/tam_instructions.py`, docs/scale.md, sessions 22 and 23). `drain.py`'s batch reads of the
DTLS socket apply to asyncio's selector transport only (libuv reads what a UDP socket holds, up to
32 datagrams, per wake-up itself); those of aiocoap's recvmsg transport (plain CoAP, OSCORE, EDHOC)
apply on both loops. uvloop has no Windows build, so there the choice `auto` is asyncio; HTTP(S)
servers stay on asyncio (`server_loop` says why).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from teep_coap.errors import TeepCoapError

T = TypeVar("T")

EVENT_LOOPS = ("auto", "uvloop", "asyncio")


class EventLoopError(TeepCoapError):
    """The event loop asked for cannot run here."""


def _check_known(choice: str) -> None:
    if choice not in EVENT_LOOPS:
        raise EventLoopError(f"unknown event loop {choice!r}: choose one of {', '.join(EVENT_LOOPS)}")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop `choice` names ("auto", "uvloop" or "asyncio"); None for asyncio's
    default loop. "auto" is uvloop when it can be imported."""
    _check_known(choice)
    if choice == "asyncio":
        return None
    try:
        uvloop: Any = importlib.import_module("uvloop")
    except ImportError as exc:
        if choice == "uvloop":
            raise EventLoopError(
                f"--loop uvloop: uvloop cannot be imported ({exc}); install it (pip install uvloop, "
                "not available on Windows) or use --loop asyncio"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


COAP_SCHEMES = frozenset({"coap", "coaps", "coap+oscore"})  # the bindings that may run on uvloop


def server_loop(choice: str, scheme: str) -> str:
    """The loop a TAM serving `scheme` runs on: `choice` for CoAP (plain, DTLS, OSCORE, EDHOC),
    asyncio for HTTP(S).

    The DTLS server reads through `create_datagram_endpoint`, which uvloop implements on libuv's UDP
    handle. Plain CoAP, OSCORE and EDHOC read through aiocoap's recvmsg transport on `add_reader`,
    and uvloop stops such a reader at the first error its socket reports: the server turns ICMP error
    reports off on that socket under uvloop (`transport.coap.server_socket.ignore_icmp_errors`;
    docs/scale.md, sessions 22 and 23). HTTPS's TLS accept pauses a new connection's reading in
    `connection_made`, and uvloop starts reading after that call, so the ClientHello would reach the
    plain-TCP protocol; HTTP(S) stays on asyncio."""
    _check_known(choice)
    if scheme in COAP_SCHEMES:
        return choice
    if choice == "uvloop":
        raise EventLoopError(f"--loop uvloop serves CoAP profiles only, not {scheme}: use auto or asyncio")
    return "asyncio"


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """ "uvloop" or "asyncio": the loop a server is running on (its statistics name it)."""
    return "uvloop" if type(loop).__module__.split(".")[0] == "uvloop" else "asyncio"


def run_on(choice: str, main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop `choice` names."""
    try:
        with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
            return runner.run(main)
    finally:
        main.close()  # a no-op once run; unstarted (no such loop) it is closed unawaited


__all__ = [
    "COAP_SCHEMES",
    "EVENT_LOOPS",
    "EventLoopError",
    "loop_factory",
    "loop_name",
    "run_on",
    "server_loop",
]
