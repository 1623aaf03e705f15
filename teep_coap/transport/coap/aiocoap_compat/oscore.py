"""OSCORE and EDHOC: a context's lock released, responder contexts told apart, one EDHOC handshake
per client, EDHOC input lakers cannot take refused."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import aiocoap
import aiocoap.error
from aiocoap.edhoc import EdhocCredentials, EdhocResponderContext
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from teep_coap.transport.coap.edhoc_input import message_1_problem, message_3_problem
from teep_coap.transport.junklog import JUNK

log = logging.getLogger("teep_coap.transport.coap")


def release_oscore_context(security_context: Any) -> None:
    """Persist an OSCORE FilesystemSecurityContext's sequence number and release its lock now (not
    whenever the garbage collector runs); nothing for any other credential."""
    if getattr(security_context, "lockfile", None) is not None:
        security_context._destroy()


def is_edhoc_responder_context(value: Any) -> bool:
    """Whether `value` is the security context aiocoap's OSCORE site stores for an EDHOC handshake.

    aiocoap 0.4.17 keeps each responder-side EDHOC session as an extra credentials entry under a
    random ":<uuid>" label and never removes it; its connection identifiers C_R come from the 48
    one-byte CBOR integers, so the 49th handshake answers 5.00 "Too many contexts". The server's
    credentials map uses this test to keep only the newest ones (`IndexedCredentials`).
    """
    return type(value).__name__ == "EdhocResponderContext" and type(value).__module__ == "aiocoap.edhoc"


def edhoc_handshake_finished(context: Any) -> bool:
    """Whether an EDHOC responder context has verified the initiator's message_3.

    aiocoap 0.4.17 stores the context as soon as message_1 arrives, before anything is
    authenticated, and marks it complete (`_incomplete` False) once message_3 verified."""
    return getattr(context, "_incomplete", True) is False


def edhoc_message_1_from(context: Any) -> Any:
    """The transport address an EDHOC responder context's message_1 came from (hashable), or None
    when it is not known (`apply_edhoc_server_guard` notes it)."""
    remote = getattr(context, _PEER, None)
    try:
        hash(remote)
    except TypeError:
        return None
    return remote


_EDHOC_GUARD = "_teep_edhoc_guarded"
MAX_MESSAGE_1 = 1024  # bytes: a message_1 is about 40 (one EAD item); anything much longer is not one


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's text (a Rust panic's runs over several), or its type's name."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _is_panic(exc: BaseException) -> bool:
    """pyo3's PanicException (a Rust panic inside lakers), which derives from BaseException only."""
    return type(exc).__name__ == "PanicException"


# The sender of the EDHOC message being processed: aiocoap handles message_1 and message_3 in
# synchronous calls, so a slot set around each call is enough to tell them apart.
_message_1_from: list[Any] = [None]
_message_3_from: list[Any] = [None]
_PEER = "_teep_message_1_from"  # attribute of a responder context: who sent its message_1
# attribute of an OscoreSiteWrapper: the `EchoGuard` a message_1's address must pass first, if any
EDHOC_ECHO = "_teep_edhoc_echo"


def _same_peer(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # transport addresses of different kinds
        return False


def apply_edhoc_server_guard() -> bool:
    """Refuse EDHOC message_1 and message_3 that lakers cannot take (`edhoc_input`) with 4.00 before
    lakers sees them, and turn what lakers still refuses into 4.00 too (aiocoap 0.4.17 answered a
    failed message_3 with 5.00, and a Rust panic with nothing). A failed message_3 leaves its
    handshake unusable (lakers has consumed its state): the device is answered 4.00 and its client
    runs EDHOC again (`CoapClient`), the dead context is pushed out as an unfinished handshake.

    A message_3 is taken only from the transport address its message_1 came from; from elsewhere it
    is refused without reaching lakers. Its connection identifier C_R is one of 48 small numbers, so
    anyone could otherwise send a junk message_3 for each and spoil every handshake between its
    message_2 and message_3; now that takes the device's own address and port."""
    if getattr(OscoreSiteWrapper, _EDHOC_GUARD, False):
        return False
    process_message_1 = OscoreSiteWrapper._process_edhoc_msg12
    process_message_3 = OscoreSiteWrapper._process_edhoc_msg34
    offer_message_3 = EdhocResponderContext._offer_message_3
    unprotect = EdhocResponderContext.unprotect
    init = EdhocResponderContext.__init__

    def _process_edhoc_msg12(self: Any, pipe: Any) -> Any:
        message_1 = bytes(pipe.request.payload[1:])  # after the leading CBOR `true`
        problem = (
            "longer than a message_1" if len(message_1) > MAX_MESSAGE_1 else message_1_problem(message_1)
        )
        echo = getattr(self, EDHOC_ECHO, None)
        if problem is None and echo is not None:
            challenge = echo.check(str(pipe.request.remote.hostinfo), pipe.request.opt.echo)
            if challenge is not None:  # RFC 9528 §9.7: the address proves itself before any key work
                pipe.add_response(challenge, is_last=True)
                return None
        if problem is None:
            _message_1_from[0] = pipe.request.remote
            try:
                return process_message_1(self, pipe)
            except BaseException as exc:
                if not _is_panic(exc):
                    raise
                problem = "lakers panicked"
            finally:
                _message_1_from[0] = None
        log.info("EDHOC message_1 from %s refused: %s", pipe.request.remote, problem, extra=JUNK)
        raise aiocoap.error.BadRequest(f"EDHOC message_1 refused: {problem}")

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        setattr(self, _PEER, _message_1_from[0])

    def _process_edhoc_msg34(self: Any, pipe: Any) -> Any:
        _message_3_from[0] = pipe.request.remote
        try:
            return process_message_3(self, pipe)
        finally:
            _message_3_from[0] = None

    def _unprotect(self: Any, protected_message: Any, request_id: Any = None) -> Any:
        _message_3_from[0] = protected_message.remote  # message_3 inside an OSCORE request
        try:
            return unprotect(self, protected_message, request_id)
        finally:
            _message_3_from[0] = None

    def _offer_message_3(self: Any, message_3: bytes) -> Any:
        problem = message_3_problem(message_3) if self._incomplete else None
        expected, sender = getattr(self, _PEER, None), _message_3_from[0]
        elsewhere = expected is not None and sender is not None and not _same_peer(expected, sender)
        if problem is None and self._incomplete and elsewhere:
            problem = "not from the address its message_1 came from"
        if problem is None:
            try:
                return offer_message_3(self, message_3)
            except aiocoap.error.RenderableError:
                raise
            except BaseException as exc:
                if not (isinstance(exc, Exception) or _is_panic(exc)):
                    raise
                problem = f"{type(exc).__name__}: {_first_line(exc)}"[:120]
        log.info("EDHOC message_3 refused: %s", problem, extra=JUNK)
        raise aiocoap.error.BadRequest(f"EDHOC message_3 refused: {problem}")

    OscoreSiteWrapper._process_edhoc_msg12 = _process_edhoc_msg12
    OscoreSiteWrapper._process_edhoc_msg34 = _process_edhoc_msg34
    # aiocoap's OSCORE code reads `echo_recovery` when a request repeats a sequence number, and an
    # EDHOC responder context has none: a device's request under a connection id a newer device's
    # finished session had taken (its own handshake pushed out) ended in an AttributeError, 5.00.
    # None: such a request is refused as a replay (4.01, unprotected), and its client shakes hands again.
    if not hasattr(EdhocResponderContext, "echo_recovery"):
        EdhocResponderContext.echo_recovery = None
    EdhocResponderContext.__init__ = __init__
    EdhocResponderContext.unprotect = _unprotect
    EdhocResponderContext._offer_message_3 = _offer_message_3
    setattr(OscoreSiteWrapper, _EDHOC_GUARD, True)
    return True


_EDHOC_FIX = "_teep_edhoc_once"


async def _panic_as_edhoc_error(step: Awaitable[Any]) -> Any:
    """`await step`, a lakers panic raised as the ValueError lakers raises for a refused message."""
    try:
        return await step
    except BaseException as exc:
        if not _is_panic(exc):
            raise
        raise ValueError(f"EDHOCError::UnreadablePeerMessage ({_first_line(exc)[:100]})") from None


class _EchoAnswering:
    """The message interface aiocoap's EDHOC initiator sends message_1 through, answering a server's
    4.01 + Echo (RFC 9175) by sending message_1 once more with that Echo value. aiocoap's initiator
    takes any error answer as a failed handshake; a TAM asks for the Echo before it does any key
    work for an address it has not seen."""

    def __init__(self, wire: Any) -> None:
        self._wire = wire

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wire, name)

    def request(self, message: Any) -> _EchoAnsweringRequest:
        return _EchoAnsweringRequest(self._wire, message)


class _EchoAnsweringRequest:
    def __init__(self, wire: Any, message: Any) -> None:
        self._wire = wire
        self._message = message

    @property
    async def response_raising(self) -> Any:
        response = await self._wire.request(self._message).response
        if response.code == aiocoap.UNAUTHORIZED and response.opt.echo is not None:
            again = self._message.copy(echo=response.opt.echo)
            again.mid, again.token = None, b""
            again.remote = self._message.remote
            response = await self._wire.request(again).response
        if not response.code.is_successful():
            raise aiocoap.error.ResponseWrappingError(response)
        return response


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

    lakers panics on some message_2s a broken or hostile server can send (a G_Y that is no point of
    P-256: 18 % of mutated message_2s); aiocoap let the panic out of a callback and the request
    waited for its timeout. The handshake here fails with lakers' usual ValueError instead
    ("EDHOCError::…"), which `CoapClient` reports in one line.
    """

    if getattr(EdhocCredentials, _EDHOC_FIX, False):
        return False
    original = EdhocCredentials.establish_context

    def establish_context(self: Any, wire: Any, *args: Any, **kwargs: Any) -> Any:
        task = self.__dict__.get(_EDHOC_FIX)
        if task is None:
            step = original(self, _EchoAnswering(wire), *args, **kwargs)
            task = asyncio.ensure_future(_panic_as_edhoc_error(step))
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
