"""The Broker side of the CoAP binding: confirmable POSTs of message bytes to the TAM resource.

One `CoapClient` per device and TAM URI. Every wait is bounded by the profile's `request_timeout`
(a wrong DTLS PSK makes tinydtls wait for ever), the first DTLS handshake by `handshake_timeout`;
5.03 answers are retried after their Max-Age while time is left, since a rejected request never
reached the TAM. Other error codes become `PeerRejected`, network trouble `TransportError`, and
no answer in time `TransportTimeout`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import aiocoap
import aiocoap.error
import cbor2
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.optiontypes import BlockOption, OpaqueOption
from aiocoap.oscore import FilesystemSecurityContext
from aiocoap.proxy.client import ProxyForwarder

from teep_coap.transport.base import PeerRejected, TransportError, TransportTimeout
from teep_coap.transport.coap import aiocoap_compat
from teep_coap.transport.coap.credentials import (
    CredentialsError,
    DeviceCredentials,
    edhoc_entry,
    psk_identity_problem,
)
from teep_coap.transport.coap.diagnosis import explain_edhoc_error, explain_error, explain_timeout
from teep_coap.transport.coap.echo import PADDING_OPTION
from teep_coap.transport.coap.options import CoapOptions
from teep_coap.transport.coap.tuning import tuning_for

log = logging.getLogger("teep_coap.transport.coap.client")

TRANSPORTS = {"coap": ["udp6"], "coaps": ["tinydtls"], "coap+oscore": ["oscore", "udp6"]}
MAX_OVERLOAD_WAIT = 10.0  # never sleep longer than this for one 5.03, whatever Max-Age says
# A DTLS handshake that has not finished after this long is started again on a fresh socket: aiocoap's
# tinydtls client can wedge for ever when a handshake flight is lost, duplicated or reordered (seen with
# the fault relay). On loopback a handshake takes milliseconds; a stalled one never reached the TAM, so
# sending the request again cannot deliver it twice. Every second restart doubles the wait, so a slow but
# progressing handshake (a loaded TAM) is not restarted for ever.
HANDSHAKE_STALL = 2.0
# EDHOC handshakes run again for one request when the TAM answers message_3 (or a dropped session's
# request) without protection, i.e. without reading the message: a TAM keeps 8 handshakes waiting for
# message_3 (aiocoap has 48 one-byte connection ids), so a burst of more devices than that pushes out
# some in mid-handshake. Each retry waits a little longer, with jitter, so the burst spreads out.
EDHOC_RETRIES = 4
EDHOC_RETRY_WAIT = 0.02  # seconds, times the attempt, times 1-2
# what a TAM says when a device's EDHOC session or handshake was pushed out for newer ones
_PUSHED_OUT = (
    "Security context not found",
    "not from the address its message_1 came from",
    "EDHOC incomplete",
)
# The padding option's header: 1 byte, 2 bytes of extended delta (from Accept, 17, or anything below
# 269, up to 65020) and 1 byte of extended length (13..268 bytes of padding).
PADDING_OPTION_HEADER = 4


class _UnprotectedAnswer(PeerRejected):
    """An error answer to an OSCORE request that came without OSCORE: the TAM did not read it."""


class _HandshakeStalled(Exception):
    """Internal: the DTLS handshake did not complete in HANDSHAKE_STALL seconds."""


class _SessionSilent(Exception):
    """Internal: an established DTLS session got no answer in half the request timeout."""


def _dtls_handshake(ctx: aiocoap.Context) -> Any:
    """The tinydtls client connection of `ctx` still in its handshake, or None."""
    return aiocoap_compat.dtls_client_in_handshake(ctx)


def _pad(msg: Message, size: int) -> None:
    """Pad `msg` (an empty POST) with the elective padding option to at least `size` bytes on the
    wire, whatever its token length (transport.coap.echo: a TAM answers it without an Echo round
    trip when its answer fits in 3x)."""
    bare = 4 + len(msg.opt.encode())  # header and options, no token yet
    room = size - bare - PADDING_OPTION_HEADER
    if room > 0:
        msg.opt.add_option(OpaqueOption(OptionNumber(PADDING_OPTION), bytes(room)))


def code_text(code: Code) -> str:
    """A CoAP code as the dotted text every CoAP document uses (4.15)."""
    return str(code.dotted)


def overload_wait(response: Message) -> float:
    """Seconds to wait before sending again after a 5.03: its Max-Age (60 if absent), at most
    MAX_OVERLOAD_WAIT."""
    max_age = response.opt.max_age
    return min(float(max_age if max_age is not None else 60), MAX_OVERLOAD_WAIT)


def interpret_answer(response: Message, content_format: int, uri: str) -> bytes | None:
    """The TAM's next message from a (whole, block-wise assembled) answer, None for an empty one;
    an error code is PeerRejected, anything but 2.04/2.05 or another Content-Format TransportError."""
    code = response.code
    if not code.is_successful():
        detail = bytes(response.payload).decode("utf-8", "replace")
        if response.opt.max_age is not None and code == Code.SERVICE_UNAVAILABLE:
            detail += f" (Max-Age {response.opt.max_age})"
        raise PeerRejected(code_text(code), detail)
    if code not in (Code.CHANGED, Code.CONTENT):
        raise TransportError(f"unexpected answer {code_text(code)} from {uri}")
    payload = bytes(response.payload)
    if not payload:
        return None
    cf = response.opt.content_format
    if cf is None or int(cf) != content_format:
        raise TransportError(f"answer has Content-Format {cf}, expected {content_format}")
    return payload


class CoapClient:
    """MessageClient over CoAP: `post(bytes) -> bytes | None`, `close()`."""

    def __init__(
        self,
        profile: CoapOptions,
        tam_uri: str,
        credentials: DeviceCredentials | None = None,
        proxy: str | None = None,
    ) -> None:
        profile = CoapOptions.adopt(profile)  # `profile`: the stack's CoAP options (profiles.stack)
        if not profile.transport.is_coap:
            raise TransportError(
                f"profile {profile.name!r} is not a CoAP profile ({profile.transport.scheme})"
            )
        self.profile = profile
        self.uri = self._normalise_uri(tam_uri)
        self._credentials = credentials
        # A CoAP forward proxy (RFC 7252 §5.7.2): requests go to it with Proxy-Scheme and Uri-Host/Port.
        # Plain CoAP only. DTLS to a proxy would secure the first hop alone. OSCORE would stay end to
        # end in principle (RFC 8613 §10.2), but aiocoap 0.4.17's proxy client sends the protected
        # request without Proxy-Scheme in the outer message, and aiocoap-proxy answers 4.00 "No matching
        # proxy rule" (tests/profiles/test_proxy.py keeps that finding).
        if proxy is not None and profile.security.mode != "none":
            raise TransportError(
                f"--proxy with {profile.name!r} ({profile.security.mode}) is not implemented: DTLS would end "
                "at the proxy, which would then see the TEEP messages, and OSCORE through aiocoap's proxy "
                "client does not reach the TAM; use --profile coap through the proxy (TEEP's own COSE "
                "signatures still protect every message), or connect without --proxy"
            )
        if proxy is not None and not proxy.startswith("coap://"):
            raise TransportError(f"the proxy must be a coap:// URI, got {proxy!r}")
        self.proxy = proxy
        self._tuning = tuning_for(profile)
        self._context: aiocoap.Context | None = None
        self._oscore_ctx: Any = None
        self.exchanges = 0  # POSTs answered (whole block-wise transfers count once)
        self.handshake_restarts = 0  # DTLS handshakes started again after a stall
        self.session_restarts = 0  # established DTLS sessions given up after silence (peer restarted)
        self.handshake_heard = 0  # datagrams the last unfinished DTLS handshake got from the TAM
        self.sessions_lost = 0  # DTLS sessions gone between two exchanges (the TAM closed them)
        # The DTLS connections of the last exchange, held here: aiocoap 0.4.17 keeps its client
        # connections in a WeakValueDictionary, alive only through reference cycles, so the first
        # cyclic garbage collection between two exchanges (an Agent verifying and signing allocates
        # plenty) ended the DTLS session and the next exchange had to shake hands again; in a burst
        # of 200 clients that extra handshake was where most failures died.
        self._dtls_held: list[Any] = []
        self._deadline = 0.0  # monotonic time the current post() gives up at
        # An Echo value the TAM put in a response (RFC 9175 §2.3): sent with the next request, it
        # proves our address without a 4.01 round trip (the answer to a padded connect carries one).
        self._echo_next: bytes | None = None
        # Plain CoAP: where the last answer came from, the address the next request goes to. aiocoap
        # otherwise resolves the URI's host for every request (a thread-pool getaddrinfo and a socket
        # connected to check the route); a failed exchange forgets it, so a retry resolves afresh.
        self._remote: Any = None
        self._reuse_remote = profile.security.mode == "none" and profile.transport.scheme == "coap"

    def _normalise_uri(self, uri: str) -> str:
        scheme = self.profile.transport.scheme
        if scheme == "coap+oscore" and uri.startswith("coap+oscore://"):
            uri = "coap://" + uri[len("coap+oscore://") :]
        want = "coaps" if scheme == "coaps" else "coap"
        if not uri.startswith(f"{want}://"):
            raise TransportError(f"profile {self.profile.name!r} needs a {want}:// TAM URI, got {uri!r}")
        if uri.rstrip("/").count("/") < 3:  # no path given: use the profile's
            uri = uri.rstrip("/") + self.profile.transport.path
        return uri

    async def _ensure_context(self) -> aiocoap.Context:
        if self._context is not None:
            return self._context
        mode = self.profile.security.mode
        if mode != "none" and self._credentials is None:
            raise CredentialsError(
                f"profile {self.profile.name!r} ({mode}) needs the Agent's transport credentials"
            )
        if mode == "dtls-psk":
            problem = psk_identity_problem(self._credentials.psk_identity) if self._credentials else None
            if problem is not None:
                raise CredentialsError(problem)
            aiocoap_compat.apply_dtls_fixes()
        aiocoap_compat.cache_address_text()  # the TAM's address parsed once, not twice per request
        aiocoap_compat.memoise_option_decoding()  # the TAM's answers repeat their options
        aiocoap_compat.bound_response_assembly()  # a block-wise answer stops at max_message_size
        ctx = await aiocoap.Context.create_client_context(
            transports=TRANSPORTS[self.profile.transport.scheme]
        )
        pattern = self.uri.split("://", 1)[0] + "://" + self.uri.split("://", 1)[1].split("/", 1)[0] + "/*"
        creds = self._credentials
        if mode == "dtls-psk" and creds is not None:
            ctx.client_credentials.load_from_dict(
                {
                    pattern: {
                        "dtls": {
                            "psk": {"hex": creds.psk.hex()},
                            "client-identity": {"ascii": creds.psk_identity},
                        }
                    }
                }
            )
        elif mode == "oscore" and creds is not None:
            if creds.oscore_dir is None or not Path(creds.oscore_dir, "settings.json").is_file():
                await ctx.shutdown()
                raise CredentialsError(f"no OSCORE context for {creds.name!r} (folder {creds.oscore_dir})")
            try:
                self._oscore_ctx = FilesystemSecurityContext(os.fspath(creds.oscore_dir))
            except Exception as exc:  # LoadError or a lock held by another process
                await ctx.shutdown()
                raise CredentialsError(f"OSCORE context {creds.oscore_dir}: {exc}") from None
            ctx.client_credentials[pattern] = self._oscore_ctx
        elif mode == "edhoc" and creds is not None:
            aiocoap_compat.apply_edhoc_client_fix()
            if creds.edhoc_key is None or not creds.edhoc_key.is_file():
                await ctx.shutdown()
                raise CredentialsError(
                    f"no EDHOC key for {creds.name!r} ({creds.edhoc_key}): provision the device again with "
                    "`tam credentials --name NAME --agent-state AGENTDIR`"
                )
            own = {"own_cred_style": "by-key-id", "own_cred": cbor2.loads(creds.edhoc_own)}
            entry = edhoc_entry(own | {"peer_cred": cbor2.loads(creds.edhoc_peer)}, creds.edhoc_key)
            try:
                ctx.client_credentials.load_from_dict({pattern: {"edhoc-oscore": entry}})
            except Exception as exc:  # aiocoap's CredentialsLoadError: key file mode, shape
                await ctx.shutdown()
                raise CredentialsError(f"EDHOC credentials of {creds.name!r}: {exc}") from None
        self._context = ctx
        return ctx

    async def context(self) -> aiocoap.Context:
        """The aiocoap context with this client's security set up (DTLS PSK, OSCORE, EDHOC), for
        tools that send their own requests (`check tam`); `close()` shuts it down."""
        return await self._ensure_context()

    def _request(self, payload: bytes, remote: Any = None) -> Message:
        msg = Message(
            code=Code.POST,
            uri=self.uri,
            payload=payload,
            transport_tuning=self._tuning,
        )
        if remote is not None:
            msg.remote = remote
        setattr(msg, aiocoap_compat.RESPONSE_LIMIT, self.profile.limits.max_message_size)
        if payload:
            msg.opt.content_format = self.profile.transport.content_format
        msg.opt.accept = self.profile.transport.content_format
        pad_to = self.profile.transport.pad_connect_to
        if not payload and pad_to and self.profile.transport.scheme == "coap":
            _pad(msg, pad_to)
        szx = self.profile.transport.block_szx
        if len(payload) > self.profile.transport.block_size:
            # aiocoap's documented way to ask a block size for one request (RFC 7959 Block1 SZX)
            msg.opt.block1 = BlockOption.BlockwiseTuple(0, False, szx)
        if szx < 6:
            # early negotiation: ask the TAM to answer in blocks of our size (RFC 7959 §2.4)
            msg.opt.block2 = BlockOption.BlockwiseTuple(0, False, szx)
        # aiocoap deep-copies a request's options for each Block2 follow-up (and OSCORE for each
        # protection): shared option objects make that ~0.1 ms cheaper per block-wise answer
        return aiocoap_compat.with_shared_options(msg)

    def longest_wait(self) -> float:
        """Seconds the next `post()` may take at most: a first DTLS exchange gets `handshake_timeout`
        for its handshake and then `request_timeout` for the exchange; any other `request_timeout`."""
        limits = self.profile.limits
        if self.profile.security.mode == "dtls-psk" and self.exchanges == 0:
            return max(limits.handshake_timeout, limits.request_timeout) + limits.request_timeout
        return limits.request_timeout

    async def post(self, payload: bytes) -> bytes | None:
        """POST one message (b"" starts a session); the TAM's next message, or None when it is done."""
        if len(payload) > self.profile.limits.max_message_size:
            raise TransportError(
                f"message of {len(payload)} bytes exceeds the profile limit "
                f"{self.profile.limits.max_message_size}"
            )
        ctx = await self._ensure_context()
        limits = self.profile.limits
        self._deadline = time.monotonic() + limits.request_timeout
        if self.profile.security.mode == "dtls-psk" and self.exchanges == 0:
            # The first exchange shakes hands first. A TAM that is slow to finish handshakes (a burst
            # of devices, a starved machine) is alive: give the handshake its own budget, and the
            # exchange its request_timeout once the session is up (_send_once moves the deadline).
            self._deadline = time.monotonic() + max(limits.handshake_timeout, limits.request_timeout)
        echo, self._echo_next = self._echo_next, None
        echo_retried = False
        # A DTLS peer that restarted (a TAM or gateway) has forgotten our session and drops its
        # records without a word; after half the timeout in silence, shake hands anew and resend once
        # (TEEP messages may arrive twice: the TAM answers a repeated message as the first time).
        silence_check = self.profile.security.mode == "dtls-psk" and self.exchanges > 0
        edhoc_retries = 0  # EDHOC handshakes run again for this request
        while True:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout(ctx)
            try:
                response = await self._send_once(
                    ctx, payload, remaining, echo, silence_after=remaining / 2 if silence_check else None
                )
            except _SessionSilent:
                silence_check = False
                self.session_restarts += 1
                log.info("no answer over the DTLS session with %s: new handshake, sending again", self.uri)
                await self._drop_context()
                ctx = await self._ensure_context()
                continue
            except PeerRejected as exc:
                # An EDHOC-keyed OSCORE context the peer no longer has (it restarted, or dropped it
                # for newer sessions), or a handshake it pushed out before our message_3 came, is
                # answered without protection and without reading the message: 4.01 when no context
                # has our id, 4.00 when a newer handshake was given it or message_3 was refused. Run
                # EDHOC again and resend (EDHOC_RETRIES times for one request).
                unread = isinstance(exc, _UnprotectedAnswer) and exc.status.startswith(("4.00", "4.01"))
                if not (self.profile.security.mode == "edhoc" and unread and edhoc_retries < EDHOC_RETRIES):
                    raise
                edhoc_retries += 1
                self.session_restarts += 1
                log.info("%s does not know our EDHOC session: new handshake, sending again", self.uri)
                await self._drop_context()
                await asyncio.sleep(EDHOC_RETRY_WAIT * edhoc_retries * random.uniform(1, 2))
                ctx = await self._ensure_context()
                continue
            except _HandshakeStalled:
                self.handshake_restarts += 1
                log.info("DTLS handshake with %s stalled, starting it again", self.uri)
                await self._drop_context()
                ctx = await self._ensure_context()
                continue
            if response.code == Code.UNAUTHORIZED and response.opt.echo is not None and not echo_retried:
                # RFC 9175 §2.4: the TAM wants our address proven; repeat once with its Echo value
                echo, echo_retried = bytes(response.opt.echo), True
                continue
            if response.opt.echo is not None:
                self._echo_next = bytes(response.opt.echo)
            if response.code == Code.SERVICE_UNAVAILABLE:
                wait = overload_wait(response)
                if time.monotonic() + wait < self._deadline:
                    log.info("TAM overloaded, retrying in %.1f s", wait)
                    await asyncio.sleep(wait)
                    continue
            return self._interpret(response)

    async def _send_once(
        self,
        ctx: aiocoap.Context,
        payload: bytes,
        timeout: float,
        echo: bytes | None = None,
        *,
        silence_after: float | None = None,
    ) -> Message:
        if self.exchanges and self.profile.security.mode == "dtls-psk" and self._lost_dtls_session(ctx):
            self.sessions_lost += 1
            log.info("the DTLS session with %s is gone since the last exchange: new handshake", self.uri)
        remote, self._remote = self._remote, None
        msg = self._request(payload, remote if self.proxy is None else None)
        if echo is not None:
            msg.opt.echo = echo
        request = ProxyForwarder(self.proxy, ctx).request(msg) if self.proxy is not None else ctx.request(msg)
        heard_before = aiocoap_compat.dtls_client_app_records(ctx) if silence_after is not None else 0
        future = asyncio.ensure_future(request.response)
        end = time.monotonic() + timeout
        try:
            if silence_after is not None:
                await asyncio.wait({future}, timeout=silence_after)
                # A CoAP message heard over the session since the request (its empty ACK, a block)
                # means the TAM still has our session and is busy: a new handshake would throw its
                # work away. A restarted TAM drops our records without a word.
                if not future.done() and aiocoap_compat.dtls_client_app_records(ctx) == heard_before:
                    raise _SessionSilent
            elif self.profile.security.mode == "dtls-psk":
                await self._wait_handshake(ctx, future, timeout)
                if _dtls_handshake(ctx) is None and not future.done():
                    # the session is up: from here the exchange gets its own request_timeout
                    end = time.monotonic() + self.profile.limits.request_timeout
                    self._deadline = max(self._deadline, end)
            response = await asyncio.wait_for(future, max(0.0, end - time.monotonic()))
        except (_HandshakeStalled, _SessionSilent, asyncio.CancelledError):
            # nobody waits for this request any more (a restart, or the caller gave up): cancel it, or
            # the context's shutdown ends it with LibraryShutdown that asyncio logs as never retrieved
            future.cancel()
            raise
        except TimeoutError:
            raise self._timeout(ctx) from None
        except aiocoap.error.ConRetransmitsExceeded:
            raise TransportTimeout(f"{self.uri} did not acknowledge (retransmissions exhausted)") from None
        except aiocoap.error.Error as exc:
            plain = getattr(exc, "plain_message", None)  # OSCORE: the server answered without protection
            if plain is not None and plain.code is not None and not plain.code.is_successful():
                detail = bytes(plain.payload).decode("utf-8", "replace")
                if self.profile.security.mode != "edhoc":
                    guess = "OSCORE context unknown?"
                elif any(sign in detail for sign in _PUSHED_OUT):
                    guess = (
                        "EDHOC session or handshake no longer held by the TAM: more devices at once than it"
                        " keeps EDHOC sessions for (about 40 per TAM process)?"
                    )
                else:
                    guess = "EDHOC refused: the TAM most likely does not know this device's EDHOC credential"
                status = code_text(plain.code)
                raise _UnprotectedAnswer(status, f"unprotected answer ({guess}): {detail}") from None
            identity = self._credentials.psk_identity if self._credentials else None
            likely = explain_error(exc, self.uri, identity)
            raise TransportError(
                likely or f"CoAP request to {self.uri} failed: {type(exc).__name__}: {exc}"
            ) from None
        except ValueError as exc:  # lakers reports a failed EDHOC step as ValueError("EDHOCError::…")
            if "EDHOCError" not in str(exc):
                raise
            raise TransportError(explain_edhoc_error(exc, self.uri)) from None
        except OSError as exc:
            identity = self._credentials.psk_identity if self._credentials else None
            raise TransportError(
                explain_error(exc, self.uri, identity) or f"CoAP request to {self.uri} failed: {exc}"
            ) from None
        self.exchanges += 1
        self._dtls_held = aiocoap_compat.dtls_client_sessions(ctx)
        if self._reuse_remote:
            self._remote = response.remote
        return response

    def _lost_dtls_session(self, ctx: aiocoap.Context) -> bool:
        """True if no DTLS connection of the last exchange is still in use (the next request needs a
        new handshake): the TAM ended the session (close_notify, an alert)."""
        now = aiocoap_compat.dtls_client_sessions(ctx)
        return bool(self._dtls_held) and not any(conn in now for conn in self._dtls_held)

    def _timeout(self, ctx: aiocoap.Context) -> TransportTimeout:
        """The timeout error, saying what is most likely wrong when the DTLS handshake never ended."""
        handshaking = self.profile.security.mode == "dtls-psk" and _dtls_handshake(ctx) is not None
        limits = self.profile.limits
        seconds = limits.request_timeout
        if handshaking and self.exchanges == 0:
            seconds = max(limits.handshake_timeout, limits.request_timeout)
        return TransportTimeout(
            explain_timeout(
                self.uri,
                seconds,
                handshaking=handshaking,
                heard=self.handshake_heard,
            )
        )

    async def _wait_handshake(
        self, ctx: aiocoap.Context, future: asyncio.Future[Message], timeout: float
    ) -> None:
        """Wait while the DTLS handshake runs; raise _HandshakeStalled if it does not finish in time.

        A slow handshake is not given longer when it hears the TAM: tinydtls then retransmits its
        flights on the same session, and under load a recovery-matrix cell had its handshake refused
        as a wrong PSK while it waited longer (a duplicated flight's transcript, most likely); with
        restarts on a fresh socket that was not seen. Every second restart doubles the wait.
        """
        step = min(HANDSHAKE_STALL * 2 ** (self.handshake_restarts // 2), timeout)
        self.handshake_heard = 0
        await asyncio.wait({future}, timeout=step)
        conn = _dtls_handshake(ctx)
        if conn is not None:
            self.handshake_heard = aiocoap_compat.datagrams_received(conn)
        if not future.done() and step < timeout and conn is not None:
            raise _HandshakeStalled

    async def request(self, method: str, payload: bytes = b"", path: str | None = None) -> tuple[str, bytes]:
        """Any method on any path of the same origin: (response code text, payload).

        Not part of the TEEP binding; interop tests use it to PUT and GET a large body on other
        CoAP servers (libcoap's coap-server) with this client's block size, security and timeout.
        """
        try:
            code = Code[method.upper()]
        except KeyError:
            raise TransportError(f"unknown CoAP method {method!r}") from None
        ctx = await self._ensure_context()
        msg = self._request(payload)
        msg.code = code
        if path is not None:
            origin = self.uri.split("://", 1)[0] + "://" + self.uri.split("://", 1)[1].split("/", 1)[0]
            msg.set_request_uri(origin + path)
        if code == Code.GET:
            msg.opt.content_format = None
            msg.opt.accept = None
        request = ctx.request(msg)
        try:
            response = await asyncio.wait_for(request.response, self.profile.limits.request_timeout)
        except TimeoutError:
            raise TransportTimeout(f"no answer within {self.profile.limits.request_timeout:g} s") from None
        except aiocoap.error.Error as exc:
            raise TransportError(f"CoAP {method} failed: {type(exc).__name__}: {exc}") from None
        return code_text(response.code), bytes(response.payload)

    def _interpret(self, response: Message) -> bytes | None:
        return interpret_answer(response, self.profile.transport.content_format, self.uri)

    async def _drop_context(self) -> None:
        self._dtls_held = []
        self._remote = None  # an address of the old context
        if self._context is not None:
            ctx, self._context = self._context, None
            try:
                await asyncio.wait_for(ctx.shutdown(), 5.0)
            except (TimeoutError, aiocoap.error.Error, OSError) as exc:
                log.debug("client shutdown: %s", exc)

    async def close(self) -> None:
        """Shut the client context down (DTLS close_notify, sockets) and release the OSCORE lock."""
        self._dtls_held = []
        if self._context is not None:
            ctx, self._context = self._context, None
            try:
                await asyncio.wait_for(ctx.shutdown(), 5.0)
            except (TimeoutError, aiocoap.error.Error, OSError) as exc:
                log.debug("client shutdown: %s", exc)
        if self._oscore_ctx is not None:
            aiocoap_compat.release_oscore_context(self._oscore_ctx)
        self._oscore_ctx = None

    async def __aenter__(self) -> CoapClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
