"""The OTrP TAM, sans-IO: ProcessConnect → GetDeviceStateRequest, then one command per answer.

A policy says which Security Domains and Trusted Applications a device should hold. After the device
reports its state (GetDeviceStateResponse, DSI decrypted and its TEE certificate chain checked), the
TAM plans the difference, in this order: CreateSD for missing SDs, InstallTA for missing TAs, UpdateTA
for TAs whose binary differs from what this TAM last installed, DeleteTA for TAs the policy no longer
lists, DeleteSD for SDs the policy no longer lists. It sends one command per round trip; when the plan
is done (or a command failed) `receive` returns None — the binding's "204, nothing more".

Sessions are keyed by the `tid` the TAM chose, and each answer must echo the `rid` of the command in
flight. State lives in memory (`installed` can be persisted by the caller: it is plain data).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from teep_coap.otrp.model import (
    OTRP_VERSION,
    RESPONSE_FOR,
    BrokerError,
    CreateSDContent,
    CreateSDRequest,
    CreateSDResponse,
    DeleteSDContent,
    DeleteSDRequest,
    DeleteTAContent,
    DeleteTARequest,
    Dsi,
    DsiDocument,
    GetDeviceStateRequest,
    GetDeviceStateResponse,
    InstallTARequest,
    OtrpError,
    OtrpIdentityMismatch,
    OtrpMessage,
    OtrpProtocolError,
    OtrpSecurityError,
    TAContent,
    UpdateSDResponse,
    UpdateTARequest,
)
from teep_coap.otrp.protocol.wire import Encoding, OtrpCodec, codec_for, dsi_digest
from teep_coap.otrp.security.jose import Opened, Sealed
from teep_coap.otrp.security.pki import (
    OtrpIdentity,
    PublicKey,
    cert_public_key,
    load_cert_der,
    load_public_der,
)


@dataclass(frozen=True)
class SdSpec:
    """A Security Domain the TAM wants on the device."""

    spid: str
    sdname: str
    spcert: bytes  # DER of the SP's TA-signer certificate


@dataclass(frozen=True)
class TaSpec:
    """A Trusted Application (binary plus optional personalization data) in one SD."""

    sdname: str
    taid: str
    data: bytes
    pdata: bytes | None = None

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class OtrpTamPolicy:
    """Desired state; anything this TAM owns on the device beyond it is deleted."""

    sds: list[SdSpec] = field(default_factory=list)
    tas: list[TaSpec] = field(default_factory=list)


@dataclass
class OtrpTamConfig:
    identity: OtrpIdentity
    tee_anchors: tuple[x509.Certificate, ...]
    encoding: Encoding = "json"
    policy: OtrpTamPolicy = field(default_factory=OtrpTamPolicy)
    nextdsi: bool = False  # ask for the DSI after each command (bigger answers, fresher state)
    supportedsigalgs: tuple[str, ...] | None = ("RS256", "ES256")
    ocspdat: tuple[bytes, ...] = ()  # OCSP responses for the TAM chain (none in this demo PKI)
    max_sessions: int = 1024
    # transport identity (DTLS PSK identity / OSCORE id) → the `did` (SHA-256 of the TEE certificate) it
    # must belong to; identities not listed are not checked (plain CoAP / HTTP carry none)
    device_identities: dict[str, bytes] = field(default_factory=dict)

    @property
    def tamid(self) -> str:
        return self.identity.name


@dataclass
class CommandResult:
    """What happened to one command (for logs, tests and the CLI)."""

    command: str
    status: str
    error_code: str | None = None
    error_message: str | None = None


@dataclass
class _Session:
    tid: str
    rid: str = ""
    expect: type[OtrpMessage] | type[GetDeviceStateResponse] = GetDeviceStateResponse
    tee: str = ""
    did: bytes = b""
    tee_key: PublicKey | None = None
    signerreq: bool = True
    dsihash: bytes | None = None
    spaik: dict[str, PublicKey] = field(default_factory=dict)
    plan: list[Any] = field(default_factory=list)
    results: list[CommandResult] = field(default_factory=list)
    transport_identity: str | None = None


@dataclass
class OtrpTamEngine:
    """ProcessConnect / ProcessOTrPMessage of one TAM."""

    config: OtrpTamConfig
    rng: Callable[[int], bytes] = field(default=os.urandom, kw_only=True)
    # TAM's record of what it installed: {did hex: {"sdname\0taid": sha256 hex}}
    installed: dict[str, dict[str, str]] = field(default_factory=dict, kw_only=True)
    last_sent: Sealed | None = field(default=None, init=False)
    last_sent_name: str = field(default="", init=False)
    finished: list[_Session] = field(default_factory=list, init=False)
    codec: OtrpCodec = field(init=False)
    _sessions: dict[str, _Session] = field(default_factory=dict, init=False)
    _counter: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.codec = codec_for(self.config.encoding)

    # ------------------------------------------------------------------ entry points

    def connect(self, transport_identity: str | None = None) -> bytes:
        """ProcessConnect: a new session starts with a signed GetDeviceStateRequest (with x5c)."""
        if len(self._sessions) >= self.config.max_sessions:
            self._sessions.pop(next(iter(self._sessions)))  # oldest abandoned session goes
        session = _Session(tid=self.rng(8).hex(), transport_identity=transport_identity)
        self._sessions[session.tid] = session
        msg = GetDeviceStateRequest(
            rid=self._rid(session),
            tid=session.tid,
            ocspdat=self.config.ocspdat,
            supportedsigalgs=self.config.supportedsigalgs,
        )
        session.expect = GetDeviceStateResponse
        return self._send(msg, None, x5c=True)

    def receive(self, data: bytes, transport_identity: str | None = None) -> bytes | None:
        """ProcessOTrPMessage: the next command of the session, or None when there is nothing more."""
        self.last_sent = None
        session = self._session_for(data)
        if session.transport_identity != transport_identity:
            raise OtrpIdentityMismatch(
                f"session {session.tid[:16]} started with transport identity {session.transport_identity!r}, "
                f"this message came with {transport_identity!r}"
            )
        keys = [session.tee_key] if session.tee_key is not None else []
        try:
            opened = self.codec.open(
                data,
                self.config.identity.private_key,
                verify_keys=keys,
                anchors=self.config.tee_anchors if not keys else (),
            )
        except OtrpError as exc:
            self._end(
                session, CommandResult(self._command_name(session.expect), "invalid", None, str(exc)[:200])
            )
            raise
        try:
            return self._process(session, opened, transport_identity)
        except OtrpError as exc:
            if session.tid in self._sessions:  # a message that does not fit ends the session
                self._end(
                    session,
                    CommandResult(self._command_name(session.expect), "invalid", None, str(exc)[:200]),
                )
            raise

    def _process(self, session: _Session, opened: Opened, transport_identity: str | None) -> bytes | None:
        msg = opened.msg
        if isinstance(msg, BrokerError):
            self._end(session, CommandResult(self._command_name(session.expect), "fail", msg.errcode.value))
            return None
        if isinstance(msg, GetDeviceStateResponse):
            if session.expect is not GetDeviceStateResponse:
                raise OtrpProtocolError(
                    f"unexpected GetDeviceStateResponse (waiting for {session.expect.__name__})"
                )
            tee = msg.tees[0]
            self._check_ids(session, tee.rid, tee.tid)
            if tee.status != "pass" or tee.edsi is None:
                code = tee.reason.error_code.value if tee.reason and tee.reason.error_code else None
                self._end(session, CommandResult("GetDeviceState", "fail", code))
                return None
            assert opened.signer_cert is not None
            cert = load_cert_der(opened.signer_cert)
            session.tee_key = cert_public_key(cert)
            session.did = hashlib.sha256(opened.signer_cert).digest()
            expected = self.config.device_identities.get(transport_identity or "")
            if expected is not None and expected != session.did:
                self._end(session, CommandResult("GetDeviceState", "identity-mismatch"))
                raise OtrpIdentityMismatch(
                    f"transport identity {transport_identity!r} belongs to another device than this TEE"
                )
            session.tee = tee.edsi.dsi.tee.name
            session.signerreq = bool(tee.signerreq)
            session.results.append(CommandResult("GetDeviceState", "pass"))
            self._learn_dsi(session, tee.edsi.dsi)
            session.plan = self._plan(session, tee.edsi.dsi)
            return self._next(session)
        if not isinstance(msg, OtrpMessage) or type(msg) is not session.expect:
            raise OtrpProtocolError(
                f"unexpected {type(msg).__name__} (waiting for {session.expect.__name__})"
            )
        self._check_ids(session, msg.rid, msg.tid)
        content = getattr(msg, "content", None)
        reason = getattr(msg, "reason", None) or getattr(content, "reason", None)
        name = self._command_name(session.expect)
        status = getattr(msg, "status", "fail")
        if content is not None and content.did != session.did:
            raise OtrpSecurityError(f"{msg.TBS_NAME}: did is not the device of this session")
        if status != "pass":
            code = reason.error_code.value if reason and reason.error_code else None
            self._end(session, CommandResult(name, "fail", code, reason.error_message if reason else None))
            return None
        self._apply_success(session, msg)
        session.results.append(CommandResult(name, "pass"))
        if content is not None and getattr(content, "dsi", None) is not None:
            self._learn_dsi(session, content.dsi)
        return self._next(session)

    # ------------------------------------------------------------------ session helpers

    def _rid(self, session: _Session) -> str:
        self._counter += 1
        session.rid = f"{session.tid[:8]}-{self._counter}"
        return session.rid

    def _session_for(self, data: bytes) -> _Session:
        _cls, _rid, tid = self.codec.peek(data)
        session = self._sessions.get(tid)
        if session is None:
            if len(self._sessions) == 1 and not tid:  # an unsigned Broker error may carry no tid
                return next(iter(self._sessions.values()))
            raise OtrpProtocolError(f"no TAM session with tid {tid[:40]!r}")
        return session

    @staticmethod
    def _check_ids(session: _Session, rid: str, tid: str) -> None:
        if tid != session.tid or rid != session.rid:
            raise OtrpProtocolError(
                f"answer rid/tid {rid!r}/{tid!r} does not match {session.rid!r}/{session.tid!r}"
            )

    @staticmethod
    def _command_name(cls: type[Any]) -> str:
        return cls.__name__.removesuffix("Response")

    def _end(self, session: _Session, result: CommandResult) -> None:
        session.results.append(result)
        self._sessions.pop(session.tid, None)
        self.finished.append(session)
        del self.finished[:-16]

    def _learn_dsi(self, session: _Session, dsi: Dsi) -> None:
        session.dsihash = dsi_digest(self.config.encoding, DsiDocument(dsi=dsi))
        for aik in dsi.tee.teeaiklist or ():
            try:
                session.spaik[aik.spid] = load_public_der(aik.spaik)
            except OtrpSecurityError:
                continue

    def _record(self, session: _Session) -> dict[str, str]:
        return self.installed.setdefault(session.did.hex(), {})

    def _plan(self, session: _Session, dsi: Dsi) -> list[Any]:
        policy = self.config.policy
        have_sds = {sd.name: sd for sd in (dsi.tee.sdlist.sd if dsi.tee.sdlist else ())}
        have_tas = {(sd.name, ta.taid) for sd in have_sds.values() for ta in sd.talist}
        record = self._record(session)
        # forget records of TAs that are gone from the device
        for key in list(record):
            sdname, taid = key.split("\0", 1)
            if (sdname, taid) not in have_tas:
                del record[key]
        want_sds = {s.sdname: s for s in policy.sds}
        want_tas = {(t.sdname, t.taid): t for t in policy.tas}
        plan: list[Any] = [("CreateSD", s) for name, s in want_sds.items() if name not in have_sds]
        plan += [("InstallTA", t) for key, t in want_tas.items() if key not in have_tas]
        plan += [
            ("UpdateTA", t)
            for key, t in want_tas.items()
            if key in have_tas and record.get("\0".join(key)) != t.digest
        ]
        plan += [("DeleteTA", key) for key in sorted(have_tas) if key not in want_tas]
        plan += [("DeleteSD", name) for name in sorted(have_sds) if name not in want_sds]
        return plan

    def _next(self, session: _Session) -> bytes | None:
        if not session.plan:
            self._end(session, CommandResult("done", "pass"))
            return None
        action, arg = session.plan.pop(0)
        cfg = self.config
        common: dict[str, Any] = {
            "rid": self._rid(session),
            "tid": session.tid,
            "tee": session.tee,
            "nextdsi": cfg.nextdsi,
            "dsihash": session.dsihash,
            "ver": OTRP_VERSION,
        }
        msg: OtrpMessage
        if action == "CreateSD":
            msg = CreateSDRequest(
                **common,
                content=CreateSDContent(
                    spid=arg.spid, sdname=arg.sdname, spcert=arg.spcert, tamid=cfg.tamid, did=session.did
                ),
            )
        elif action in ("InstallTA", "UpdateTA"):
            spid = self._spid_of(arg.sdname)
            spaik = session.spaik.get(spid)
            if spaik is None:
                self._end(session, CommandResult(action, "skipped", None, f"no SP AIK known for {spid!r}"))
                return None
            update = action == "UpdateTA"
            enc = self.codec.seal_ta(arg.data, arg.pdata, spaik, update=update)
            content = TAContent(tamid=cfg.tamid, spid=spid, sdname=arg.sdname, taid=arg.taid)
            cls = UpdateTARequest if update else InstallTARequest
            msg = cls(**common, content=content, encrypted_ta=enc)
            session.plan.insert(0, ("_record", arg))
        elif action == "DeleteTA":
            sdname, taid = arg
            msg = DeleteTARequest(
                **common, content=DeleteTAContent(tamid=cfg.tamid, sdname=sdname, taid=taid)
            )
        elif action == "DeleteSD":
            msg = DeleteSDRequest(
                **common, content=DeleteSDContent(tamid=cfg.tamid, sdname=arg, deleteta=False)
            )
        else:  # pragma: no cover - plan entries are made above
            raise AssertionError(action)
        session.expect = RESPONSE_FOR[type(msg)]
        return self._send(msg, session, x5c=session.signerreq)

    def _spid_of(self, sdname: str) -> str:
        for sd in self.config.policy.sds:
            if sd.sdname == sdname:
                return sd.spid
        raise OtrpError(f"policy has a TA in SD {sdname!r} but no such SD")

    def _apply_success(self, session: _Session, msg: OtrpMessage) -> None:
        if session.plan and session.plan[0][0] == "_record":
            _, ta = session.plan.pop(0)
            self._record(session)[f"{ta.sdname}\0{ta.taid}"] = ta.digest
        content = getattr(msg, "content", None)
        teespaik = getattr(content, "teespaik", None)
        if isinstance(msg, CreateSDResponse | UpdateSDResponse) and teespaik is not None:
            for sd in self.config.policy.sds:
                if isinstance(msg, CreateSDResponse) and content is not None and sd.sdname == content.sdname:
                    session.spaik[sd.spid] = load_public_der(teespaik)

    def _send(self, msg: OtrpMessage, session: _Session | None, x5c: bool) -> bytes:
        recipient = session.tee_key if session is not None else None
        chain = self.config.identity.chain_der if x5c else None
        self.last_sent = self.codec.seal(msg, self.config.identity, recipient, chain)
        self.last_sent_name = msg.OUTER_NAME
        return self.last_sent.wire

    def results(self) -> list[CommandResult]:
        """Results of the most recently finished session."""
        return list(self.finished[-1].results) if self.finished else []


__all__ = ["CommandResult", "OtrpTamConfig", "OtrpTamEngine", "OtrpTamPolicy", "SdSpec", "TaSpec"]
