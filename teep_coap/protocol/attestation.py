"""The engines' view of attestation: build and check EAT evidence and attestation results.

Thin glue over `teep_coap.security.eat` so the engines speak in TEEP terms (challenge, token, device
kid) and get one error type back. Background-check model: the Agent sends Evidence whose eat_nonce is
the QueryRequest challenge and the TAM appraises it. Passport model: the Agent gets an Attestation
Result from a Verifier with the token as nonce and the TAM checks the Verifier's signature and that
the result names the key that signed the QueryResponse (docs/protocol-facts.md §1.8, §1.10).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields, is_dataclass
from typing import Any

import cbor2

from teep_coap.errors import TeepCoapError
from teep_coap.model.codes import DEFAULT_ATTESTATION_PAYLOAD_FORMAT
from teep_coap.security import eat
from teep_coap.security.keys import SigningKey, VerifyingKey

BACKGROUND_CHECK = "background-check"
PASSPORT = "passport"
NONE = "none"
MODELS = (NONE, BACKGROUND_CHECK, PASSPORT)

# attestation-payload-format of Evidence (anything but the default string means Evidence, §1.10).
EVIDENCE_FORMAT = "application/eat+cwt"
RESULT_FORMAT = DEFAULT_ATTESTATION_PAYLOAD_FORMAT

_CWT_TAG = 61
_EAT_NONCE = 10


class AttestationError(TeepCoapError):
    """Evidence or an attestation result was refused; the message says why."""


def peek_nonce(evidence: bytes) -> bytes | None:
    """The eat_nonce of a COSE_Sign1-signed EAT, unverified: the TAM needs it to find which
    QueryRequest (challenge) a token-less QueryResponse answers, before it can verify anything."""
    try:
        obj = cbor2.loads(evidence)
        if isinstance(obj, cbor2.CBORTag) and obj.tag == _CWT_TAG:
            obj = obj.value
        if isinstance(obj, cbor2.CBORTag) and obj.tag == 18:
            obj = obj.value
        if not isinstance(obj, list) or len(obj) != 4 or not isinstance(obj[2], bytes):
            return None
        claims = cbor2.loads(obj[2])
        nonce = claims.get(_EAT_NONCE) if isinstance(claims, dict) else None
        if isinstance(nonce, list) and nonce:
            nonce = nonce[0]
        return bytes(nonce) if isinstance(nonce, bytes) else None
    except Exception:  # garbage in an attacker-controlled field simply has no nonce
        return None


_PLAIN = frozenset((str, int, float, bool, type(None)))


def _jsonable(value: Any) -> Any:
    # by exact type first (what decoded CBOR holds), then the general checks: runs ~40 times per
    # QueryResponse, and the isinstance/is_dataclass chain was most of its cost
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is bytes:
        return value.hex()
    if kind is dict:
        return {str(k): _jsonable(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_jsonable(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        # field by field: asdict() deep-copies every value first (a third of this call's cost)
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def build_evidence(
    key: SigningKey,
    *,
    nonce: bytes | None,
    ueid: bytes,
    oemid: bytes,
    hwmodel: bytes,
    hwversion: str,
    manifests: Sequence[Any],
    now: float,
) -> bytes:
    """Evidence of the simulated TEE, signed with the Agent's key (cnf = its TEEP kid)."""

    try:
        return bytes(
            eat.build_evidence(
                key,
                nonce=nonce,
                ueid=ueid,
                oemid=oemid,
                hwmodel=hwmodel,
                hwversion=hwversion,
                manifests=list(manifests),
                teep_kid=key.kid,
                now=now,
            )
        )
    except TeepCoapError as exc:
        raise AttestationError(f"cannot build evidence: {exc}") from exc


def check_evidence(
    evidence: bytes, device_key: VerifyingKey, *, expected_nonce: bytes | None, now: float, max_age: float
) -> dict[str, Any]:
    """Appraise Evidence from a device (the TAM acting as Verifier); returns the claims as JSON-able
    values for the device record."""

    try:
        claims = eat.verify_evidence(
            evidence, device_key, expected_nonce=expected_nonce, now=now, max_age=max_age
        )
    except TeepCoapError as exc:
        raise AttestationError(f"evidence refused: {exc}") from exc
    out = _jsonable(claims)
    return out if isinstance(out, dict) else {"claims": out}


def check_result(
    result: bytes,
    verifier_trust: Any,
    *,
    expected_kid: bytes,
    expected_nonce: bytes | None,
    now: float,
    max_age: float | None = None,
) -> dict[str, Any]:
    """Check an Attestation Result (passport model; without a nonce, freshness by iat/exp)."""

    try:
        claims = eat.verify_attestation_result(
            result,
            verifier_trust,
            expected_kid=expected_kid,
            expected_nonce=expected_nonce,
            now=now,
            max_age=max_age,
        )
    except TeepCoapError as exc:
        raise AttestationError(f"attestation result refused: {exc}") from exc
    out = _jsonable(claims)
    return out if isinstance(out, dict) else {"claims": out}


def local_verifier_result(
    verifier_key: SigningKey, evidence: bytes, agent_key: SigningKey, *, nonce: bytes | None, now: float
) -> bytes:
    """Passport model with a Verifier simulated next to the Agent (its key in the Agent folder):
    the Verifier appraises the Evidence and signs an Attestation Result naming the Agent's key."""

    try:
        return bytes(eat.Verifier(verifier_key, [agent_key.public]).issue(evidence, nonce=nonce, now=now))
    except TeepCoapError as exc:
        raise AttestationError(f"the Verifier refused the evidence: {exc}") from exc


def appraise_payload(
    payload: bytes,
    payload_format: str | None,
    *,
    model: str,
    verifier_keys: Sequence[VerifyingKey],
    device_kid: bytes,
    device_key: Callable[[], VerifyingKey],
    token: bytes | None,
    challenge: bytes | None,
    now: float,
    max_age: float,
) -> dict[str, Any]:
    """The TAM's appraisal of a QueryResponse's attestation payload: an Attestation Result (from a
    trusted Verifier, naming the device's key) or, unless the TAM expects the passport model,
    Evidence signed by the device (`device_key` is only called then). `token` is the freshness
    nonce when the TAM asked for nonce freshness; Evidence answers the challenge when there is one."""
    if (payload_format or RESULT_FORMAT) == RESULT_FORMAT:
        if not verifier_keys:
            raise AttestationError("attestation result received but no Verifier is trusted")
        return check_result(
            payload,
            list(verifier_keys),
            expected_kid=device_kid,
            expected_nonce=token,
            now=now,
            max_age=max_age,
        )
    if model == PASSPORT:
        raise AttestationError("evidence received but this TAM expects an attestation result")
    nonce = challenge if challenge is not None else token
    return check_evidence(payload, device_key(), expected_nonce=nonce, now=now, max_age=max_age)
