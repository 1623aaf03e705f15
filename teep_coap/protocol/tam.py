"""The TAM as a sans-IO engine: `handle_connect(now)` / `handle_message(data, now)` return typed events.

Modelled on h11/aioquic: no sockets, no sleeping, no asyncio; time and randomness are injected. Unlike
h11 the per-session state does not live in this object but in its `TamRepository` (a port declared in
`teep_coap.protocol.ports`; `teep_coap.store.tam_db.TamStore` implements it): outstanding requests
keyed by token or challenge, bound to a device once it answered, so any TAM process sharing the
database can take the next message of a session, and a TAM restart loses nothing.

Session states (one row per request in `outstanding`, docs/protocol-facts.md §1.11):

    connect ──> QUERY open   ──QueryResponse──> answered ─┬─ plan empty ─────────────> done (None)
                    │    (token or challenge)              ├─ attestation refused ─────> Update(err 7), done
                    │                                      └─ plan ──> UPDATE open ──Success──> done
                    │                                                      └──Error──> done (recorded)
                    └──Error 3/4/5/8 (renegotiate) / 7 (attestation required)──> new QUERY open

A message that is not the first validly signed answer to an open, unexpired request is refused
(`InvalidMessage`) or, when it repeats an answer already taken, ignored (None). A session whose
request expired unanswered ends as "abandoned" at `handle_timer`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any

from teep_coap import crashpoints
from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.errors import TeepCoapError
from teep_coap.model.codes import (
    ErrorCode,
    FreshnessMechanism,
)
from teep_coap.model.teep import (
    ComponentId,
    Error,
    QueryResponse,
    Success,
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
from teep_coap.protocol.lru import LruCache
from teep_coap.protocol.ports import TamRepository
from teep_coap.protocol.reconcile import installed_per_reports, manifest_digest, plan, record_report
from teep_coap.protocol.records import OPEN, Device, Outstanding, StoreError
from teep_coap.protocol.renegotiation import renegotiate
from teep_coap.protocol.reports import ReportError, check_report_nonces
from teep_coap.protocol.retention import PRUNE_AGAIN, PRUNE_BATCH
from teep_coap.protocol.stateless import StatelessTokens
from teep_coap.protocol.tam_config import (
    ATTESTATION_BIT,
    TRUSTED_COMPONENTS_BIT,
    Clock,
    RequestParams,
    Rng,
    TamConfig,
    cid_from_json,
    cid_json,
    wants_challenge,
)
from teep_coap.protocol.wire import COSE, NotSigned, Opened, Wire
from teep_coap.security.errors import SecurityError
from teep_coap.security.keys import VerifyingKey, load_verifying_key
from teep_coap.security.suites import legacy_ids, normalize_alg

log = logging.getLogger("teep_coap.protocol.tam")

MAX_RENEGOTIATIONS = 3
EXPIRE_EVERY = 60.0  # seconds (of the engine's clock) between two sweeps of expired requests
KEY_CACHE_SIZE = 4096  # parsed device public keys kept (keyed by their stored PEM), and devices by kid
# After a batch in which a request was refused, this many batches run with a savepoint per request
# before one is tried without again: refusals come in runs (a misbehaving device, an attacker with a
# registered key), and each batch tried without savepoints that meets one is run twice.
BATCHES_IN_PARTS_AFTER_REFUSAL = 16


@dataclass(frozen=True)
class TamRequest:
    """One request of a group commit (`TamEngine.handle_batch`): ProcessConnect when `payload` is
    empty, else ProcessTeepMessage."""

    payload: bytes
    now: float
    transport_identity: str | None = None


# What handle_batch returns for each request: its events, or the error a single call would raise.
BatchOutcome = tuple[TamEvent, ...] | TeepCoapError


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
    _keys: LruCache[bytes, VerifyingKey] = field(
        default_factory=lambda: LruCache(KEY_CACHE_SIZE), init=False, repr=False
    )
    # kid -> the device's row as last read. Only its id, kid, alg, key and transport identities are
    # used from it, and those never change: the store has no statement that updates them or deletes
    # a device (what may change, `negotiated`, is read afresh where it is used: `_on_error`).
    _devices: LruCache[bytes, Device] = field(
        default_factory=lambda: LruCache(KEY_CACHE_SIZE), init=False, repr=False
    )
    _next_expire: float = field(default=float("-inf"), init=False, repr=False)
    _next_prune: float = field(default=float("inf"), init=False, repr=False)  # due at once with keep_history
    _stateless: StatelessTokens | None = field(default=None, init=False, repr=False)
    # batches still to run in parts (a savepoint each) after a refusal; 0: try each batch at once
    _in_parts: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        secret = self.config.stateless_secret
        self._stateless = StatelessTokens(secret) if secret is not None else None
        if self.config.keep_history is not None:
            self._next_prune = float("-inf")

    # ---------------------------------------------------------------- entry points

    def handle_connect(self, now: float, transport_identity: str | None = None) -> tuple[TamEvent, ...]:
        """ProcessConnect at time `now`: a new session starts with a signed QueryRequest (`SendReply`)."""
        return self._alone(TamRequest(b"", now, transport_identity), connect=True)

    def handle_message(
        self, data: bytes, now: float, transport_identity: str | None = None
    ) -> tuple[TamEvent, ...]:
        """ProcessTeepMessage at time `now`: the next signed message (`SendReply`, absent when nothing
        more) and what the message committed (`SessionEnded`, `ComponentInstalled`, ...)."""
        return self._alone(TamRequest(data, now, transport_identity), connect=False)

    def handle_batch(self, requests: Sequence[TamRequest]) -> list[BatchOutcome]:
        """Several requests in one transaction, committed once (group commit): for each, in order,
        what `handle_connect` / `handle_message` would return, or the error it would raise.

        A commit costs more than most messages' statements (SQLite writes every page the message
        touched to its WAL; PostgreSQL a round trip and a WAL flush); requests that arrived together
        share one. A refused request is undone alone (its refusal audited) and the others go on; a
        store failure fails them all, nothing committed. The caller sends no answer before this
        returns, so no answer leaves before what it says is committed, as with one transaction per
        request. The `tam.committed.*` crash points are reached after the commit.

        Refusals are rare, so a batch is first run at once, without the SAVEPOINT and RELEASE per
        request that would let one request be undone alone (with them the engine's CPU per session
        was 5-8 % higher, in process, 9 requests per batch). If a request is refused, that whole
        transaction is rolled back and the batch runs again in parts (`_in_parts`): nothing was sent
        yet, so running it twice changes only which tokens and challenges were drawn."""
        if len(requests) == 1:
            try:
                return [self._alone(requests[0], connect=not requests[0].payload)]
            except TeepCoapError as exc:
                return [exc]
        batch: tuple[list[BatchOutcome], list[str]] | None = None
        try:
            if self._in_parts > 0:
                self._in_parts -= 1
            else:
                batch = self._at_once(requests)
                if batch is None:
                    self._in_parts = BATCHES_IN_PARTS_AFTER_REFUSAL
            if batch is None:
                batch = self._in_savepoints(requests)
        except StoreError as exc:  # the transaction is broken: the whole batch fails, nothing committed
            failure = TamFailure(f"TAM store failure: {exc}")
            return [failure for _ in requests]
        outcomes, points = batch
        if crashpoints.armed is not None:
            for point in points:
                crashpoints.reached(point)
        return outcomes

    def _at_once(self, requests: Sequence[TamRequest]) -> tuple[list[BatchOutcome], list[str]] | None:
        """The batch in one transaction without savepoints: each request's events and crash point;
        None if one was refused (all of it rolled back)."""
        outcomes: list[BatchOutcome] = []
        points: list[str] = []
        try:
            with self.store.atomic():
                for request in requests:
                    events, point = self._one(
                        request, not request.payload, self.store.part, audit_refusal=False
                    )
                    outcomes.append(events)
                    points.append(point)
        except StoreError:
            raise
        except TeepCoapError:
            # a connect of this batch may have synced the policy into what was rolled back
            self._policy_synced = False
            return None
        return outcomes, points

    def _in_savepoints(self, requests: Sequence[TamRequest]) -> tuple[list[BatchOutcome], list[str]]:
        """The batch in one transaction, each request in a savepoint of its own: each request's
        events or error, and the crash points of those that went through."""
        outcomes: list[BatchOutcome] = []
        points: list[str] = []
        with self.store.atomic():
            for request in requests:
                try:
                    events, point = self._one(request, not request.payload, self.store.savepoint)
                except StoreError:
                    raise
                except TeepCoapError as exc:
                    outcomes.append(exc)
                    continue
                outcomes.append(events)
                points.append(point)
        return outcomes, points

    def _alone(self, request: TamRequest, *, connect: bool) -> tuple[TamEvent, ...]:
        """One request in a transaction of its own, its `tam.committed.*` point reached after it."""
        try:
            events, point = self._one(request, connect, self.store.atomic)
        except StoreError as exc:
            raise TamFailure(f"TAM store failure: {exc}") from exc
        if crashpoints.armed is not None:
            crashpoints.reached(point)
        return events

    def _one(
        self,
        request: TamRequest,
        connect: bool,
        scope: Callable[[], AbstractContextManager[None]],
        *,
        audit_refusal: bool = True,
    ) -> tuple[tuple[TamEvent, ...], str]:
        """One request's work within `scope` (its transaction, or its savepoint of a batch's): its
        events and the crash point its commit reaches. A refused message is undone with the scope
        and its refusal audited after it (unless the whole batch is about to be undone)."""
        if connect and crashpoints.armed is not None:
            crashpoints.reached("tam.received.connect")
        _call.now, _call.events, _call.sender = request.now, [], None
        _received.kind = "connect" if connect else "?"
        try:
            with scope():
                if connect:
                    answer: bytes | None = self._connect(request.transport_identity)
                else:
                    answer = self._receive(request.payload, request.transport_identity)
        except InvalidMessage as exc:
            if audit_refusal:
                self._audit_refused(exc)
            raise
        events = (SendReply(answer), *_call.events) if answer is not None else tuple(_call.events)
        return events, crashpoints.message_point("tam.committed", _received.kind)

    def next_timer(self) -> float:
        """When `handle_timer` is due next (engine clock): the sweep of expired requests and tokens,
        or with `keep_history` the next batch of old history, whichever comes first."""
        return min(self._next_expire, self._next_prune)

    def handle_timer(self, now: float) -> tuple[TamEvent, ...]:
        """Housekeeping a server calls at `next_timer()`; each part runs when due.

        Every EXPIRE_EVERY seconds: reload a changed policy file, end the sessions of devices that went
        silent (`SessionEnded(..., "abandoned")`), drop requests expired longer than `keep_expired`
        and spent stateless tokens past their expiry. With `keep_history`: one batch of history older
        than it (`_prune`)."""
        _call.now, _call.events, _call.sender = now, [], None
        abandoned: list[tuple[int, float]] = []
        if now >= self._next_expire:
            cutoff = now - self.config.keep_expired
            try:
                with self.store.atomic():
                    self._sync_policy(now)
                    abandoned = self.store.abandon_sessions(cutoff, now)
                    self.store.expire_outstanding(cutoff)
                    if self._stateless is not None:
                        self.store.forget_spent_tokens(now)
            except StoreError as exc:
                raise TamFailure(f"TAM store failure: {exc}") from exc
            self._next_expire = now + EXPIRE_EVERY
        if now >= self._next_prune:
            self._prune(now)
        return tuple(SessionEnded(sid, "abandoned", started) for sid, started in abandoned)

    def _prune(self, now: float) -> None:
        """Delete one batch (PRUNE_BATCH sessions) of history older than `keep_history`, in its own
        short transaction, so a timer call never holds the database for long. A full batch means a
        backlog: the next one is due in PRUNE_AGAIN seconds, between the messages served meanwhile;
        otherwise at the next sweep. Pruning is upkeep, not service: a failure is logged and tried
        again at the next sweep, and the sweep's events are returned all the same."""
        assert self.config.keep_history is not None  # _next_prune stays +inf without it
        try:
            with self.store.atomic():
                done = self.store.prune_history(now - self.config.keep_history, PRUNE_BATCH)
        except StoreError as exc:
            log.warning("pruning old TAM history failed, tried again in %.0f s: %s", EXPIRE_EVERY, exc)
            self._next_prune = now + EXPIRE_EVERY
            return
        self._next_prune = now + (PRUNE_AGAIN if done.more else EXPIRE_EVERY)
        if done.rows:
            log.info(
                "pruned history older than %.0f s: %d sessions, %d audit rows, %d requests",
                self.config.keep_history, done.sessions, done.audit, done.outstanding,
            )  # fmt: skip

    # Compatibility: the byte-in/byte-out calls of the first API (engine tests, scripts, the CLI's
    # `tam process`) read the injected clock and run a due timer first, as the engine used to.

    def connect(self, transport_identity: str | None = None) -> bytes:
        """ProcessConnect on the engine's clock (compatibility; servers call `handle_connect`)."""
        now = self.clock()
        if now >= self.next_timer():
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
        # A device known by its transport identity: its session started in the same statement as the
        # look-up (one round trip over PostgreSQL).
        started = self.store.start_session_for(now, transport_identity) if transport_identity else None
        if started is not None:
            device, session = started
            self._remember(device)  # its QueryResponse and Success are signed with its kid
            return self._query(session, device, self._initial_request(device))
        if self._stateless is not None:
            return self._query(None, None, self._initial_request(None))  # nothing stored
        session = self.store.start_session(now, device_id=None, transport_identity=transport_identity)
        return self._query(session, None, self._initial_request(None))

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

    def _end_session(
        self, session_id: int, now: float, outcome: str, *, started: float | None = None
    ) -> None:
        """End the session (`started`: when it started, known already: nothing to read back, so a
        networked store sends the write with the COMMIT)."""
        if started is None:
            started = self.store.end_session(session_id, now, outcome)
        else:
            self.store.finish_session(session_id, now, outcome)
        _call.events.append(SessionEnded(session_id, outcome, started))

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
        _, key = self._keys.get(pem)
        if key is None:
            key = load_verifying_key(pem)
            self._keys.put(pem, key)
        return key

    def _device_by_kid(self, kid: bytes) -> Device | None:
        """The registered device with this kid: from the cache (a database read less per message),
        else the store's (an unknown kid is looked up each time, never cached)."""
        _, device = self._devices.get(kid)
        if device is None:
            device = self.store.device_by_kid(kid)
            if device is not None:
                self._remember(device)
        return device

    def _remember(self, device: Device) -> None:
        # Without what the engine never reads from a cached device: its attested claims, a parsed JSON
        # tree of a few KiB once it has attested, would make KEY_CACHE_SIZE returning devices ~15 MiB
        # heavier than new ones (`bench sessions` with more sessions than devices showed the step).
        self._devices.put(device.kid, replace(device, attested_claims=None, last_contact=None))

    def _initial_request(self, device: Device | None) -> RequestParams:
        return self.config.initial_request(device.negotiated if device else {})

    def _query(
        self,
        session_id: int | None,
        device: Device | None,
        req: RequestParams,
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
            if wants_challenge(req):
                challenge = self._stateless.challenge_for(token)
        elif wants_challenge(req):
            challenge = self.rng(cfg.challenge_size)
        if session_id is not None and (challenge is None or cfg.token_with_attestation):
            token = self.rng(cfg.token_size)
        msg = req.query_request(token, challenge, attestation_payload, attestation_format)
        keys = cfg.query_keys(device.alg if device is not None else None, req.suites)
        if session_id is None:
            return self.wire.seal(msg, keys[0] if len(keys) == 1 else keys)
        # Audited before the write: a networked store sends the audit rows with it (tam_tx.Tx).
        self.store.audit(
            session_id, now, "send-query-request", f"token={_hex(token)} challenge={_hex(challenge)}"
        )
        self.store.record_outstanding(
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
            device = self._device_by_kid(kid)
            candidates = [device] if device else []
            if not candidates:
                raise InvalidMessage(f"unknown signer: no device registered with kid {kid.hex()}")
        else:
            base = normalize_alg(alg)
            candidates = self.store.devices_with_alg([base, *legacy_ids(base)])
            if not candidates:
                raise InvalidMessage("no kid header and no registered device uses that algorithm")

        keys = {}
        for dev in candidates:
            try:
                keys[dev.id] = self._device_key(dev.public_key)
            except SecurityError as exc:
                raise TamFailure(f"stored key of device {dev.kid.hex()} is unreadable: {exc}") from exc
        try:
            opened = self.wire.open(data, list(keys.values()), hint=hint)
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

    def _take(
        self,
        device: Device,
        *,
        token: bytes | None,
        challenge: bytes | None,
        kinds: tuple[str, ...],
        adopted: Outstanding | None = None,
        then_components: bool = False,
    ) -> Outstanding | None:
        """Claim the request this message answers (`adopted`: claimed already); None = a duplicate.

        One statement when the request is open, unexpired and bound to the device (`claim_open`).
        Otherwise `_find` says why not (unknown, superseded, expired: raised; answered: None), or it
        is a request sent before the device was known, claimed here. The checks a caller makes after
        the claim raise `InvalidMessage`, which rolls the claim back with the whole message."""
        if adopted is not None:
            return adopted
        row = self.store.claim_open(
            token=token,
            challenge=challenge,
            kinds=kinds,
            device_id=device.id,
            now=self._now(),
            then_components=then_components,
        )
        if row is not None:
            return row
        row = self._find(device, token=token, challenge=challenge, kinds=kinds)
        if row is None or not self.store.claim(row.id, device.id):
            return None
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
        adopted = self._adopt_stateless(msg, device, transport_identity)
        if isinstance(msg, QueryResponse):
            return self._on_query_response(msg, device, adopted)
        if isinstance(msg, Success):
            return self._on_success(msg, device)
        if isinstance(msg, Error):
            return self._on_error(msg, device, adopted)
        raise InvalidMessage(f"a TAM does not accept {type(msg).__name__} messages")

    def _adopt_stateless(
        self, msg: TeepMessage, device: Device, transport_identity: str | None
    ) -> Outstanding | None:
        """A verified answer echoing a self-authenticating token: now that the device is known, record
        the token's single use and the request it answers, already claimed by this answer (returned;
        the usual path goes on from there). Spent before (here or by another TAM process) → None: the
        usual path finds that request and treats the message as a duplicate."""
        tokens = self._stateless
        token = msg.token if isinstance(msg, QueryResponse | Error) else None
        if tokens is None or token is None or not tokens.looks_like(token):
            return None
        now = self._now()
        req = self._initial_request(None)
        expires = tokens.check(token, req.to_json(), now=now)
        if expires is None:  # not ours: maybe a stored token of the same shape; the usual path decides
            return None
        if not self.store.spend_token(tokens.spend_key(token), expires):
            return None
        sid = self.store.start_session(now, device_id=device.id, transport_identity=transport_identity)
        challenge = tokens.challenge_for(token) if wants_challenge(req) else None
        row = self.store.add_outstanding(
            session_id=sid,
            device_id=device.id,
            kind="query",
            token=token,
            challenge=challenge,
            now=now,
            lifetime=expires - now,
            cap=self.config.max_outstanding_per_device,
            data=req.to_json(),
            answered=True,
        )
        self.store.audit(
            sid, now, "stateless-query-answered", f"token={token.hex()} challenge={_hex(challenge)}"
        )
        return row

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

    def _on_query_response(
        self, msg: QueryResponse, device: Device, adopted: Outstanding | None
    ) -> bytes | None:
        now = self._now()
        challenge = None
        if msg.token is None:
            challenge = att.peek_nonce(msg.attestation_payload) if msg.attestation_payload else None
            if challenge is None:
                raise InvalidMessage("QueryResponse has neither a token nor evidence with a nonce")
        row = self._take(
            device,
            token=msg.token,
            challenge=challenge,
            kinds=("query",),
            adopted=adopted,
            then_components=True,  # its report is recorded next
        )
        if row is None:
            self._duplicate(device, msg)
            return None
        if row.token is not None and msg.token is None:
            raise InvalidMessage("QueryResponse must echo the token of the QueryRequest")
        self._check_reports(msg.suit_reports, msg.token)
        sid = row.session_id
        if row.device_id != device.id:  # a request made for this device: its session is bound already
            self.store.bind_session(sid, device.id)
        self.store.audit(sid, now, "recv-query-response", f"device={device.kid.hex()}")
        req = RequestParams.from_json(row.data)

        def refuse(code: ErrorCode, text: str) -> bytes:
            self.store.audit(sid, now, "refused", f"{code.name}: {text}")
            self._end_session(sid, now, code.name)
            upd = Update(err_code=int(code), err_msg=text[:128])
            return self._sign_for(device, upd)

        selected = 0 if msg.selected_version is None else msg.selected_version
        if selected not in req.versions:
            return refuse(ErrorCode.ERR_PERMANENT_ERROR, f"selected-version {selected} was not offered")
        claims: dict[str, Any] | None = None
        if req.data_items & ATTESTATION_BIT:
            if not msg.attestation_payload:
                return refuse(ErrorCode.ERR_ATTESTATION_REQUIRED, "attestation-payload missing")
            try:
                claims = att.appraise_payload(
                    msg.attestation_payload,
                    msg.attestation_payload_format,
                    model=req.attestation,
                    verifier_keys=self.config.verifier_keys,
                    device_kid=device.kid,
                    device_key=lambda: self._device_key(device.public_key),
                    token=row.token if FreshnessMechanism.NONCE in req.freshness else None,
                    challenge=row.challenge,
                    now=self._now(),
                    max_age=self.config.evidence_max_age,
                )
            except att.AttestationError as exc:
                return refuse(ErrorCode.ERR_ATTESTATION_REQUIRED, str(exc))
        have = record_report(
            self.store,
            self._now(),
            sid,
            device,
            msg,
            claims,
            bool(req.data_items & TRUSTED_COMPONENTS_BIT),
        )
        plan_install, plan_remove = plan(self.store, device, have)
        if not plan_install and not plan_remove:
            self._end_session(sid, now, "up-to-date")
            return None
        token = self.rng(self.config.token_size)
        self.store.audit(
            sid,
            now,
            "send-update",
            f"install={len(plan_install)} remove={len(plan_remove)} token={token.hex()}",
        )
        upd = Update(
            token=token,
            unneeded_manifest_list=tuple(plan_remove) if plan_remove else None,
            manifest_list=tuple(e for _, _, e in plan_install) if plan_install else None,
        )
        self.store.record_outstanding(
            session_id=sid,
            device_id=device.id,
            kind="update",
            token=token,
            challenge=None,
            now=now,
            lifetime=self.config.token_lifetime,
            cap=self.config.max_outstanding_per_device,
            data={
                "install": [[cid_json(c), s, manifest_digest(e)] for c, s, e in plan_install],
                "remove": [cid_json(c) for c in plan_remove],
            },
        )
        return self._sign_for(device, upd)

    def _sign_for(self, device: Device, msg: TeepMessage) -> bytes:
        key = self.config.key_for_alg(device.alg)
        if key is None:
            raise TamFailure(f"no TAM key for the device's algorithm {device.alg}")
        return self.wire.seal(msg, key)

    def _on_success(self, msg: Success, device: Device) -> bytes | None:
        now = self._now()
        if msg.token is None:
            raise InvalidMessage("Success without a token answers nothing this TAM sent")
        row = self._take(device, token=msg.token, challenge=None, kinds=("update",))
        if row is None:
            self._duplicate(device, msg)
            return None
        self._check_reports(msg.suit_reports, msg.token)
        installed = {cid_from_json(item[0]): int(item[1]) for item in row.data.get("install", [])}
        removed = [cid_from_json(c) for c in row.data.get("remove", [])]
        self.store.touch_device(device.id, now)  # first: on PostgreSQL it locks the device's row
        self._record_changes(device, now, installed=installed, removed=removed)
        self.store.audit(row.session_id, now, "recv-success", msg.msg or "")
        self._end_session(row.session_id, now, "success", started=row.session_started_at)
        return None

    def _on_error(self, msg: Error, device: Device, adopted: Outstanding | None) -> bytes | None:
        now = self._now()
        row: Outstanding | None
        if msg.token is not None:
            row = self._take(
                device, token=msg.token, challenge=None, kinds=("query", "update"), adopted=adopted
            )
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
            partial = installed_per_reports(row, msg.suit_reports)
            if partial:
                self._record_changes(device, now, installed=partial, removed=[])
                self.store.audit(sid, now, "partial-install", f"{len(partial)} manifest(s) succeeded")
        req = RequestParams.from_json(row.data) if row.kind == "query" else None
        device = self.store.device_by_kid(device.kid) or device  # `negotiated` as stored, not as cached
        base = req or self._initial_request(device)
        again = renegotiate(self.config, msg, replace(base, round=base.round + 1), dict(device.negotiated))
        if again is not None and again.negotiated is not None:
            self.store.touch_device(device.id, now, negotiated=again.negotiated)
        if again is None:
            self._end_session(sid, now, f"error:{msg.err_code_name}")
            return None
        new_req, payload, fmt = again.request, again.attestation_payload, again.attestation_format
        if new_req.round > MAX_RENEGOTIATIONS:
            self._end_session(sid, now, "renegotiation-limit")
            return None
        return self._query(sid, device, new_req, attestation_payload=payload, attestation_format=fmt)


# The type of the message this thread is processing, kept only while a crash point is armed (tests).
_received = threading.local()
# The call this thread is handling: its `now`, the events it produced, the verified sender (for
# `_audit_refused`). Per thread, so one engine can serve calls from a thread pool.
_call = threading.local()

_policy_lock = threading.Lock()  # one policy reload at a time


def _hex(b: bytes | None) -> str:
    return "-" if b is None else b.hex()


__all__ = ["Clock", "Rng", "TamConfig", "TamEngine"]
