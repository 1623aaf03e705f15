"""The TEEP Agent (in a simulated TEE) as a sans-IO engine: message bytes in, signed answer out.

Rules from docs/protocol-facts.md §1.11 and the draft's sections "QueryRequest", "Update", "Error Message" and
"Validating a TEEP Message":

    QueryRequest ── checks in this order, first failure answers with Error:
        signature (unknown signer / tampered → ERR_PERMANENT_ERROR 1, no usable suite → 5),
        decodable (→ 1), versions (→ 4 + versions), cipher suites (→ 5 + suites),
        freshness (→ 3 + mechanisms), SUIT COSE profiles (→ 8 + profiles),
        TAM attestation required but absent (→ 7 + freshness + challenge)
      → QueryResponse: token echoed, selected-version, evidence / attestation result, tc-list,
        requested-tc-list, unneeded-manifest-list, ext-list, suit-reports as asked.
    Update ── unlink every unneeded component, then run the SUIT procedure on each manifest;
      Success if all succeeded, else Error 17 ERR_MANIFEST_PROCESSING_FAILED with the SUIT reports.
    anything else → Error 1.

Also the Broker-facing conceptual API of RFC 9397 (RequestTA, UnrequestTA, RequestPolicyCheck,
ProcessTeepMessage, ProcessError). The engine holds no sockets and never sleeps.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from teep_coap import crashpoints
from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.errors import TeepCoapError
from teep_coap.model.codes import CoseType, DataItem, ErrorCode, FreshnessMechanism, Label
from teep_coap.model.teep import (
    ComponentId,
    Error,
    QueryRequest,
    QueryResponse,
    RequestedTcInfo,
    Success,
    SystemPropertyClaims,
    TeepMessage,
    Update,
)
from teep_coap.protocol import attestation as att
from teep_coap.protocol.agent_broker_api import BrokerApi, cid_key
from teep_coap.protocol.agentstate import AgentState
from teep_coap.protocol.events import (
    AgentEvent,
    ComponentInstalled,
    ComponentRemoved,
    SendReply,
    TamRefused,
    reply_of,
)
from teep_coap.protocol.wire import COSE, NotSigned, Wire
from teep_coap.security.errors import CoseDecodeError, SecurityError, UnknownKid, UnsupportedAlgorithm
from teep_coap.security.jose import JoseDecodeError
from teep_coap.security.keys import SigningKey
from teep_coap.security.suit.errors import SuitError
from teep_coap.security.suit.processor import DeviceIdentity, process_envelope, unlink
from teep_coap.security.suit.report import parse_report, sign_report, system_property_claims
from teep_coap.security.suites import (
    LEGACY_ALGS,
    legacy_ids,
    normalize_alg,
    normalize_suit_profile,
    normalize_suite,
)

log = logging.getLogger("teep_coap.protocol.agent")

Clock = Callable[[], float]
Rng = Callable[[int], bytes]
Fetcher = Callable[[str], bytes]
# Passport model: evidence in, Attestation Result (signed by a Verifier) out.
AttestationProvider = Callable[[bytes, bytes | None], bytes]

ERR_MSG_MAX = 128
ALREADY_INSTALLED = "already installed"


def _clip(text: str, limit: int = ERR_MSG_MAX) -> str:
    """err-msg is 1..128 bytes of UTF-8: cut at a character boundary."""
    raw = text.encode()[:limit]
    return raw.decode("utf-8", "ignore") or "error"


def _hex(data: bytes | None) -> str:
    return "" if data is None else data.hex()


@dataclass
class _Outcome:
    """What processing one message led to (for logs and the CLI)."""

    response: TeepMessage | None
    note: str = ""
    events: tuple[AgentEvent, ...] = ()  # what the message changed on the device (Update only)


class AgentEngine(BrokerApi):
    """ProcessTeepMessage and the Broker-facing API for one Agent state folder."""

    def __init__(
        self,
        state: AgentState,
        *,
        clock: Clock = time.time,
        rng: Rng = os.urandom,
        fetcher: Fetcher | None = None,
        attestation_provider: AttestationProvider | None = None,
        wire: Wire = COSE,
    ) -> None:
        self.state = state
        self.wire = wire  # CBOR/COSE, or JSON/JWS (protocol.wire)
        self.clock = clock
        self.rng = rng
        self.fetcher = fetcher
        self.attestation_provider = attestation_provider
        self.last_response: TeepMessage | None = None  # the model of the last answer (for CLIs/tests)
        self.last_note = ""
        self._now: float | None = None  # the `now` of the call in progress (handle_message)
        self._peer_label: int | None = None  # the TAM's label for our key's algorithm (see _answer_key)

    # ------------------------------------------------------------ capabilities

    @property
    def supported_suites(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        alg = normalize_alg(self.state.key.alg)
        return (((int(CoseType.COSE_SIGN1), alg),),)

    def _answer_key(self) -> SigningKey:
        """Our key, labelled the way the TAM named its algorithm: a TAM that offered or signed with
        ES256 (-7) / EdDSA (-8) gets -7 / -8 instead of ESP256 (-9) / Ed25519 (-19). For TEEP's curves
        the signature is the same computation; only the COSE alg label differs."""
        key = self.state.key
        label = self._peer_label
        if self.wire.container != "COSE":  # JWS names ES256/EdDSA whatever the COSE label
            return key
        if label is None or label == key.alg or LEGACY_ALGS.get(label) != normalize_alg(key.alg):
            return key
        return SigningKey(key.crypto_key, alg=label, kid=key.kid)

    def _accepted_algs(self) -> list[int]:
        alg = normalize_alg(self.state.key.alg)
        return [alg, *legacy_ids(alg)]

    # ------------------------------------------------------------ ProcessTeepMessage

    def receive(self, data: bytes) -> bytes | None:
        """One TEEP message in; the signed answer out (None when the message needs no answer).
        Compatibility call: the time is the engine's clock (`handle_message` takes it explicitly)."""
        return reply_of(self.handle_message(data, self.clock()))

    def handle_message(self, data: bytes, now: float) -> tuple[AgentEvent, ...]:
        """One TEEP message in at time `now` (evidence, passports, freshness use it, not the clock).

        Out: `SendReply(signed answer)` unless the message needs no answer, then what an Update
        changed on the device (`ComponentInstalled` / `ComponentRemoved`, also when a later manifest
        of the same Update failed: those changes are stored) or `TamRefused`."""
        self._peer_label = None
        self._now = now
        try:
            return self._handle(data)
        finally:
            self._now = None

    def _handle(self, data: bytes) -> tuple[AgentEvent, ...]:
        outcome = self._process(data)
        if crashpoints.armed is not None and outcome.response is not None:  # test hook
            crashpoints.reached(crashpoints.message_point("agent.answered", outcome.response))
        self.last_response, self.last_note = outcome.response, outcome.note
        if outcome.note:
            log.info("agent: %s", outcome.note)
        if outcome.response is None:
            return outcome.events
        return (SendReply(self.wire.seal(outcome.response, self._answer_key())), *outcome.events)

    def _time(self) -> float:
        """The `now` of the current `handle_message` call; the clock only for Broker-facing calls."""
        return self._now if self._now is not None else self.clock()

    process_teep_message = receive

    def _error(self, code: ErrorCode, text: str, token: bytes | None = None, **extra: Any) -> _Outcome:
        return _Outcome(Error(err_code=int(code), token=token, err_msg=_clip(text), **extra), text)

    def _process(self, data: bytes) -> _Outcome:

        if not data:
            return self._error(ErrorCode.ERR_PERMANENT_ERROR, "empty message")
        signer_kid: bytes | None = None
        wire = self.wire
        if wire.is_signed(data):
            try:
                opened = wire.open(data, self.state.trust, allowed_algs=self._accepted_algs())
                msg: TeepMessage = opened.message
                signer_kid = opened.key.kid
                self._peer_label = opened.alg
            except UnsupportedAlgorithm as exc:
                return self._error(
                    ErrorCode.ERR_UNSUPPORTED_CIPHER_SUITES,
                    f"no signature with a supported cipher suite: {exc}",
                    supported_teep_cipher_suites=self.supported_suites,
                )
            except UnknownKid as exc:
                if self._only_unsupported_algs(data):
                    return self._error(
                        ErrorCode.ERR_UNSUPPORTED_CIPHER_SUITES,
                        "no signature with a supported cipher suite",
                        supported_teep_cipher_suites=self.supported_suites,
                    )
                return self._error(ErrorCode.ERR_PERMANENT_ERROR, f"signer not trusted: {exc}")
            except (CoseDecodeError, JoseDecodeError) as exc:
                return self._error(ErrorCode.ERR_PERMANENT_ERROR, f"malformed {wire.container}: {exc}")
            except SecurityError as exc:
                return self._error(ErrorCode.ERR_PERMANENT_ERROR, f"signature not verified: {exc}")
            except TeepDecodeError as exc:
                return self._error(ErrorCode.ERR_PERMANENT_ERROR, f"malformed TEEP message: {exc}")
        else:
            if not self.state.config.accept_unsigned:
                return self._error(ErrorCode.ERR_PERMANENT_ERROR, f"message is not {wire.container}-signed")
            try:
                msg = wire.decode_bare(data)
            except TeepDecodeError as exc:
                return self._error(ErrorCode.ERR_PERMANENT_ERROR, f"malformed TEEP message: {exc}")
        if crashpoints.armed is not None:  # test hook (teep_coap.crashpoints)
            crashpoints.reached(crashpoints.message_point("agent.received", msg))
        if isinstance(msg, QueryRequest):
            return self._on_query_request(msg, signer_kid)
        if isinstance(msg, Update):
            return self._on_update(msg)
        return self._error(
            ErrorCode.ERR_PERMANENT_ERROR, f"an Agent does not accept {type(msg).__name__}", token=msg.token
        )

    def _only_unsupported_algs(self, data: bytes) -> bool:
        """True when no signature of the message uses an algorithm we support (→ error 5, not 1)."""
        try:
            hint = self.wire.peek(data)
        except NotSigned:
            return False
        ok = set(self._accepted_algs())
        return all(alg not in ok for _, alg in hint.signers)

    # ------------------------------------------------------------ QueryRequest

    def _on_query_request(self, qr: QueryRequest, signer_kid: bytes | None) -> _Outcome:
        cfg = self.state.config
        token = qr.token
        offered_versions = qr.versions if qr.versions is not None else (0,)
        common_versions = [v for v in offered_versions if v in cfg.versions]
        if not common_versions:
            return self._error(
                ErrorCode.ERR_UNSUPPORTED_MSG_VERSION,
                f"none of versions {list(offered_versions)} is supported",
                token=token,
                versions=cfg.versions,
            )
        ours = set(self.supported_suites)
        chosen = next((s for s in qr.supported_teep_cipher_suites if normalize_suite(s) in ours), None)
        if chosen is None:
            return self._error(
                ErrorCode.ERR_UNSUPPORTED_CIPHER_SUITES,
                "no offered cipher suite is supported",
                token=token,
                supported_teep_cipher_suites=self.supported_suites,
            )
        self._peer_label = int(chosen[0][1])  # answer with the label of the suite the TAM offered
        wants = DataItem(qr.data_item_requested & 0xF)
        offered_fresh = (
            qr.supported_freshness_mechanisms if qr.supported_freshness_mechanisms is not None else (0,)
        )
        common_fresh = [f for f in offered_fresh if f in cfg.freshness_mechanisms]
        if not common_fresh:
            return self._error(
                ErrorCode.ERR_UNSUPPORTED_FRESHNESS_MECHANISMS,
                f"none of freshness mechanisms {list(offered_fresh)} is supported",
                token=token,
                supported_freshness_mechanisms=cfg.freshness_mechanisms,
            )
        if not any(
            normalize_suit_profile(p) in set(cfg.suit_cose_profiles) for p in qr.supported_suit_cose_profiles
        ):
            return self._error(
                ErrorCode.ERR_UNSUPPORTED_SUIT_REPORT,
                "no offered SUIT COSE profile is supported",
                token=token,
                supported_suit_cose_profiles=cfg.suit_cose_profiles,
            )
        if cfg.require_tam_attestation:
            problem = self._tam_attestation_problem(qr, signer_kid)
            if problem is not None:
                return self._error(
                    ErrorCode.ERR_ATTESTATION_REQUIRED,
                    problem,
                    token=token,
                    supported_freshness_mechanisms=cfg.freshness_mechanisms,
                    challenge=self._new_tam_challenge(),
                )
        payload = fmt = None
        if wants & DataItem.ATTESTATION:
            # Freshness (§ "Freshness Mechanisms"): the challenge; else the token as nonce; else, when
            # only timestamps are common, no nonce and the evidence's iat shows freshness.
            if qr.challenge is not None:
                nonce: bytes | None = qr.challenge
            elif qr.token is not None and FreshnessMechanism.NONCE in common_fresh:
                nonce = qr.token
            else:
                nonce = None
            try:
                evidence = self._evidence(nonce)
                if cfg.attestation == att.PASSPORT:
                    payload, fmt = self._passport(evidence, nonce), None  # absent format = result
                else:
                    payload, fmt = evidence, att.EVIDENCE_FORMAT
            except att.AttestationError as exc:
                return self._error(
                    ErrorCode.ERR_TEMPORARY_ERROR, f"attestation unavailable: {exc}", token=token
                )
        self._tidy_broker()
        broker = self.state.broker
        requested = tuple(
            RequestedTcInfo(
                component_id=tuple(bytes.fromhex(p) for p in r["cid"]),
                tc_manifest_sequence_number=r.get("min_seq"),
            )
            for r in broker.requested.values()
        )
        unneeded = tuple(tuple(bytes.fromhex(p) for p in r["cid"]) for r in broker.unrequested.values())
        reports = self._reports_for(token) if wants & DataItem.SUIT_REPORTS else ()
        resp = QueryResponse(
            token=token,
            selected_version=common_versions[0],
            attestation_payload_format=fmt,
            attestation_payload=payload,
            suit_reports=reports or None,
            tc_list=(self._tc_list() or None) if wants & DataItem.TRUSTED_COMPONENTS else None,
            requested_tc_list=requested or None,
            unneeded_manifest_list=unneeded or None,
            ext_list=None,  # no extensions are supported; the CDDL wants [+ ext-info], so it is left out
        )
        return _Outcome(resp, "QueryRequest answered")

    def _reports_for(self, token: bytes | None) -> tuple[bytes, ...]:
        """The SUIT reports of the last Update, for a QueryResponse. With a token in the QueryRequest
        each report must carry it as suit-report-nonce, so they are re-issued with that nonce."""

        out = []
        for raw in self.state.last_reports():
            if token is None:
                out.append(raw)
                continue
            try:
                rep = dataclasses.replace(parse_report(raw), nonce=token, signer_kid=None, verified=False)
            except SuitError as exc:
                log.warning("dropping an unreadable stored SUIT report: %s", exc)
                continue
            signed = self._sign_report(rep)
            if signed is not None:
                out.append(signed)
        return tuple(out)

    def _new_tam_challenge(self) -> bytes:
        """A challenge for the TAM's attestation, remembered (the last 8) to check the result later."""
        challenge = self.rng(16)
        kept = self.state.broker.tam_challenges
        kept.append(challenge.hex())
        del kept[:-8]
        self.state.save_broker()
        return challenge

    def _tam_attestation_problem(self, qr: QueryRequest, signer_kid: bytes | None) -> str | None:
        """Why the TAM's attestation is not acceptable, or None. Without trusted TAM Verifiers
        (`tam-verifiers/` empty) only its presence is checked."""
        if not qr.attestation_payload:
            return "this Agent requires TAM attestation"
        verifiers = self.state.tam_verifiers
        if not len(verifiers):
            return None
        if signer_kid is None:
            return "TAM attestation needs a signed QueryRequest"
        nonce = att.peek_nonce(qr.attestation_payload)
        if nonce is None or nonce.hex() not in self.state.broker.tam_challenges:
            return "TAM attestation does not answer a challenge of this Agent"
        try:
            att.check_result(
                qr.attestation_payload,
                verifiers,
                expected_kid=signer_kid,
                expected_nonce=nonce,
                now=self._time(),
            )
        except att.AttestationError as exc:
            return f"TAM {exc}"
        self.state.broker.tam_challenges.remove(nonce.hex())
        self.state.save_broker()
        return None

    def _tc_list(self) -> tuple[SystemPropertyClaims, ...]:

        out = []
        for entry in self.state.components.list():
            claims = system_property_claims(entry)
            params = {k: v for k, v in claims.items() if k != 0}
            # tc-manifest-sequence-number (label 17) of the manifest that installed it: lets the TAM
            # reconcile its record with what the device really has (docs/engines.md, "Recovery")
            params[int(Label.TC_MANIFEST_SEQUENCE_NUMBER)] = int(entry.sequence_number)
            out.append(SystemPropertyClaims(component_id=tuple(entry.component_id), parameters=params))
        return tuple(out)

    def _evidence(self, nonce: bytes | None) -> bytes:
        cfg = self.state.config
        manifests = [
            [f"#{cid_key(e.component_id)}", [-16, e.manifest_digest]] for e in self.state.components.list()
        ]
        return att.build_evidence(
            self.state.key,
            nonce=nonce,
            ueid=cfg.ueid,
            oemid=cfg.oemid,
            hwmodel=cfg.hwmodel,
            hwversion=cfg.hwversion,
            manifests=manifests,
            now=self._time(),
        )

    def _passport(self, evidence: bytes, nonce: bytes | None) -> bytes:
        if self.attestation_provider is not None:
            return self.attestation_provider(evidence, nonce)
        if self.state.verifier_key is None:
            raise att.AttestationError("passport model but no Verifier is configured")
        return att.local_verifier_result(
            self.state.verifier_key, evidence, self.state.key, nonce=nonce, now=self._time()
        )

    # ------------------------------------------------------------ Update

    def _on_update(self, upd: Update) -> _Outcome:
        if upd.err_code is not None and not upd.manifest_list and not upd.unneeded_manifest_list:
            name = (
                ErrorCode(upd.err_code).name if upd.err_code in ErrorCode._value2member_map_ else upd.err_code
            )
            reason = f"TAM refused: {name} {upd.err_msg or ''}".strip()
            return _Outcome(None, reason, (TamRefused(reason),))
        before = self._components()
        outcome = self._apply_update(upd, before)
        after = self._components()
        kid = self.state.key.kid or b""
        changes: list[AgentEvent] = [
            ComponentInstalled(kid, cid, seq) for cid, seq in after.items() if before.get(cid) != seq
        ]
        changes += [ComponentRemoved(kid, cid) for cid in before if cid not in after]
        return dataclasses.replace(outcome, events=tuple(changes))

    def _components(self) -> dict[ComponentId, int]:
        return {
            tuple(bytes(p) for p in e.component_id): int(e.sequence_number)
            for e in self.state.components.list()
        }

    def _apply_update(self, upd: Update, before: dict[ComponentId, int]) -> _Outcome:
        token = upd.token
        self._begin_unconfirmed(token, {cid_key(cid): seq for cid, seq in before.items()})
        # First unlink everything unneeded (an error stops here: Error 17 with the unlink report) ...
        for cid in upd.unneeded_manifest_list or ():
            ok, report, why = self._unlink(tuple(cid), token)
            if not ok:
                self.state.save_reports([report] if report else [])
                return self._error(
                    ErrorCode.ERR_MANIFEST_PROCESSING_FAILED,
                    f"unlink failed: {why}",
                    token=token,
                    suit_reports=(report,) if report else None,
                )
        # ... then the SUIT Update Procedure on each manifest; Success only if all succeeded.
        reports: list[bytes] = []
        failures: list[str] = []
        repeats = 0
        for i, envelope in enumerate(upd.manifest_list or ()):
            ok, report, why = self._run_manifest(envelope, token)
            if report is not None:
                reports.append(report)
            if not ok:
                failures.append(f"manifest {i}: {why}")
            repeats += why == ALREADY_INSTALLED
        self.state.save_reports(reports)
        self._tidy_broker()
        if failures:
            return self._error(
                ErrorCode.ERR_MANIFEST_PROCESSING_FAILED,
                "; ".join(failures),
                token=token,
                suit_reports=tuple(reports) or None,
            )
        if repeats:  # a repeated Update (its Success was lost): one install, and a Success again
            return _Outcome(
                Success(token=token), f"Update applied ({repeats} manifest(s) {ALREADY_INSTALLED})"
            )
        return _Outcome(Success(token=token), "Update applied")

    # ------------------------------------------------------------ recovery bookkeeping

    def _snapshot(self) -> dict[str, int]:
        return {cid_key(cid): seq for cid, seq in self._components().items()}

    def _begin_unconfirmed(self, token: bytes | None, snapshot: dict[str, int]) -> None:
        """Note (durably, before installing) that an Update is under way; an earlier unconfirmed one
        keeps its `before`, so the next run reports the change since the first interruption. `snapshot`:
        the device's components now (the caller has just listed them)."""
        b = self.state.broker
        before = b.unconfirmed["before"] if b.unconfirmed else snapshot
        b.unconfirmed = {"token": _hex(token), "before": before}
        # Not fsynced: the note only feeds `agent run`'s report (recovery itself rests on the TAM
        # reconciling with the device); os.replace alone survives a killed process, not a power loss.
        self.state.save_broker(durable=False)

    def unconfirmed(self) -> dict[str, Any] | None:
        """The Update an earlier session began and no TAM confirmed (see BrokerState.unconfirmed), with
        `applied`: whether the device changed since it began. Read from the store, not from a flag, so
        a crash right after the install's commit point still counts as applied."""
        u = self.state.broker.unconfirmed
        if not u:
            return None
        return {**u, "applied": dict(u.get("before") or {}) != self._snapshot()}

    def confirm(self) -> list[dict[str, Any]]:
        """A session ended well: the TAM has what it needs. Clears the unconfirmed Update and returns
        what changed on the device since it began ({component_id, from, to}; None = absent)."""
        u = self.state.broker.unconfirmed
        if not u:
            return []
        before, now = dict(u.get("before") or {}), self._snapshot()
        self.state.broker.unconfirmed = None
        self.state.save_broker(durable=False)
        return [
            {"component_id": key.split("."), "from": before.get(key), "to": now.get(key)}
            for key in sorted(set(before) | set(now))
            if before.get(key) != now.get(key)
        ]

    def _sign_report(self, report: Any) -> bytes | None:

        try:
            return bytes(sign_report(report, self.state.report_key, teep_key=self.state.key))
        except SuitError as exc:
            log.warning("cannot sign SUIT report: %s", exc)
            return None

    def _unlink(self, cid: ComponentId, token: bytes | None) -> tuple[bool, bytes | None, str]:
        """Remove a component by its id or its manifest's id, running the stored manifest's uninstall
        section (SUIT layer). Not installed at all counts as done: the goal of an unlink is reached."""

        store = self.state.components
        if store.get(cid) is None and not store.find_by_manifest_id(cid):
            return True, None, ""
        cfg = self.state.config
        result = unlink(
            cid,
            store=store,
            report_nonce=token,
            device=DeviceIdentity(vendor_id=cfg.vendor_id, class_id=cfg.class_id),
        )
        report = self._sign_report(result.report)
        return bool(result.success), report, "" if result.success else str(result.error or "failed")

    def _run_manifest(self, envelope: bytes, token: bytes | None) -> tuple[bool, bytes | None, str]:
        """SUIT Update Procedure for one envelope; returns (ok, signed report, reason)."""

        cfg = self.state.config
        try:
            result = process_envelope(
                envelope,
                trust=self.state.tc_trust,
                store=self.state.components,
                fetcher=self.fetcher,
                device=DeviceIdentity(vendor_id=cfg.vendor_id, class_id=cfg.class_id),
                report_nonce=token,
            )
        except TeepCoapError as exc:  # the SUIT layer reports failures in its result; this is a backstop
            return False, None, str(exc)
        report = self._sign_report(result.report)
        if result.already_installed:
            return True, report, ALREADY_INSTALLED
        return bool(result.success), report, "" if result.success else str(result.error or "failed")
