"""The TAM side of the CoAP binding: one resource that hands request payloads to a MessageHandler.

`CoapServer` serves the profile's path (default `/teep`) over plain CoAP, DTLS 1.2 PSK (aiocoap's
`tinydtls_server`) or OSCORE (`OscoreSiteWrapper`). It checks, before the handler sees anything:
method (4.05), Content-Format (4.15), Accept (4.06), size — from Size1, from the Block1 offset and the
assembled total — (4.13 with Size1 = the limit), OSCORE protection (4.01), and the concurrency cap
(5.03 + Max-Age). Handler results: bytes → 2.04 with payload, None → 2.04 without payload,
`RequestRejected` → its code, any other exception → 5.00 and a log line. Block-wise transfer in both
directions (RFC 7959) uses aiocoap's Block1 spool and Block2 cache with the profile's block size.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiocoap
import aiocoap.resource
import cbor2
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.oscore import COSE_KID, COSE_KID_CONTEXT, FilesystemSecurityContext
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from teep_coap.transport.base import MessageHandler, PeerInfo, Rejection, RequestRejected, TransportError
from teep_coap.transport.coap import aiocoap_compat
from teep_coap.transport.coap.aiocoap_compat import (
    ExactPathSite,
    FastPath,
    bound_duplicate_caches,
    bound_resource_caches,
    harden_message_decode,
    with_shared_options,
)
from teep_coap.transport.coap.credentials import (
    PSK_MAX_BYTES,
    CredentialsError,
    DeviceCredentials,
    edhoc_entry,
    psk_identity_problem,
    psk_length_problem,
)
from teep_coap.transport.coap.early_answer import EarlyAnswer
from teep_coap.transport.coap.echo import PROVEN, EchoGuard, wire_size
from teep_coap.transport.coap.hardening import DuplicateCache, oldest_of_heaviest
from teep_coap.transport.coap.health import HEALTH, HealthResource
from teep_coap.transport.coap.idle_expiry import IdleSweeper
from teep_coap.transport.coap.options import CoapOptions
from teep_coap.transport.coap.server_socket import (
    enlarge_receive_buffer,
    ignore_icmp_errors,
    stops_reading_on_socket_error,
)
from teep_coap.transport.junklog import JUNK, install_junk_log_limit
from teep_coap.transport.shared_port import (
    ensure_port_free,
    keep_port_to_ourselves,
    pick_port,
    port_shared_by_parent,
)

log = logging.getLogger("teep_coap.transport.coap.server")

REJECTION_CODES: dict[Rejection, Code] = {
    Rejection.BAD_REQUEST: Code.BAD_REQUEST,
    Rejection.FORBIDDEN: Code.FORBIDDEN,
    Rejection.UNSUPPORTED_MEDIA: Code.UNSUPPORTED_CONTENT_FORMAT,
    Rejection.TOO_LARGE: Code.REQUEST_ENTITY_TOO_LARGE,
    Rejection.SERVER_ERROR: Code.INTERNAL_SERVER_ERROR,
    Rejection.OVERLOADED: Code.SERVICE_UNAVAILABLE,
    Rejection.BAD_GATEWAY: Code.BAD_GATEWAY,
    Rejection.GATEWAY_TIMEOUT: Code.GATEWAY_TIMEOUT,
}
DIAGNOSTIC_MAX = 120  # bytes of diagnostic payload in error responses (RFC 7252 §5.5.2)


@dataclass
class ServerStats:
    """Counters a test or the benchmark can read."""

    requests: int = 0  # complete (assembled) requests that reached the TEEP resource
    handled: int = 0  # handler calls that returned normally
    rejected: dict[str, int] = field(default_factory=dict)  # CoAP code text -> count

    def count(self, code: Code) -> None:
        key = str(code.dotted)
        self.rejected[key] = self.rejected.get(key, 0) + 1


def _error(code: Code, reason: str, **options: Any) -> Message:
    msg = Message(code=code, payload=reason.encode("utf-8", "replace")[:DIAGNOSTIC_MAX])
    for name, value in options.items():
        setattr(msg.opt, name, value)
    return msg


class TeepResource(aiocoap.resource.Resource):
    """The TAM resource: confirmable POSTs of TEEP message bytes."""

    def __init__(self, handler: MessageHandler, profile: CoapOptions, stats: ServerStats) -> None:
        super().__init__()
        bound_resource_caches(self)  # bounded Block1 spool / Block2 cache, 4.08 for a Block1 gap
        self._handler = handler
        self._profile = profile
        self._stats = stats
        self._in_flight = 0
        # RFC 9175 Echo against amplification, plain CoAP only (DTLS has its cookie, OSCORE authenticates)
        link = profile.transport
        echo = link.scheme == "coap" and link.echo
        self.echo: EchoGuard | None = EchoGuard(idle_timeout=profile.limits.idle_timeout) if echo else None

    def _scheme_of(self, request: Message) -> str:
        scheme = getattr(request.remote, "scheme", "coap")
        if self._profile.transport.scheme == "coap+oscore":
            return "coap+oscore"
        return "coaps" if scheme == "coaps" else "coap"

    def _screen(self, request: Message) -> tuple[Message | None, int]:
        """The answer to a request that must never be assembled or served (unproven address,
        oversize, unprotected), or None; and the most bytes its answer may have (`PROVEN`: no limit;
        a padded connect from an unproven address: 3x its size, `echo.py`)."""
        budget = PROVEN
        if self.echo is not None:  # first, so that no answer (not even an error) amplifies
            address = _address(request)
            connect = 0 if request.payload else wire_size(request, request.token)
            admitted = self.echo.admit(address, request.opt.echo, connect_size=connect)
            if admitted is None:  # address not proven yet: 4.01 + Echo, below 3x the request
                return self.echo.challenge(address), PROVEN
            budget = admitted
        return self._early_refusal(request), budget

    def _refusal(self, request: Message) -> Message | None:
        """`_screen` for the block-wise ways (aiocoap's pipe, the fast path's uploads), which serve
        no padded connect unproven; a request let through gets the profile's block size."""
        refusal, budget = self._screen(request)
        if refusal is None and budget != PROVEN and self.echo is not None:
            return self.echo.challenge(_address(request))
        if refusal is None:
            self._limit_block_size(request)
        return refusal

    def _within(self, request: Message, answer: Message, budget: int) -> Message:
        """The answer to a padded connect from an unproven address: with an Echo value for the next
        request to prove the address, if it fits in `budget` bytes; else the 4.01 + Echo after all."""
        assert self.echo is not None
        address = _address(request)
        answer.opt.echo = self.echo.echo_for(address)
        if wire_size(answer, request.token) <= budget:
            self.echo.padded_served += 1
            return answer
        log.debug("answer to the padded connect of %s exceeds %d bytes: Echo first", address, budget)
        return self.echo.challenge(address)

    def _early_refusal(self, request: Message) -> Message | None:
        limit = self._profile.limits.max_message_size
        early: Message | None = None
        block1 = request.opt.block1
        if request.opt.size1 is not None and request.opt.size1 > limit:
            early = _error(Code.REQUEST_ENTITY_TOO_LARGE, f"Size1 {request.opt.size1} > {limit}", size1=limit)
        elif (block1 is not None and block1.start + len(request.payload) > limit) or len(
            request.payload
        ) > limit:
            early = _error(Code.REQUEST_ENTITY_TOO_LARGE, f"body exceeds {limit} bytes", size1=limit)
        elif self._profile.transport.scheme == "coap+oscore" and not _oscore_claims(request):
            early = _error(Code.UNAUTHORIZED, "OSCORE protection required")
        if early is not None:
            self._stats.count(early.code)
            log.warning(
                "rejected %s from %s: %s", early.code, _address(request), early.payload.decode(), extra=JUNK
            )
        return early

    def _limit_block_size(self, request: Message) -> None:
        """The response to this peer uses the profile's block size (RFC 7959 §2.2; a smaller
        Block2 SZX asked by the client still wins, as in aiocoap's Block2 cache)."""
        try:
            if request.remote.maximum_block_size_exp > self._profile.transport.block_szx:
                request.remote.maximum_block_size_exp = self._profile.transport.block_szx
        except AttributeError:  # a remote class without the setting (OSCORE's inner one)
            pass

    async def render_to_pipe(self, pipe: Any) -> None:
        """Refuse what must never be assembled (oversize, unprotected), then block-wise as usual."""
        refusal = self._refusal(pipe.request)
        if refusal is not None:
            pipe.add_response(refusal, is_last=True)
            return
        await super().render_to_pipe(pipe)

    def take_block(self, request: Message) -> tuple[Message | None, Message | None]:
        """One block of a Block1 upload on the fast path (`aiocoap_compat.install_fast_path`), checked
        and spooled as `render_to_pipe` does it: (its answer now: a refusal, 2.31 Continue, 4.08
        Incomplete, 4.00 for a block of the wrong size; None) or, on the last block, (None, the
        assembled request for `render`)."""
        refusal = self._refusal(request)
        return (refusal, None) if refusal is not None else aiocoap_compat.spool_block(self, request)

    async def respond(self, request: Message) -> Message:
        """The whole answer to a single-datagram POST (`aiocoap_compat.install_fast_path`): the
        checks of `render_to_pipe`, then `render_post`; the caller cuts it into blocks."""
        refusal, budget = self._screen(request)
        if refusal is not None:
            return refusal
        self._limit_block_size(request)
        answer = await self.render_post(request)
        return answer if budget == PROVEN else self._within(request, answer, budget)

    async def render_post(self, request: Message) -> Message:
        self._stats.requests += 1
        cf_expected = self._profile.transport.content_format
        cf = request.opt.content_format
        payload = bytes(request.payload)
        if payload and (cf is None or int(cf) != cf_expected):
            return self._reject(
                request, Code.UNSUPPORTED_CONTENT_FORMAT, f"Content-Format must be {cf_expected}"
            )
        if not payload and cf is not None and int(cf) != cf_expected:
            return self._reject(
                request, Code.UNSUPPORTED_CONTENT_FORMAT, f"Content-Format must be {cf_expected}"
            )
        if request.opt.accept is not None and int(request.opt.accept) != cf_expected:
            return self._reject(request, Code.NOT_ACCEPTABLE, f"only Content-Format {cf_expected} is served")
        if len(payload) > self._profile.limits.max_message_size:
            return self._reject(
                request,
                Code.REQUEST_ENTITY_TOO_LARGE,
                f"body exceeds {self._profile.limits.max_message_size} bytes",
                size1=self._profile.limits.max_message_size,
            )
        if self._in_flight >= self._profile.limits.max_concurrent_requests:
            return self._reject(
                request,
                Code.SERVICE_UNAVAILABLE,
                "overloaded",
                max_age=self._profile.limits.overload_max_age,
            )
        peer = self.peer_info(request)
        self._in_flight += 1
        try:
            answer = await self._handler(payload, peer)
        except RequestRejected as exc:
            extra: dict[str, Any] = {}
            if exc.rejection is Rejection.OVERLOADED:
                extra["max_age"] = int(exc.retry_after or self._profile.limits.overload_max_age)
            if exc.rejection is Rejection.TOO_LARGE:
                extra["size1"] = self._profile.limits.max_message_size
            return self._reject(request, REJECTION_CODES[exc.rejection], exc.reason, **extra)
        except Exception as exc:  # the handler's bug must not take the server down
            log.exception("handler failed for %s", peer.address)
            return self._reject(request, Code.INTERNAL_SERVER_ERROR, f"TAM failure: {type(exc).__name__}")
        finally:
            self._in_flight -= 1
        self._stats.handled += 1
        if answer is None:
            return Message(code=Code.CHANGED)
        # A response larger than a block is copied once per Block2 chunk.
        return with_shared_options(Message(code=Code.CHANGED, payload=answer, content_format=cf_expected))

    def _reject(self, request: Message, code: Code, reason: str, **options: Any) -> Message:
        self._stats.count(code)
        log.warning("rejected %s from %s: %s", code, _address(request), reason, extra=JUNK)
        return _error(code, reason, **options)

    def peer_info(self, request: Message) -> PeerInfo:
        """What the transport knows of the sender: scheme, address and authenticated identity."""
        scheme = self._scheme_of(request)
        identity: str | None = None
        if scheme == "coaps":
            claims = [c for c in (request.remote.authenticated_claims or []) if c]
            identity = _identity_from_claim(claims[0]) if claims else None
        elif scheme == "coap+oscore":
            claims = _oscore_claims(request)
            identity = claims[0].removeprefix(EDHOC_PREFIX) if claims else None
        return PeerInfo(
            transport=scheme, address=_address(request), identity=identity, authenticated=identity is not None
        )


CLAIM_PREFIX = ":psk:"
EDHOC_PREFIX = ":edhoc:"  # a device's EDHOC credential entry; its claim once the handshake verified it
EDHOC_OWN = ":edhoc-own"  # the TAM's own EDHOC identity (device names cannot contain ':')
# EDHOC responder contexts a server keeps, within aiocoap's 48 one-byte connection ids: finished
# handshakes (devices in a session; each `agent run` makes one) and, apart, handshakes between
# message_1 and message_3. Anyone can send a message_1, so those only ever push out each other.
EDHOC_SESSIONS = 32
EDHOC_HANDSHAKES = 8


class IndexedCredentials(aiocoap.credentials.CredentialsMap):
    """aiocoap's CredentialsMap with dictionary look-ups for the two server-side searches.

    aiocoap searches every entry for each DTLS handshake (`find_dtls_psk`) and for each OSCORE request
    (`find_oscore`); with a thousand devices that linear scan showed up in the TAM's profile. The
    index is rebuilt whenever an entry changes; the results are those of the linear search.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._teep_index: tuple[dict[bytes, tuple[bytes, str]], dict[tuple[Any, Any], Any]] | None = None
        self._edhoc_sessions: list[str] = []  # labels of EDHOC responder contexts, oldest first
        # Device PSKs (coaps): identity -> (key, claim), without an aiocoap credential object and its
        # source dictionary per device (about 0.5 KB each: 5 MB of a 10,000-device TAM).
        self._psks: dict[bytes, tuple[bytes, str]] = {}

    def __bool__(self) -> bool:
        return True  # also when only PSKs are set: aiocoap replaces a falsy map by an empty one of its own

    def set_psk(self, identity: str, psk: bytes) -> None:
        """Serve `identity` with `psk` (DTLS); its claim is `:psk:IDENTITY`."""
        if len(psk) > PSK_MAX_BYTES:
            raise CredentialsError(f"device {identity!r}: {psk_length_problem(psk)}")
        self._psks[identity.encode()] = (psk, f"{CLAIM_PREFIX}{identity}")

    def drop_psk(self, identity: str) -> None:
        self._psks.pop(identity.encode(), None)

    def __setitem__(self, key: str, value: Any) -> None:
        self._teep_index = None
        super().__setitem__(key, value)
        if aiocoap_compat.is_edhoc_responder_context(value):
            self._edhoc_sessions.append(key)
            self._trim_edhoc()

    def _trim_edhoc(self) -> None:
        """Keep EDHOC_HANDSHAKES unfinished and the newest EDHOC_SESSIONS finished EDHOC contexts
        (aiocoap stores one per message_1 and never drops any). Unauthenticated message_1s thus push
        out only unfinished handshakes, never a device's session (100 of them used to end every EDHOC
        session in progress, the device told its credential was unknown). Among the unfinished, the
        oldest of the address holding the most goes first: message_1s from one address push out
        their own, not a device's handshake between its message_2 and message_3."""
        labels = [label for label in self._edhoc_sessions if label in self]
        finished: list[str] = []
        unfinished: list[str] = []
        for label in labels:
            (finished if aiocoap_compat.edhoc_handshake_finished(self[label]) else unfinished).append(label)
        drop = set(self._fair_excess(unfinished, EDHOC_HANDSHAKES))
        drop.update(finished[: max(0, len(finished) - EDHOC_SESSIONS)])
        for label in drop:
            del self[label]
        self._edhoc_sessions = [label for label in labels if label not in drop]

    def _fair_excess(self, unfinished: list[str], keep: int) -> list[str]:
        """Labels of `unfinished` (oldest first) beyond `keep`, chosen one at a time by
        `oldest_of_heaviest` with the message_1 address as owner (an unknown address counts alone)."""
        owners: dict[str, Any] = {}
        for label in unfinished:
            address = aiocoap_compat.edhoc_message_1_from(self[label])
            owners[label] = label if address is None else address
        left = list(unfinished)
        dropped: list[str] = []
        while len(left) > keep:
            victim = oldest_of_heaviest(left, owners.__getitem__)
            left.remove(victim)
            dropped.append(victim)
        return dropped

    def get(self, key: str, default: Any = None) -> Any:
        """As dict.get; an EDHOC origin look-up ("coap://HOST:PORT/*") falls back to the TAM's own
        EDHOC identity, so devices may reach the TAM by any name or address."""
        value = super().get(key, default)
        if value is default and key.endswith("/*") and EDHOC_OWN in self:
            return super().get(EDHOC_OWN)
        return value

    def __delitem__(self, key: str) -> None:
        self._teep_index = None
        super().__delitem__(key)

    def _build(self) -> tuple[dict[bytes, tuple[bytes, str]], dict[tuple[Any, Any], Any]]:
        if self._teep_index is None:
            psk: dict[bytes, tuple[bytes, str]] = {}
            oscore: dict[tuple[Any, Any], Any] = {}
            for entry, item in self.items():
                if hasattr(item, "as_dtls_psk"):
                    identity, key = item.as_dtls_psk()
                    psk.setdefault(identity, (key, entry))
                if hasattr(item, "recipient_id") and hasattr(item, "get_oscore_context_for"):
                    oscore.setdefault((item.recipient_id, getattr(item, "id_context", None)), item)
            self._teep_index = (psk, oscore)
        return self._teep_index

    def find_dtls_psk(self, identity: bytes) -> tuple[bytes, str]:
        found = self._psks.get(identity)
        if found is None:
            try:
                found = self._build()[0][identity]
            except KeyError:
                raise KeyError(identity) from None
        if len(found[0]) > PSK_MAX_BYTES:
            # DTLSSocket would copy it past tinydtls's 16-byte buffer (credentials.PSK_MAX_BYTES):
            # the handshake fails instead of the process; a peer decides how often: rate-limited
            log.error("DTLS identity %r has a %d-byte PSK; refused", identity, len(found[0]), extra=JUNK)
            raise KeyError(identity)
        return found

    def find_oscore(self, unprotected: Any) -> Any:

        key = (unprotected.get(COSE_KID), unprotected.get(COSE_KID_CONTEXT))
        ctx = self._build()[1].get(key)
        if ctx is None:
            raise KeyError(key)
        return ctx


def _log_bad_finished(peer: str, claim: str) -> None:
    """One (rate-limited) line when a client's DTLS Finished did not verify: its PSK is not ours."""
    identity = _identity_from_claim(claim)
    log.warning(
        "DTLS handshake from %s (PSK identity %r) refused: its Finished did not verify, so its PSK "
        "differs from credentials.toml",
        peer,
        identity,
        extra=JUNK,
    )


def _identity_from_claim(claim: str) -> str:
    return claim[len(CLAIM_PREFIX) :] if claim.startswith(CLAIM_PREFIX) else claim


def _oscore_claims(request: Message) -> list[str]:
    """Claims of an OSCORE-unprotected request; empty for a request that came without OSCORE."""
    remote = request.remote
    if type(remote).__name__ != "OSCOREAddress":
        return []
    return [str(c) for c in (remote.authenticated_claims or [])]


def _address(request: Message) -> str:
    remote = request.remote
    for attr in ("hostinfo",):
        try:
            return str(getattr(remote, attr))
        except Exception:  # some remotes cannot tell before they are bound
            continue
    return "?"


def _server_socket(context: aiocoap.Context) -> socket.socket:
    """The UDP socket the (single) server transport of `context` is bound to."""
    sock = aiocoap_compat.server_socket(context)
    if sock is None:
        raise TransportError("cannot find the bound socket of the CoAP server")
    return sock


class CoapServer:
    """A TAM resource on one UDP port, for one profile; `start()` then `close()`."""

    def __init__(
        self,
        profile: CoapOptions,
        handler: MessageHandler,
        bind: tuple[str, int] = ("127.0.0.1", 0),
        devices: Sequence[DeviceCredentials] = (),
    ) -> None:
        profile = CoapOptions.adopt(profile)  # `profile`: the stack's CoAP options (profiles.stack)
        if not profile.transport.is_coap:
            raise TransportError(
                f"profile {profile.name!r} is not a CoAP profile ({profile.transport.scheme})"
            )
        self.profile = profile
        self.stats = ServerStats()
        self._handler = handler
        self._bind = bind
        self._devices = list(devices)
        self._context: aiocoap.Context | None = None
        self.port = 0
        self.resource = TeepResource(handler, profile, self.stats)
        self.early: EarlyAnswer | None = None  # plain CoAP: answers junk before aiocoap's pipeline
        self.dtls_idle: IdleSweeper | None = None  # coaps: frees silent DTLS sessions (idle_expiry)
        self.fast: FastPath | None = None  # coap, coaps: the TEEP path's POSTs without aiocoap's pipe
        self.edhoc_echo: EchoGuard | None = None  # coap-edhoc: the Echo a message_1's address passes
        self._extra_resources: list[tuple[tuple[str, ...], aiocoap.resource.Resource]] = []

    def add_resource(self, path: tuple[str, ...], resource: aiocoap.resource.Resource) -> None:
        """Serve another resource beside the TEEP one, with the same security (before `start`)."""
        self._extra_resources.append((path, resource))

    @property
    def uri(self) -> str:
        """The TAM URI clients use."""
        host = self._bind[0]
        hostpart = f"[{host}]" if ":" in host else host
        scheme = "coaps" if self.profile.transport.scheme == "coaps" else "coap"
        return f"{scheme}://{hostpart}:{self.port}{self.profile.transport.path}"

    def _keep_devices(self, devices: Sequence[DeviceCredentials]) -> None:
        """Remember the served devices; over DTLS only what a PSK needs (not the OSCORE folder and
        EDHOC fields each device's entry also carries: with 10,000 devices that was ~7 MB)."""
        if self.profile.security.mode == "dtls-psk":
            self._devices = [DeviceCredentials(d.name, d.psk_identity, d.psk) for d in devices]
            unusable = [p for p in map(psk_identity_problem, (d.psk_identity for d in devices)) if p]
            if unusable:
                more = f" (and {len(unusable) - 1} more)" if len(unusable) > 1 else ""
                log.warning("device credentials that cannot connect: %s%s", unusable[0], more)
        else:
            self._devices = list(devices)

    def _same(self, a: DeviceCredentials, b: DeviceCredentials) -> bool:
        if self.profile.security.mode == "dtls-psk":
            return a.psk == b.psk
        return a == b

    def _load_oscore(self, creds: IndexedCredentials) -> None:

        for d in self._devices:
            if d.oscore_dir is None:
                continue
            if not Path(d.oscore_dir, "settings.json").is_file():
                raise CredentialsError(f"OSCORE context of {d.name!r} not found in {d.oscore_dir}")
            try:
                ctx = FilesystemSecurityContext(os.fspath(d.oscore_dir))
            except Exception as exc:  # LoadError, lock held by another process
                raise CredentialsError(f"OSCORE context of {d.name!r} in {d.oscore_dir}: {exc}") from None
            ctx.authenticated_claims = [d.psk_identity]
            creds[f":oscore:{d.psk_identity}"] = ctx

    def _load_edhoc(self, creds: IndexedCredentials) -> None:
        for d in self._devices:
            if d.edhoc_key is None:
                continue
            if EDHOC_OWN not in creds:
                if not d.edhoc_key.is_file():
                    raise CredentialsError(f"the TAM's EDHOC key {d.edhoc_key} is missing")
                own = {"own_cred_style": "by-key-id", "own_cred": cbor2.loads(d.edhoc_own)}
                creds.load_from_dict({EDHOC_OWN: {"edhoc-oscore": edhoc_entry(own, d.edhoc_key)}})
            peer = {"peer_cred": cbor2.loads(d.edhoc_peer)}
            creds.load_from_dict({f"{EDHOC_PREFIX}{d.psk_identity}": {"edhoc-oscore": edhoc_entry(peer)}})
        if EDHOC_OWN not in creds:
            raise CredentialsError(
                "a coap-edhoc server needs devices with EDHOC credentials: provision them with "
                "`tam credentials --name NAME --agent-state AGENTDIR`"
            )

    async def start(self) -> None:
        """Bind and serve; raises TransportError when the address cannot be bound."""

        harden_message_decode()  # junk options: dropped datagram, not an asyncio traceback
        aiocoap_compat.cache_address_text()  # a peer's address text: parsed once per IP address
        aiocoap_compat.memoise_option_decoding()  # Uri-Path, Content-Format, Block2: decoded once
        install_junk_log_limit()
        site = ExactPathSite()
        path = tuple(p for p in self.profile.transport.path.split("/") if p)
        site.add_resource(path, self.resource)
        site.add_resource(HEALTH, HealthResource())
        for extra_path, extra in self._extra_resources:
            site.add_resource(extra_path, extra)
        mode = self.profile.security.mode
        host, port = self._bind
        shared = port_shared_by_parent("udp", host, port)  # `tam serve --workers`: the parent probed it
        if not shared:  # aiocoap binds with SO_REUSEPORT, which would share a busy port silently
            if port == 0:
                port = pick_port(host, "udp")  # (port 0 with SO_REUSEPORT may be a busy port too)
            else:
                ensure_port_free(host, port, "udp")
        if mode == "dtls-psk":
            aiocoap_compat.apply_dtls_fixes()
            if not self._devices:
                raise CredentialsError("a coaps server needs at least one device PSK (credentials.toml)")
            transports = ["tinydtls_server"]
            bind = (host, port - 1 if port > 0 else -1)  # tinydtls_server binds port + 1 of `bind`
        else:
            transports = ["udp6"]
            bind = (host, port)
        root: Any = site
        try:
            if mode in ("oscore", "edhoc"):
                if mode == "edhoc":
                    aiocoap_compat.apply_edhoc_server_guard()
                # Filled before the context exists: aiocoap replaces an empty (falsy) map by its own.
                credentials = IndexedCredentials()
                (self._load_oscore if mode == "oscore" else self._load_edhoc)(credentials)
                root = OscoreSiteWrapper(site, credentials)
                if mode == "edhoc" and self.profile.transport.echo:
                    # a message_1's address proves itself (RFC 9175 Echo) before the TAM makes a key
                    # pair and two Diffie-Hellman computations for it (≈ 0.74 ms of CPU)
                    self.edhoc_echo = EchoGuard(idle_timeout=self.profile.limits.idle_timeout)
                    setattr(root, aiocoap_compat.EDHOC_ECHO, self.edhoc_echo)
                self._context = await aiocoap.Context.create_server_context(
                    root, bind=bind, transports=transports, server_credentials=credentials
                )
                self._context.server_credentials = credentials  # also when empty, for update_devices
            else:
                credentials = IndexedCredentials()
                for d in self._devices if mode == "dtls-psk" else ():
                    credentials.set_psk(d.psk_identity, d.psk)
                self._keep_devices(self._devices)
                self._context = await aiocoap.Context.create_server_context(
                    root, bind=bind, transports=transports, server_credentials=credentials
                )
        except OSError as exc:
            raise TransportError(f"cannot bind {host}:{port}: {exc}") from None
        if mode == "dtls-psk":
            self.dtls_idle = aiocoap_compat.tidy_dtls_server(
                self._context, _log_bad_finished, self.profile.limits.idle_timeout
            )
        bound_duplicate_caches(self._context)
        if self.profile.transport.scheme == "coap":  # plain CoAP: refuse the cheap refusals early
            self.early = EarlyAnswer(
                self.profile,
                self.resource.echo,
                self.stats.count,
                other_paths=frozenset(extra_path for extra_path, _ in self._extra_resources),
            )
            aiocoap_compat.install_datagram_gate(self._context, self.early)
        if mode not in ("oscore", "edhoc"):  # OSCORE's outer requests carry no path: aiocoap's pipe
            self.fast = aiocoap_compat.install_fast_path(
                self._context, path, self.resource.respond, self.resource
            )
            if self.early is not None and self.fast is not None:
                self.early.later_block = self.fast.later_block
            if mode == "dtls-psk" and self.fast is not None:
                aiocoap_compat.serve_later_blocks_over_dtls(self._context, self.fast)
        sock = _server_socket(self._context)
        if not shared:
            keep_port_to_ourselves(sock)
        self.port = int(sock.getsockname()[1])
        enlarge_receive_buffer(sock)
        if mode != "dtls-psk" and stops_reading_on_socket_error(asyncio.get_running_loop()):
            ignore_icmp_errors(sock)  # aiocoap's udp6 transport reads through add_reader
        aiocoap_compat.drain_server_reads(self._context)  # queued datagrams: one wake-up, not one each
        log.info("TAM serving %s (%s)", self.uri, self.profile.name)

    def update_devices(self, devices: Sequence[DeviceCredentials]) -> tuple[int, int]:
        """Serve a new set of device credentials without a restart: (added, removed).

        New DTLS handshakes and OSCORE requests see the new set at once; sessions already
        established keep the key they were made with (DTLS has no way to re-check it).
        """
        if self._context is None:
            self._keep_devices(devices)
            return len(self._devices), 0
        creds = self._context.server_credentials
        mode = self.profile.security.mode
        prefix = {"dtls-psk": CLAIM_PREFIX, "edhoc": EDHOC_PREFIX}.get(mode, ":oscore:")
        old = {d.psk_identity: d for d in self._devices}
        new = {d.psk_identity: d for d in devices}
        gone = [i for i in old if i not in new or not self._same(new[i], old[i])]
        for identity in gone:
            key = f"{prefix}{identity}"
            value = creds.get(key)
            if key in creds:
                del creds[key]  # `del`, not `pop`: IndexedCredentials drops its index on __delitem__
            aiocoap_compat.release_oscore_context(value)  # its lock, for the new one
            if mode == "dtls-psk":
                creds.drop_psk(identity)
        fresh = [d for i, d in new.items() if i not in old or not self._same(new[i], old[i])]
        self._keep_devices(devices)
        if mode == "dtls-psk":
            for d in fresh:
                creds.set_psk(d.psk_identity, d.psk)
        elif mode in ("oscore", "edhoc"):
            everyone, self._devices = self._devices, fresh
            try:
                (self._load_oscore if mode == "oscore" else self._load_edhoc)(creds)
            finally:
                self._devices = everyone
        removed = sum(1 for i in gone if i not in new)
        return len(fresh), removed

    @property
    def edhoc_sessions(self) -> int:
        """EDHOC sessions (OSCORE contexts made by a handshake) the server currently keeps."""
        if self._context is None:
            return 0
        creds = self._context.server_credentials
        return sum(1 for v in creds.values() if aiocoap_compat.is_edhoc_responder_context(v))

    def duplicate_caches(self) -> list[DuplicateCache]:
        """The CoAP duplicate caches of the running server (empty before `start`)."""
        return aiocoap_compat.duplicate_caches(self._context) if self._context is not None else []

    @property
    def duplicate_entries(self) -> tuple[int, int]:
        """(entries, distinct peers) in the CoAP duplicate caches: bounded by the request rate."""
        caches = self.duplicate_caches()
        return sum(len(c) for c in caches), sum(c.peers() for c in caches)

    @property
    def dtls_sessions(self) -> int:
        """Server-side DTLS sessions currently kept (0 for other modes)."""
        return aiocoap_compat.dtls_server_sessions(self._context)

    async def close(self) -> None:
        """Stop serving and release the socket (and OSCORE context locks)."""
        if self._context is not None:
            ctx, self._context = self._context, None
            await ctx.shutdown()
            for value in list(ctx.server_credentials.values()):
                aiocoap_compat.release_oscore_context(value)  # sequence numbers, lock

    async def __aenter__(self) -> CoapServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
