"""The TAM as a sans-IO engine: `connect()` and `receive(bytes)` return the next signed message or None.

Modelled on h11/aioquic: no sockets, no sleeping, no asyncio; time and randomness are injected. Unlike
h11 the per-session state does not live in this object but in its `TamRepository` (a port declared in
`teep_coap.protocol.ports`; `teep_coap.store.tam_db.TamStore` implements it): outstanding requests
keyed by token or challenge, bound to a device once it answered, so any TAM process sharing the
database can take the next message of a session, and a TAM restart loses nothing.

Session states (one row per request in `outstanding`, docs/protocol-facts.md §1.11):

    connect() ──> QUERY open ──QueryResponse──> answered ─┬─ plan empty ─────────────> done (None)
                    │    (token or challenge)              ├─ attestation refused ─────> Update(err 7), done
                    │                                      └─ plan ──> UPDATE open ──Success──> done
                    │                                                      └──Error──> done (recorded)
                    └──Error 3/4/5/8 (renegotiate) / 7 (attestation required)──> new QUERY open

A message that is not the first validly signed answer to an open, unexpired request is refused
(`InvalidMessage`) or, when it repeats an answer already taken, ignored (None).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from teep_coap import crashpoints
from teep_coap.errors import TeepCoapError
from teep_coap.model.codes import (
    CipherSuite,
    CoseType,
    DataItem,
    ErrorCode,
    FreshnessMechanism,
    Label,
    SuitCoseProfile,
)
from teep_coap.model.teep import (
    DEFAULT_SUIT_COSE_PROFILES,
    ComponentId,
    Error,
    QueryRequest,
    QueryResponse,
    Success,
    SystemPropertyClaims,
    TeepMessage,
    Update,
)
from teep_coap.protocol import attestation as att
from teep_coap.protocol.errors import IdentityMismatch, InvalidMessage, TamFailure
from teep_coap.protocol.events import (
    ComponentInstalled,
    ComponentRemoved,
    SendReply,
    SessionEnded,
    TamEvent,
    reply_of,
)
from teep_coap.protocol.policy import Policy
from teep_coap.protocol.ports import TamRepository
from teep_coap.protocol.records import OPEN, Device, DeviceComponent, Outstanding, StoreError, component_key
from teep_coap.protocol.reports import ReportError, check_report_nonces
from teep_coap.protocol.stateless import StatelessTokens
from teep_coap.protocol.wire import COSE, NotSigned, Opened, Wire
from teep_coap.security.keys import SigningKey, VerifyingKey, load_verifying_key
from teep_coap.security.suites import legacy_ids, normalize_alg, normalize_suite

log = logging.getLogger("teep_coap.protocol.tam")

Clock = Callable[[], float]
Rng = Callable[[int], bytes]

MAX_RENEGOTIATIONS = 3
MAX_LIST_ITEMS = (
    256  # per tc-list / requested-tc-list / unneeded-manifest-list: bounds what one device stores
)
EXPIRE_EVERY = 60.0  # seconds (of the engine's clock) between two sweeps of expired requests
KEY_CACHE_SIZE = 4096  # parsed device public keys kept, keyed by their stored PEM bytes
DIGEST_CACHE_SIZE = 256  # manifest digests kept, keyed by the envelope bytes


def suite_of(key: SigningKey) -> CipherSuite:
    return ((int(CoseType.COSE_SIGN1), normalize_alg(key.alg)),)


@dataclass
class TamConfig:
    """What the TAM asks for and accepts. `keys` hold one signing key per supported cipher suite."""

    keys: tuple[SigningKey, ...]
    versions: tuple[int, ...] = (0,)
    suit_cose_profiles: tuple[SuitCoseProfile, ...] = DEFAULT_SUIT_COSE_PROFILES
    freshness_mechanisms: tuple[int, ...] = (int(FreshnessMechanism.NONCE),)
    attestation: str = att.BACKGROUND_CHECK  # none | background-check | passport
    data_items: int = int(DataItem.ATTESTATION | DataItem.TRUSTED_COMPONENTS)
    token_lifetime: float = 6 * 3600.0  # the draft recommends hours: Update processing can be slow
    max_outstanding_per_device: int = 4
    max_outstanding_unbound: int = 1000
    token_size: int = 16
    challenge_size: int = 16
    evidence_max_age: float = 300.0
    verifier_keys: tuple[VerifyingKey, ...] = ()  # passport: the Verifiers whose results we accept
    tam_attestation: bytes | None = None  # sent in a new QueryRequest after ERR_ATTESTATION_REQUIRED
    tam_attestation_format: str | None = None
    # fresh TAM attestation for the Agent's challenge (e.g. a Verifier's result); preferred over the above
    tam_attestation_provider: Callable[[bytes | None], bytes] | None = None
    token_with_attestation: bool = False  # the WG example sends token and challenge together
    strict_transport_identity: bool = False  # refuse devices without a registered transport identity
    policy: Policy | None = None
    keep_expired: float = 24 * 3600.0  # how long expired requests are kept to say "expired"
    # With a secret, a QueryRequest to a peer without an authenticated transport identity stores
    # nothing: its token authenticates itself (protocol.stateless). None = every request is stored.
    stateless_secret: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise TamFailure("TamConfig needs at least one signing key")
        if self.attestation not in att.MODELS:
            raise TamFailure(f"attestation must be one of {att.MODELS}, not {self.attestation!r}")
        if self.attestation == att.NONE:
            self.data_items &= ~int(DataItem.ATTESTATION)

    @property
    def suites(self) -> tuple[CipherSuite, ...]:
        return tuple(suite_of(k) for k in self.keys)

    def key_for_alg(self, alg: int) -> SigningKey | None:
        alg = normalize_alg(alg)
        for key in self.keys:
            if normalize_alg(key.alg) == alg:
                return key
        return None


@dataclass(frozen=True)
class _Request:
    """Parameters of a QueryRequest, kept in the outstanding row to check the answer against."""

    versions: tuple[int, ...]
    suites: tuple[CipherSuite, ...]
    profiles: tuple[SuitCoseProfile, ...]
    freshness: tuple[int, ...]
    data_items: int
    attestation: str
    round: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "versions": list(self.versions),
            "suites": [[list(op) for op in s] for s in self.suites],
            "profiles": [list(p) for p in self.profiles],
            "freshness": list(self.freshness),
            "data_items": self.data_items,
            "attestation": self.attestation,
            "round": self.round,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> _Request:
        return cls(
            versions=tuple(d["versions"]),
            suites=tuple(normalize_suite(s) for s in d["suites"]),
            profiles=tuple(tuple(p) for p in d["profiles"]),
            freshness=tuple(d["freshness"]),
            data_items=int(d["data_items"]),
            attestation=str(d["attestation"]),
            round=int(d.get("round", 0)),
        )


def _wants_challenge(req: _Request) -> bool:
    """A QueryRequest carries a challenge when it asks for background-check evidence with nonces."""
    return bool(
        req.data_items & DataItem.ATTESTATION
        and req.attestation == att.BACKGROUND_CHECK
        and FreshnessMechanism.NONCE in req.freshness
    )


def _cid_json(cid: ComponentId) -> list[str]:
    return [p.hex() for p in cid]


def _cid_from_json(parts: list[str]) -> ComponentId:
    return tuple(bytes.fromhex(p) for p in parts)


@dataclass
class TamEngine:
    """ProcessConnect and ProcessTeepMessage of RFC 9397 for one TAM, state in `store`."""

    config: TamConfig
    store: TamRepository
    clock: Clock = field(default=time.time, kw_only=True)
    rng: Rng = field(default=os.urandom, kw_only=True)
    wire: Wire = field(default=COSE, kw_only=True)  # CBOR/COSE, or JSON/JWS (protocol.wire)
    _policy_synced: bool = field(default=False, init=False, repr=False)
    # Per-process caches of pure functions of stored bytes (PEM → key, envelope → digest): keyed by
    # content, so another process changing the database can never make an entry stale.
    _keys: OrderedDict[bytes, VerifyingKey] = field(default_factory=OrderedDict, init=False, repr=False)
    _next_expire: float = field(default=float("-inf"), init=False, repr=False)
    _stateless: StatelessTokens | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        secret = self.config.stateless_secret
        self._stateless = StatelessTokens(secret) if secret is not None else None

    # ---------------------------------------------------------------- entry points

    def handle_connect(self, now: float, transport_identity: str | None = None) -> tuple[TamEvent, ...]:
        """ProcessConnect at time `now`: a new session starts with a signed QueryRequest (`SendReply`)."""
        if crashpoints.armed is not None:
            crashpoints.reached("tam.received.connect")
        _call.now, _call.events, _call.sender = now, [], None
        try:
            with self.store.atomic():
                answer = self._connect(transport_identity)
        except StoreError as exc:
            raise TamFailure(f"TAM store failure: {exc}") from exc
        if crashpoints.armed is not None:
            crashpoints.reached("tam.committed.connect")
        return (SendReply(answer), *_call.events)

    def handle_message(
        self, data: bytes, now: float, transport_identity: str | None = None
    ) -> tuple[TamEvent, ...]:
        """ProcessTeepMessage at time `now`: the next signed message (`SendReply`, absent when nothing
        more) and what the message committed (`SessionEnded`, `ComponentInstalled`, ...)."""
        _call.now, _call.events, _call.sender = now, [], None
        try:
            with self.store.atomic():  # a refused message rolls back everything it touched
                answer = self._receive(data, transport_identity)
        except StoreError as exc:
            raise TamFailure(f"TAM store failure: {exc}") from exc
        except InvalidMessage as exc:
            self._audit_refused(exc)
            raise
        if crashpoints.armed is not None:
            crashpoints.reached(crashpoints.message_point("tam.committed", getattr(_received, "kind", "?")))
        return (SendReply(answer), *_call.events) if answer is not None else tuple(_call.events)

    def next_timer(self) -> float:
        """When `handle_timer` is due next (engine clock): the sweep of expired requests and tokens."""
        return self._next_expire

    def handle_timer(self, now: float) -> None:
        """Housekeeping a server calls at `next_timer()`: reload a changed policy file, drop requests
        expired longer than `keep_expired` and spent stateless tokens past their expiry."""
        _call.now, _call.events, _call.sender = now, [], None
        try:
            with self.store.atomic():
                self._sync_policy(now)
                self.store.expire_outstanding(now - self.config.keep_expired)
                if self._stateless is not None:
                    self.store.forget_spent_tokens(now)
        except StoreError as exc:
            raise TamFailure(f"TAM store failure: {exc}") from exc
        self._next_expire = now + EXPIRE_EVERY

    # Compatibility: the byte-in/byte-out calls of the first API (engine tests, scripts, the CLI's
    # `tam process`) read the injected clock and run a due timer first, as the engine used to.

    def connect(self, transport_identity: str | None = None) -> bytes:
        """ProcessConnect on the engine's clock (compatibility; servers call `handle_connect`)."""
        now = self.clock()
        if now >= self._next_expire:
            self.handle_timer(now)
        answer = reply_of(self.handle_connect(now, transport_identity))
        assert answer is not None  # handle_connect always replies
        return answer

    def receive(self, data: bytes, transport_identity: str | None = None) -> bytes | None:
        """ProcessTeepMessage on the engine's clock (compatibility; servers call `handle_message`)."""
        return reply_of(self.handle_message(data, self.clock(), transport_identity))

    def _connect(self, transport_identity: str | None) -> bytes:
        now = self._now()
        self._sync_policy(now)  # a stat of the policy file; loads it before the first session
        device = self.store.device_by_transport_identity(transport_identity) if transport_identity else None
        if device is None and self._stateless is not None:
            return self._query(None, None, self._initial_request(None))  # nothing stored
        session = self.store.start_session(
            now, device_id=device.id if device else None, transport_identity=transport_identity
        )
        return self._query(session, device, self._initial_request(device))

    def _audit_refused(self, exc: InvalidMessage) -> None:
        """Audit the refusal of a message a registered device signed (a replay, a stale answer).

        The refusal rolled its transaction back; this entry is written after it. Messages that never
        verified are not audited: junk from anyone must not cost the TAM a database write.
        """
        device = _call.sender
        if device is None:
            return
        try:
            with self.store.atomic():
                self.store.audit(None, self._now(), "refused", f"{device.kid.hex()}: {str(exc)[:200]}")
        except StoreError as err:
            log.warning("refusal not audited: %s", err)

    # ---------------------------------------------------------------- helpers

    @staticmethod
    def _now() -> float:
        """The `now` of the call being handled (one instant for the whole call)."""
        return float(_call.now)

    def _end_session(self, session_id: int, now: float, outcome: str) -> None:
        self.store.end_session(session_id, now, outcome)
        _call.events.append(SessionEnded(session_id, outcome))

    def _record_changes(
        self, device: Device, now: float, *, installed: dict[ComponentId, int], removed: list[ComponentId]
    ) -> None:
        self.store.record_changes(device.id, now, installed=installed, removed=removed)
        _call.events.extend(ComponentInstalled(device.kid, cid, seq) for cid, seq in installed.items())
        _call.events.extend(ComponentRemoved(device.kid, cid) for cid in removed)

    def _sync_policy(self, now: float) -> None:
        policy = self.config.policy
        if policy is None:
            return
        with _policy_lock:  # one reload at a time when calls run on several threads
            if policy.reload_if_changed() or not self._policy_synced:
                policy.sync(self.store, now)
                self._policy_synced = True

    def _device_key(self, pem: bytes) -> VerifyingKey:
        """The parsed public key of a device (PEM parse + thumbprint cost ≈ 0.1 ms each time)."""
        with _cache_lock:  # engine calls may run on several threads (profiles.session.TamHandler)
            key = self._keys.get(pem)
            if key is not None:
                self._keys.move_to_end(pem)
                return key
        key = load_verifying_key(pem)
        with _cache_lock:
            self._keys[pem] = key
            if len(self._keys) > KEY_CACHE_SIZE:
                self._keys.popitem(last=False)
        return key

    def _initial_request(self, device: Device | None) -> _Request:
        neg = device.negotiated if device else {}
        cfg = self.config
        suites = tuple(normalize_suite(s) for s in neg.get("suites", [])) or cfg.suites
        return _Request(
            versions=tuple(neg.get("versions", cfg.versions)),
            suites=suites,
            profiles=tuple(tuple(p) for p in neg.get("profiles", cfg.suit_cose_profiles)),
            freshness=tuple(neg.get("freshness", cfg.freshness_mechanisms)),
            data_items=cfg.data_items,
            attestation=cfg.attestation if cfg.data_items & DataItem.ATTESTATION else att.NONE,
        )

    def _query(
        self,
        session_id: int | None,
        device: Device | None,
        req: _Request,
        *,
        attestation_payload: bytes | None = None,
        attestation_format: str | None = None,
    ) -> bytes:
        """Build, record and sign a QueryRequest. Token iff the attestation bit is clear (§1.11), except
        where no challenge can identify the answer (passport; timestamp-only freshness). Without a
        session (`session_id` None) nothing is recorded: the token authenticates itself and the
        challenge derives from it (protocol.stateless)."""
        cfg, now = self.config, self._now()
        token = challenge = None
        if session_id is None:
            assert self._stateless is not None
            token = self._stateless.issue(req.to_json(), now=now, lifetime=cfg.token_lifetime, rng=self.rng)
            if _wants_challenge(req):
                challenge = self._stateless.challenge_for(token)
        elif _wants_challenge(req):
            challenge = self.rng(cfg.challenge_size)
        if session_id is not None and (challenge is None or cfg.token_with_attestation):
            token = self.rng(cfg.token_size)
        msg = QueryRequest(
            token=token,
            supported_freshness_mechanisms=None if req.freshness == (0,) else req.freshness,
            challenge=challenge,
            versions=req.versions,
            attestation_payload_format=attestation_format,
            attestation_payload=attestation_payload,
            supported_teep_cipher_suites=req.suites,
            supported_suit_cose_profiles=req.profiles,
            data_item_requested=req.data_items,
        )
        # COSE_Sign1 once the device's suite is known, else one signature per offered suite (§1.6).
        keys: list[SigningKey] = []
        if device is not None and (k := cfg.key_for_alg(device.alg)) is not None:
            keys = [k]
        else:
            for suite in req.suites:
                k = cfg.key_for_alg(suite[0][1])
                if k is not None and k not in keys:
                    keys.append(k)
        if not keys:
            raise TamFailure("no TAM key for any offered cipher suite")
        if session_id is None:
            return self.wire.seal(msg, keys[0] if len(keys) == 1 else keys)
        self.store.add_outstanding(
            session_id=session_id,
            device_id=device.id if device else None,
            kind="query",
            token=token,
            challenge=challenge,
            now=now,
            lifetime=cfg.token_lifetime,
            cap=cfg.max_outstanding_per_device if device else cfg.max_outstanding_unbound,
            data=req.to_json(),
        )
        self.store.audit(
            session_id, now, "send-query-request", f"token={_hex(token)} challenge={_hex(challenge)}"
        )
        return self.wire.seal(msg, keys[0] if len(keys) == 1 else keys)

    def _verify(self, data: bytes) -> tuple[Opened, Device]:
        """Find the signing device by kid (or by alg among all devices when there is no kid)."""
        try:
            hint = self.wire.peek(data)
        except NotSigned as exc:
            raise InvalidMessage(f"not a signed TEEP message: {exc}") from None
        if not hint.single:
            raise InvalidMessage(f"a device must sign with one signature (COSE_Sign1), got {hint.structure}")
        kid, alg = hint.signers[0]
        if alg is None:
            raise InvalidMessage(f"{hint.structure} without a supported alg header")
        if kid is not None:
            device = self.store.device_by_kid(kid)
            candidates = [device] if device else []
            if not candidates:
                raise InvalidMessage(f"unknown signer: no device registered with kid {kid.hex()}")
        else:
            base = normalize_alg(alg)
            candidates = self.store.devices_with_alg([base, *legacy_ids(base)])
            if not candidates:
                raise InvalidMessage("no kid header and no registered device uses that algorithm")
        from teep_coap.encoding.errors import TeepDecodeError
        from teep_coap.security.errors import SecurityError

        keys = {}
        for dev in candidates:
            try:
                keys[dev.id] = self._device_key(dev.public_key)
            except SecurityError as exc:
                raise TamFailure(f"stored key of device {dev.kid.hex()} is unreadable: {exc}") from exc
        try:
            opened = self.wire.open(data, list(keys.values()))
        except SecurityError as exc:
            raise InvalidMessage(f"signature check failed: {exc}") from None
        except TeepDecodeError as exc:
            raise InvalidMessage(f"malformed TEEP message: {exc}") from None
        for dev in candidates:
            if keys[dev.id] == opened.key:
                return opened, dev
        raise TamFailure("verified key matches no candidate device")  # cannot happen

    def _check_identity(self, device: Device, transport_identity: str | None) -> None:
        if transport_identity is None:
            return
        ids = {device.psk_identity, device.oscore_id} - {None}
        if transport_identity in ids:
            return
        owner = self.store.device_by_transport_identity(transport_identity)
        if owner is not None or ids or self.config.strict_transport_identity:
            raise IdentityMismatch(
                f"transport identity {transport_identity!r} does not belong to device {device.kid.hex()}"
            )

    def _find(
        self, device: Device, *, token: bytes | None, challenge: bytes | None, kinds: tuple[str, ...]
    ) -> Outstanding | None:
        """The request this message answers; raises for unknown/expired ones; None = duplicate."""
        what = f"token {token.hex()}" if token is not None else f"challenge {_hex(challenge)}"
        rows = self.store.find_outstanding(token=token, challenge=challenge, kinds=kinds, device_id=device.id)
        if not rows:
            raise InvalidMessage(
                f"no outstanding request with {what} (unknown, expired long ago, or never sent)"
            )
        row = rows[0]
        if row.state != OPEN:
            if row.state == "superseded":
                raise InvalidMessage(
                    f"the request with {what} was superseded by newer requests to this device"
                )
            return None
        if row.expires_at <= self._now():
            raise InvalidMessage(f"the request with {what} expired")
        return row

    # ---------------------------------------------------------------- dispatch

    def _receive(self, data: bytes, transport_identity: str | None) -> bytes | None:
        if not data:
            raise InvalidMessage("empty message (an empty payload means connect)")
        opened, device = self._verify(data)
        _call.sender = device
        self._check_identity(device, transport_identity)
        msg = opened.message
        if crashpoints.armed is not None:  # test hook (teep_coap.crashpoints)
            _received.kind = type(msg).__name__
            crashpoints.reached(crashpoints.message_point("tam.received", msg))
        self._adopt_stateless(msg, device, transport_identity)
        if isinstance(msg, QueryResponse):
            return self._on_query_response(msg, device)
        if isinstance(msg, Success):
            return self._on_success(msg, device)
        if isinstance(msg, Error):
            return self._on_error(msg, device)
        raise InvalidMessage(f"a TAM does not accept {type(msg).__name__} messages")

    def _adopt_stateless(self, msg: TeepMessage, device: Device, transport_identity: str | None) -> None:
        """A verified answer echoing a self-authenticating token: now that the device is known, record
        the token's single use and the request it answers, so the usual path takes over (`_find`,
        `claim`). Spent before (here or by another TAM process) → the usual path finds that request
        and treats the message as a duplicate."""
        tokens = self._stateless
        token = msg.token if isinstance(msg, QueryResponse | Error) else None
        if tokens is None or token is None or not tokens.looks_like(token):
            return
        now = self._now()
        req = self._initial_request(None)
        expires = tokens.check(token, req.to_json(), now=now)
        if expires is None:  # not ours: maybe a stored token of the same shape; the usual path decides
            return
        if not self.store.spend_token(tokens.spend_key(token), expires):
            return
        sid = self.store.start_session(now, device_id=device.id, transport_identity=transport_identity)
        challenge = tokens.challenge_for(token) if _wants_challenge(req) else None
        self.store.add_outstanding(
            session_id=sid,
            device_id=device.id,
            kind="query",
            token=token,
            challenge=challenge,
            now=now,
            lifetime=expires - now,
            cap=self.config.max_outstanding_per_device,
            data=req.to_json(),
        )
        self.store.audit(
            sid, now, "stateless-query-answered", f"token={token.hex()} challenge={_hex(challenge)}"
        )

    def _duplicate(self, device: Device, msg: TeepMessage) -> None:
        log.info("ignoring duplicate %s from %s", type(msg).__name__, device.kid.hex())
        self.store.audit(
            None, self._now(), "duplicate-ignored", f"{type(msg).__name__} from {device.kid.hex()}"
        )

    def _check_reports(self, reports: Sequence[bytes] | None, token: bytes | None) -> None:
        if token is None or not reports:
            return
        try:
            check_report_nonces(reports, token)
        except ReportError as exc:
            raise InvalidMessage(str(exc)) from None

    def _on_query_response(self, msg: QueryResponse, device: Device) -> bytes | None:
        now = self._now()
        challenge = None
        if msg.token is None:
            challenge = att.peek_nonce(msg.attestation_payload) if msg.attestation_payload else None
            if challenge is None:
                raise InvalidMessage("QueryResponse has neither a token nor evidence with a nonce")
        row = self._find(device, token=msg.token, challenge=challenge, kinds=("query",))
        if row is None:
            self._duplicate(device, msg)
            return None
        if row.token is not None and msg.token is None:
            raise InvalidMessage("QueryResponse must echo the token of the QueryRequest")
        self._check_reports(msg.suit_reports, msg.token)
        if not self.store.claim(row.id, device.id):
            self._duplicate(device, msg)
            return None
        sid = row.session_id
        if row.device_id != device.id:  # a request made for this device: its session is bound already
            self.store.bind_session(sid, device.id)
        self.store.audit(sid, now, "recv-query-response", f"device={device.kid.hex()}")
        req = _Request.from_json(row.data)

        def refuse(code: ErrorCode, text: str) -> bytes:
            self.store.audit(sid, now, "refused", f"{code.name}: {text}")
            self._end_session(sid, now, code.name)
            upd = Update(err_code=int(code), err_msg=text[:128])
            return self._sign_for(device, upd)

        selected = 0 if msg.selected_version is None else msg.selected_version
        if selected not in req.versions:
            return refuse(ErrorCode.ERR_PERMANENT_ERROR, f"selected-version {selected} was not offered")
        claims: dict[str, Any] | None = None
        if req.data_items & DataItem.ATTESTATION:
            if not msg.attestation_payload:
                return refuse(ErrorCode.ERR_ATTESTATION_REQUIRED, "attestation-payload missing")
            try:
                claims = self._appraise(msg, device, row, req)
            except att.AttestationError as exc:
                return refuse(ErrorCode.ERR_ATTESTATION_REQUIRED, str(exc))
        have = self._record_report(
            sid, device, msg, claims, bool(req.data_items & DataItem.TRUSTED_COMPONENTS)
        )
        plan_install, plan_remove = self._plan(device, have)
        if not plan_install and not plan_remove:
            self._end_session(sid, now, "up-to-date")
            return None
        token = self.rng(self.config.token_size)
        upd = Update(
            token=token,
            unneeded_manifest_list=tuple(plan_remove) if plan_remove else None,
            manifest_list=tuple(e for _, _, e in plan_install) if plan_install else None,
        )
        self.store.add_outstanding(
            session_id=sid,
            device_id=device.id,
            kind="update",
            token=token,
            challenge=None,
            now=now,
            lifetime=self.config.token_lifetime,
            cap=self.config.max_outstanding_per_device,
            data={
                "install": [[_cid_json(c), s, _manifest_digest(e)] for c, s, e in plan_install],
                "remove": [_cid_json(c) for c in plan_remove],
            },
        )
        self.store.audit(
            sid,
            now,
            "send-update",
            f"install={len(plan_install)} remove={len(plan_remove)} token={token.hex()}",
        )
        return self._sign_for(device, upd)

    def _appraise(
        self, msg: QueryResponse, device: Device, row: Outstanding, req: _Request
    ) -> dict[str, Any]:
        payload = msg.attestation_payload
        assert payload is not None
        fmt = msg.attestation_payload_format or att.RESULT_FORMAT
        now = self._now()
        if fmt == att.RESULT_FORMAT:
            if not self.config.verifier_keys:
                raise att.AttestationError("attestation result received but no Verifier is trusted")
            return att.check_result(
                payload,
                list(self.config.verifier_keys),
                expected_kid=device.kid,
                expected_nonce=row.token if FreshnessMechanism.NONCE in req.freshness else None,
                now=now,
                max_age=self.config.evidence_max_age,
            )
        if req.attestation == att.PASSPORT:
            raise att.AttestationError("evidence received but this TAM expects an attestation result")
        key = self._device_key(device.public_key)
        return att.check_evidence(
            payload,
            key,
            expected_nonce=row.challenge
            if row.challenge is not None
            else (row.token if FreshnessMechanism.NONCE in req.freshness else None),
            now=now,
            max_age=self.config.evidence_max_age,
        )

    def _record_report(
        self, sid: int, device: Device, msg: QueryResponse, claims: dict[str, Any] | None, asked_tcs: bool
    ) -> list[DeviceComponent]:
        """Store what the device reported; returns the device's components afterwards. Its installed
        set is replaced only when the request asked for trusted components (otherwise an absent
        tc-list says nothing)."""
        now = self._now()
        for name, items in (
            ("tc-list", msg.tc_list),
            ("requested-tc-list", msg.requested_tc_list),
            ("unneeded-manifest-list", msg.unneeded_manifest_list),
        ):
            if items is not None and len(items) > MAX_LIST_ITEMS:
                raise InvalidMessage(f"{name} has {len(items)} entries, more than {MAX_LIST_ITEMS}")
        installed: dict[ComponentId, int | None] | None = None
        if asked_tcs:
            installed = self._reconcile(sid, device, msg.tc_list or (), claims)
        wanted = {tuple(r.component_id): r.tc_manifest_sequence_number for r in msg.requested_tc_list or ()}
        unneeded = [tuple(c) for c in msg.unneeded_manifest_list or ()]
        have = self.store.set_device_components(
            device.id, now, installed=installed, wanted=wanted, unneeded=unneeded
        )
        self.store.touch_device(device.id, now, attested_claims=claims)
        return have

    def _reconcile(
        self,
        sid: int,
        device: Device,
        tc_list: Sequence[SystemPropertyClaims],
        claims: dict[str, Any] | None,
    ) -> dict[ComponentId, int | None]:
        """What the device has, per its report: the truth the TAM's record is brought in line with.

        Each tc-list entry's tc-manifest-sequence-number replaces the recorded one (higher after a lost
        Success, lower after a device restored from backup: the TAM then offers its newest again, and
        the Agent never accepts anything lower than it holds). Where the report disagrees with the
        record and appraised evidence names the component's manifest digest, the catalog version with
        that digest (among the reported and the recorded one) wins over the tc-list. A version the
        catalog does not know is recorded as reported and audited; it only ever stops the TAM from
        offering something not newer (docs/engines.md).
        """
        if not tc_list:
            return {}  # nothing installed: no record to read (the hot path of a first session)
        now = self._now()
        recorded = {
            component_key(c.component_id): c.installed_seq for c in self.store.device_components(device.id)
        }
        attested: dict[str, str] | None = None
        out: dict[ComponentId, int | None] = {}
        for entry in tc_list:
            cid = tuple(entry.component_id)
            seq = _reported_seq(entry)
            before = recorded.get(component_key(cid))
            if (seq is not None and seq == before) or (seq is None and claims is None):
                out[cid] = seq  # agrees, or nothing to reconcile with (None keeps the recorded number)
                continue
            if claims is not None:
                attested = attested if attested is not None else _attested_digests(claims)
                digest = attested.get(".".join(p.hex() for p in cid))
                if digest is not None:
                    # Only the versions the two sides name (all of them when the device names none):
                    # a device cannot make the TAM hash its whole catalog in every session.
                    hints = None if seq is None else [n for n in (seq, before) if n is not None and n >= 0]
                    version = next(
                        (
                            e
                            for e in self.store.component_versions(cid, hints)
                            if hashlib.sha256(e.envelope).hexdigest() == digest
                        ),
                        None,
                    )
                    if version is None:
                        self.store.audit(
                            sid, now, "unknown-manifest", f"{_cid_text(cid)} digest={digest[:16]} seq={seq}"
                        )
                    else:
                        if seq is not None and version.sequence_number != seq:
                            self.store.audit(
                                sid,
                                now,
                                "tc-list-disagrees",
                                f"{_cid_text(cid)} reported={seq} attested={version.sequence_number}",
                            )
                        seq = version.sequence_number
            if seq != before:
                log.info(
                    "device %s: %s recorded %s, device has %s", device.kid.hex(), _cid_text(cid), before, seq
                )
                self.store.audit(sid, now, "reconciled", f"{_cid_text(cid)} recorded={before} device={seq}")
            out[cid] = seq
        return out

    def _plan(
        self, device: Device, components: Sequence[DeviceComponent] | None = None
    ) -> tuple[list[tuple[ComponentId, int, bytes]], list[ComponentId]]:
        """What policy says this device should get and lose now (`components`: the device's, if the
        caller has just read them)."""
        if components is None:
            components = self.store.device_components(device.id)
        have = {component_key(c.component_id): c for c in components}
        install: list[tuple[ComponentId, int, bytes]] = []
        remove: list[ComponentId] = []
        catalog = {component_key(e.component_id): e for e in self.store.latest_components()}
        for key, entry in catalog.items():
            dc = have.get(key)
            installed = dc is not None and dc.installed_seq is not None
            if entry.audience == "delete":
                if installed:
                    remove.append(entry.component_id)
                continue
            if dc is not None and dc.unneeded:
                if installed and entry.audience != "all":
                    remove.append(entry.component_id)
                continue
            wanted = entry.audience == "all" or (dc is not None and dc.wanted)
            if not wanted:
                continue
            if (
                dc is not None
                and dc.wanted
                and dc.wanted_min_seq is not None
                and entry.sequence_number < dc.wanted_min_seq
            ):
                log.info(
                    "device %s wants %s >= %d; catalog has %d",
                    device.kid.hex(),
                    entry.name,
                    dc.wanted_min_seq,
                    entry.sequence_number,
                )
                continue
            if not installed or (
                dc is not None
                and dc.installed_seq is not None
                and 0 <= dc.installed_seq < entry.sequence_number
            ):
                install.append((entry.component_id, entry.sequence_number, entry.envelope))
        # Unneeded components the catalog does not know are still removed on the device's request.
        for key, dc in have.items():
            if dc.unneeded and dc.installed_seq is not None and key not in catalog:
                remove.append(dc.component_id)
        return install, remove

    def _sign_for(self, device: Device, msg: TeepMessage) -> bytes:
        key = self.config.key_for_alg(device.alg)
        if key is None:
            raise TamFailure(f"no TAM key for the device's algorithm {device.alg}")
        return self.wire.seal(msg, key)

    def _on_success(self, msg: Success, device: Device) -> bytes | None:
        now = self._now()
        if msg.token is None:
            raise InvalidMessage("Success without a token answers nothing this TAM sent")
        row = self._find(device, token=msg.token, challenge=None, kinds=("update",))
        if row is None:
            self._duplicate(device, msg)
            return None
        self._check_reports(msg.suit_reports, msg.token)
        if not self.store.claim(row.id, device.id):
            self._duplicate(device, msg)
            return None
        installed = {_cid_from_json(item[0]): int(item[1]) for item in row.data.get("install", [])}
        removed = [_cid_from_json(c) for c in row.data.get("remove", [])]
        self._record_changes(device, now, installed=installed, removed=removed)
        self.store.touch_device(device.id, now)
        self.store.audit(row.session_id, now, "recv-success", msg.msg or "")
        self._end_session(row.session_id, now, "success")
        return None

    def _on_error(self, msg: Error, device: Device) -> bytes | None:
        now = self._now()
        row: Outstanding | None
        if msg.token is not None:
            row = self._find(device, token=msg.token, challenge=None, kinds=("query", "update"))
            if row is None:
                self._duplicate(device, msg)
                return None
            self._check_reports(msg.suit_reports, msg.token)
        else:
            row = self.store.latest_open_query(device.id, now) or self.store.latest_open_update(
                device.id, now
            )
        if row is None:
            # Answers nothing outstanding (e.g. repeated after the request was taken): record only.
            log.info("error %s from %s answers no open request", msg.err_code_name, device.kid.hex())
            self.store.touch_device(device.id, now)
            self.store.audit(None, now, "unmatched-error", f"{device.kid.hex()} {msg.err_code_name}")
            return None
        if not self.store.claim(row.id, device.id):
            self._duplicate(device, msg)
            return None
        sid = row.session_id
        if row.device_id != device.id:  # a request made for this device: its session is bound already
            self.store.bind_session(sid, device.id)
        self.store.touch_device(device.id, now)
        self.store.audit(sid, now, "recv-error", f"{msg.err_code_name}: {msg.err_msg or ''}")
        if row.kind == "update" and msg.suit_reports:
            partial = _installed_per_reports(row, msg.suit_reports)
            if partial:
                self._record_changes(device, now, installed=partial, removed=[])
                self.store.audit(sid, now, "partial-install", f"{len(partial)} manifest(s) succeeded")
        req = _Request.from_json(row.data) if row.kind == "query" else None
        again = self._react(msg, device, req)
        if again is None:
            self._end_session(sid, now, f"error:{msg.err_code_name}")
            return None
        new_req, payload, fmt = again
        if new_req.round > MAX_RENEGOTIATIONS:
            self._end_session(sid, now, "renegotiation-limit")
            return None
        return self._query(sid, device, new_req, attestation_payload=payload, attestation_format=fmt)

    def _react(
        self, msg: Error, device: Device, req: _Request | None
    ) -> tuple[_Request, bytes | None, str | None] | None:
        """The draft's reaction to each error code: a new QueryRequest or nothing."""
        cfg = self.config
        base = req or self._initial_request(device)
        base = replace(base, round=base.round + 1)
        code = msg.err_code
        neg = dict(device.negotiated)
        if code == ErrorCode.ERR_ATTESTATION_REQUIRED:
            if cfg.tam_attestation_provider is not None:
                try:
                    return base, cfg.tam_attestation_provider(msg.challenge), None
                except TeepCoapError as exc:
                    log.warning("no TAM attestation for the Agent's challenge: %s", exc)
                    return None
            if cfg.tam_attestation is None:
                return None
            return base, cfg.tam_attestation, cfg.tam_attestation_format
        if code == ErrorCode.ERR_UNSUPPORTED_CIPHER_SUITES:
            theirs = {normalize_suite(s) for s in msg.supported_teep_cipher_suites or ()}
            common = tuple(s for s in cfg.suites if s in theirs)
            if not common:
                return None
            neg["suites"] = [[list(op) for op in s] for s in common]
            base = replace(base, suites=common)
        elif code == ErrorCode.ERR_UNSUPPORTED_MSG_VERSION:
            common_v = tuple(v for v in cfg.versions if v in set(msg.versions or (0,)))
            if not common_v:
                return None
            neg["versions"] = list(common_v)
            base = replace(base, versions=common_v)
        elif code == ErrorCode.ERR_UNSUPPORTED_FRESHNESS_MECHANISMS:
            common_f = tuple(
                f for f in cfg.freshness_mechanisms if f in set(msg.supported_freshness_mechanisms or (0,))
            )
            if not common_f:
                return None
            neg["freshness"] = list(common_f)
            base = replace(base, freshness=common_f)
        elif code == ErrorCode.ERR_UNSUPPORTED_SUIT_REPORT:
            theirs_p = {tuple(p) for p in msg.supported_suit_cose_profiles or ()}
            common_p = tuple(p for p in cfg.suit_cose_profiles if p in theirs_p)
            if not common_p:
                return None
            neg["profiles"] = [list(p) for p in common_p]
            base = replace(base, profiles=common_p)
        else:
            return None
        self.store.touch_device(device.id, self._now(), negotiated=neg)
        return base, None, None


# The type of the message this thread is processing, kept only while a crash point is armed (tests).
_received = threading.local()
# The call this thread is handling: its `now`, the events it produced, the verified sender (for
# `_audit_refused`). Per thread, so one engine can serve calls from a thread pool.
_call = threading.local()

_digests: OrderedDict[bytes, str | None] = OrderedDict()
_cache_lock = threading.Lock()  # guards the two LRU caches (keys per engine, digests per process)
_policy_lock = threading.Lock()  # one policy reload at a time


def _manifest_digest(envelope: bytes) -> str | None:
    """Hex digest of an envelope's manifest (what a SUIT report names), None if unreadable; kept per
    envelope (the same catalog envelope goes to every device)."""
    from teep_coap.security.suit.codec import parse_envelope
    from teep_coap.security.suit.errors import SuitError

    with _cache_lock:
        if envelope in _digests:
            _digests.move_to_end(envelope)
            return _digests[envelope]
    try:
        digest: str | None = parse_envelope(envelope).digest.value.hex()
    except SuitError:
        digest = None
    with _cache_lock:
        _digests[envelope] = digest
        if len(_digests) > DIGEST_CACHE_SIZE:
            _digests.popitem(last=False)
    return digest


def _installed_per_reports(row: Outstanding, reports: Sequence[bytes]) -> dict[ComponentId, int]:
    """After ERR_MANIFEST_PROCESSING_FAILED: the planned installs whose SUIT report says success
    (reports arrive inside the device-signed Error, so they are not verified again here)."""
    from teep_coap.security.suit.errors import SuitError
    from teep_coap.security.suit.report import parse_report

    ok: set[str] = set()
    for raw in reports:
        try:
            rep = parse_report(raw)
        except SuitError:
            continue
        if rep.success:
            ok.add(rep.manifest_digest.value.hex())
    return {
        _cid_from_json(item[0]): int(item[1])
        for item in row.data.get("install", [])
        if len(item) > 2 and item[2] is not None and item[2] in ok
    }


def _reported_seq(entry: SystemPropertyClaims) -> int | None:
    """The tc-manifest-sequence-number of a tc-list entry, None when absent (peers that do not send it)
    or not an unsigned integer."""
    seq = entry.parameters.get(int(Label.TC_MANIFEST_SEQUENCE_NUMBER))
    return seq if type(seq) is int and 0 <= seq < 1 << 64 else None


def _attested_digests(claims: dict[str, Any]) -> dict[str, str]:
    """Component key → hex SHA-256 of the installed envelope, from the `manifests` claim of appraised
    evidence (entries `[content-format, {1: "#<component key>", 0: [alg, digest]}]`; others ignored)."""
    out: dict[str, str] = {}
    for item in claims.get("manifests") or ():
        try:
            body = item[1]
            uri, (alg, digest) = body["1"], body["0"]
        except (TypeError, KeyError, IndexError, ValueError):
            continue
        if isinstance(uri, str) and uri.startswith("#") and alg == -16 and isinstance(digest, str):
            out[uri[1:]] = digest
    return out


def _cid_text(cid: ComponentId) -> str:
    return ".".join(p.hex() for p in cid)


def _hex(b: bytes | None) -> str:
    return "-" if b is None else b.hex()


__all__ = ["TamConfig", "TamEngine"]
