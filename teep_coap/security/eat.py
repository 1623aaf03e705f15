"""EAT (RFC 9711) for TEEP: the Agent's Evidence and a Verifier's Attestation Result.

Evidence is a CWT claims set signed with COSE_Sign1 (tag 18, no CWT tag 61; the TEEP EAT profile asks
for no CBOR tags inside the claims) carrying the claims the TEEP profile requires
(docs/protocol-facts.md §1.10):
ueid 256, oemid 258, hwmodel 259, hwversion 260, manifests 272, cnf 8 = {3: kid of the Agent's TEEP
key}, plus eat_nonce 10 (the QueryRequest challenge, nonce freshness), eat_profile 265 and iat 6.
The draft's example labels manifests 273 (that is measurements); we emit 272 as RFC 9711 and IANA do.

Two models (RFC 9334): background-check (the TAM appraises Evidence itself: `verify_evidence`) and
passport (a `Verifier` appraises Evidence against reference values and signs an Attestation Result
whose eat_nonce is the TEEP token; the TAM checks it with `verify_attestation_result`).

Attestation Result status is carried in a private-use claim (-70001) with the AR4SI tier names
("affirming", "warning", "contraindicated", "none"); no registered claim exists for it in the TEEP
profile. Local convention, documented in docs/security.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2

from teep_coap.model.codes import EAT_PROFILE_TEEP
from teep_coap.security import cose
from teep_coap.security.errors import (
    AttestationFailed,
    ClaimInvalid,
    ClaimMissing,
    CoseDecodeError,
    EvidenceError,
    MissingNonce,
    StaleNonce,
)
from teep_coap.security.keys import SigningKey, VerifyingKey
from teep_coap.security.truststore import TrustStore

# CWT / EAT claim keys (RFC 8392, RFC 9711, IANA CWT Claims registry).
ISS, EXP, IAT, CNF, EAT_NONCE = 1, 4, 6, 8, 10
UEID, OEMID, HWMODEL, HWVERSION = 256, 258, 259, 260
EAT_PROFILE, MANIFESTS = 265, 272
CNF_KID = 3  # RFC 8747 confirmation method "kid"
# Private-use claim (< -65536, RFC 8392 §9.1) for the Attestation Result status: local convention.
AR_STATUS = -70001

CLAIM_NAMES: Mapping[int, str] = {
    ISS: "iss",
    EXP: "exp",
    IAT: "iat",
    CNF: "cnf",
    EAT_NONCE: "eat_nonce",
    UEID: "ueid",
    OEMID: "oemid",
    HWMODEL: "hwmodel",
    HWVERSION: "hwversion",
    EAT_PROFILE: "eat_profile",
    MANIFESTS: "manifests",
    AR_STATUS: "ar_status",
}
REQUIRED_EVIDENCE_CLAIMS = (UEID, OEMID, HWMODEL, HWVERSION, MANIFESTS, CNF)

CF_APPLICATION_CBOR = 60  # the content format the draft's example puts before a SUIT_Reference
STATUS_AFFIRMING = "affirming"
STATUSES = (STATUS_AFFIRMING, "warning", "contraindicated", "none")
CWT_TAG = 61
CLOCK_SKEW = 60.0  # seconds an iat may lie in the future before it is refused
NONCE_SIZE = (8, 512)  # TEEP challenge size; RFC 9711 allows 8..64 for eat_nonce, TEEP's challenge is larger


# ------------------------------------------------------------------------------------------- claims


def _name(key: int) -> str:
    return f"{CLAIM_NAMES.get(key, 'claim')} ({key})"


def _hwversion(value: str | Sequence[Any]) -> list[Any]:
    """hwversion = [version: tstr, ?scheme: int]; a dotted number gets scheme 1 (multipartnumeric)."""
    if isinstance(value, str):
        return [value, 1] if re.fullmatch(r"\d+(\.\d+)*", value) else [value]
    items = list(value)
    if not items or not isinstance(items[0], str) or len(items) > 2:
        raise ClaimInvalid(f"hwversion must be [version text, ?scheme int], got {value!r}")
    return items


def _manifest_entry(entry: Any) -> list[Any]:
    """One manifests element: `[content-format, body]` as given, or a SUIT_Reference built from
    `(uri, [alg, digest])` / a `{1: uri, 0: digest}` map (as in the draft's example)."""
    if isinstance(entry, Mapping):
        return [CF_APPLICATION_CBOR, dict(entry)]
    if isinstance(entry, list | tuple) and len(entry) == 2:
        first, second = entry
        if isinstance(first, int) and not isinstance(first, bool):
            return [first, second]
        if isinstance(first, str) and isinstance(second, list | tuple):
            return [CF_APPLICATION_CBOR, {1: first, 0: list(second)}]
    raise ClaimInvalid(f"manifests entry must be [content-format, body] or (uri, digest), got {entry!r}")


def _check_nonce_size(nonce: bytes) -> None:
    if not NONCE_SIZE[0] <= len(nonce) <= NONCE_SIZE[1]:
        raise ClaimInvalid(f"eat_nonce must be {NONCE_SIZE[0]}..{NONCE_SIZE[1]} bytes, got {len(nonce)}")


def build_evidence(
    key: SigningKey,
    *,
    nonce: bytes | None,
    ueid: bytes,
    oemid: bytes | int,
    hwmodel: bytes,
    hwversion: str | Sequence[Any],
    manifests: Iterable[Any],
    teep_kid: bytes | None = None,
    now: float | None = None,
    lifetime: float | None = None,
    eat_profile: str = EAT_PROFILE_TEEP,
) -> bytes:
    """Evidence signed by `key`; `teep_kid` (default: `key.kid`) goes in cnf. `now` sets iat and
    `lifetime` an exp (timestamp freshness, used when there is no nonce)."""
    if nonce is not None:
        _check_nonce_size(nonce)
    claims: dict[int, Any] = {}
    if now is not None:
        claims[IAT] = int(now)
        if lifetime is not None:
            claims[EXP] = math.ceil(now + lifetime)
    claims[CNF] = {CNF_KID: key.kid if teep_kid is None else teep_kid}
    if nonce is not None:
        claims[EAT_NONCE] = nonce
    claims[UEID] = ueid
    claims[OEMID] = oemid
    claims[HWMODEL] = hwmodel
    claims[HWVERSION] = _hwversion(hwversion)
    claims[EAT_PROFILE] = eat_profile
    claims[MANIFESTS] = [_manifest_entry(m) for m in manifests]
    return cose.sign1(cbor2.dumps(claims), key)


@dataclass(frozen=True)
class EvidenceClaims:
    """Verified Evidence."""

    ueid: bytes
    oemid: bytes | int
    hwmodel: bytes
    hwversion: tuple[Any, ...]
    manifests: tuple[Any, ...]
    cnf_kid: bytes
    nonce: bytes | None
    eat_profile: str | None
    iat: int | None
    exp: int | None
    signer_kid: bytes
    alg: int
    claims: Mapping[int, Any] = field(repr=False)


@dataclass(frozen=True)
class AttestationResult:
    """A verified Attestation Result (passport model)."""

    status: str
    subject_kid: bytes
    nonce: bytes | None
    iat: int | None
    exp: int | None
    issuer: str | None
    verifier_kid: bytes
    ueid: bytes | None
    claims: Mapping[int, Any] = field(repr=False)


def _unwrap_cwt(data: bytes) -> bytes:
    """Drop an optional CWT tag (61) around the COSE object; peers may add it (RFC 8392 §6)."""
    if data[:2] == b"\xd8\x3d":
        return data[2:]
    return data


def _open(data: bytes, trust: cose.TrustArg) -> tuple[cose.Verified, dict[int, Any]]:
    if not isinstance(data, bytes | bytearray):
        raise CoseDecodeError("EAT must be bytes")
    verified = cose.verify(_unwrap_cwt(bytes(data)), trust, allow_untagged=True)
    try:
        claims = cbor2.loads(verified.payload)
    except Exception as exc:  # the signature was valid, the content is not a claims set
        raise ClaimInvalid(f"EAT payload is not CBOR: {exc}") from None
    if not isinstance(claims, dict):
        raise ClaimInvalid("EAT payload must be a CBOR map of claims")
    for key in claims:
        if not isinstance(key, int) or isinstance(key, bool):
            raise ClaimInvalid(
                f"claim key {key!r} is not an integer (the TEEP profile is CBOR with int keys)"
            )
    return verified, claims


def _typed(claims: Mapping[int, Any], key: int, types: type | tuple[type, ...], what: str) -> Any:
    value = claims[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise ClaimInvalid(f"{_name(key)} must be {what}, got {type(value).__name__}")
    return value


def _optional_int(claims: Mapping[int, Any], key: int) -> int | None:
    if key not in claims:
        return None
    value = _typed(claims, key, int, "an integer (seconds since the epoch)")
    return int(value)


def _nonce_of(claims: Mapping[int, Any]) -> bytes | None:
    if EAT_NONCE not in claims:
        return None
    value = claims[EAT_NONCE]
    if isinstance(value, list) and len(value) == 1:  # RFC 9711 allows an array; TEEP sends one bstr
        value = value[0]
    if not isinstance(value, bytes):
        raise ClaimInvalid("eat_nonce must be a byte string")
    return value


def _cnf_kid(claims: Mapping[int, Any]) -> bytes:
    cnf = claims[CNF]
    if not isinstance(cnf, dict) or not isinstance(cnf.get(CNF_KID), bytes):
        raise ClaimInvalid("cnf (8) must be a map {3: kid bstr}")
    kid: bytes = cnf[CNF_KID]
    return kid


def _check_freshness(
    claims: Mapping[int, Any],
    *,
    expected_nonce: bytes | None,
    now: float | None,
    max_age: float | None,
) -> tuple[bytes | None, int | None, int | None]:
    nonce = _nonce_of(claims)
    iat = _optional_int(claims, IAT)
    exp = _optional_int(claims, EXP)
    if expected_nonce is not None:
        if nonce is None:
            raise MissingNonce("the nonce freshness mechanism is in use but the EAT has no eat_nonce")
        if nonce != expected_nonce:
            raise StaleNonce("eat_nonce does not match the challenge/token this side sent")
    if now is not None:
        if exp is not None and now > exp:
            raise StaleNonce(f"EAT expired {now - exp:.0f} s ago")
        if iat is not None:
            if iat > now + CLOCK_SKEW:
                raise ClaimInvalid(f"iat lies {iat - now:.0f} s in the future")
            if max_age is not None and now - iat > max_age:
                raise StaleNonce(f"EAT is {now - iat:.0f} s old (max {max_age:.0f} s)")
    if expected_nonce is None:
        # Timestamp freshness: without a nonce only a recent iat (or a live exp) can show freshness.
        if iat is None and exp is None:
            raise MissingNonce("EAT has neither eat_nonce nor iat/exp: freshness cannot be shown")
        if now is None or (max_age is None and exp is None):
            raise MissingNonce("no expected nonce and no clock/max_age to check timestamp freshness")
    return nonce, iat, exp


def verify_evidence(
    data: bytes,
    trust: cose.TrustArg,
    *,
    expected_nonce: bytes | None,
    now: float | None = None,
    max_age: float | None = None,
    expected_kid: bytes | None = None,
    eat_profile: str | None = EAT_PROFILE_TEEP,
) -> EvidenceClaims:
    """Verify Evidence: signature by a trusted attester key, required claims present and well-typed,
    cnf kid equal to `expected_kid` (default: the kid of the key that signed it), freshness by nonce
    (`expected_nonce` = the challenge sent) or by iat/exp within `max_age`.

    Raises CoseError subclasses for the signature, ClaimMissing / ClaimInvalid for the claims,
    MissingNonce / StaleNonce for freshness."""
    verified, claims = _open(data, trust)
    for key in REQUIRED_EVIDENCE_CLAIMS:
        if key not in claims:
            raise ClaimMissing(f"required claim {_name(key)} is missing")
    ueid = _typed(claims, UEID, bytes, "a byte string")
    if not 7 <= len(ueid) <= 33:
        raise ClaimInvalid(f"ueid must be 7..33 bytes, got {len(ueid)}")
    oemid = _typed(claims, OEMID, (bytes, int), "a byte string or an integer (PEN)")
    hwmodel = _typed(claims, HWMODEL, bytes, "a byte string")
    hwversion = _typed(claims, HWVERSION, list, "an array [version, ?scheme]")
    if (
        not hwversion
        or not isinstance(hwversion[0], str)
        or len(hwversion) > 2
        or (len(hwversion) == 2 and (not isinstance(hwversion[1], int) or isinstance(hwversion[1], bool)))
    ):
        raise ClaimInvalid("hwversion must be [version text, ?scheme int]")
    manifests = _typed(claims, MANIFESTS, list, "an array")
    for entry in manifests:
        if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], int):
            raise ClaimInvalid(f"manifests entry must be [content-format, body], got {entry!r}")
    cnf_kid = _cnf_kid(claims)
    want = verified.key.kid if expected_kid is None else expected_kid
    if cnf_kid != want:
        raise ClaimInvalid(f"cnf kid {cnf_kid.hex()} is not the expected TEEP key {want.hex()}")
    profile = claims.get(EAT_PROFILE)
    if profile is not None and not isinstance(profile, str | bytes):
        raise ClaimInvalid("eat_profile must be a URI text or an OID byte string")
    if eat_profile is not None and profile is not None and profile != eat_profile:
        raise ClaimInvalid(f"eat_profile {profile!r} is not {eat_profile!r}")
    nonce, iat, exp = _check_freshness(claims, expected_nonce=expected_nonce, now=now, max_age=max_age)
    return EvidenceClaims(
        ueid=ueid,
        oemid=oemid,
        hwmodel=hwmodel,
        hwversion=tuple(hwversion),
        manifests=tuple(manifests),
        cnf_kid=cnf_kid,
        nonce=nonce,
        eat_profile=profile if isinstance(profile, str) else None,
        iat=iat,
        exp=exp,
        signer_kid=verified.key.kid,
        alg=verified.alg,
        claims=claims,
    )


# ------------------------------------------------------------------------------------ passport model


def build_attestation_result(
    verifier_key: SigningKey,
    *,
    subject_kid: bytes,
    nonce: bytes | None,
    status: str = STATUS_AFFIRMING,
    now: float | None = None,
    lifetime: float | None = None,
    issuer: str | None = None,
    ueid: bytes | None = None,
) -> bytes:
    """An Attestation Result signed by a Verifier: cnf names the Agent's TEEP key (`subject_kid`),
    eat_nonce is the TEEP token (passport model), status is one of `STATUSES`."""
    if status not in STATUSES:
        raise ClaimInvalid(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    if nonce is not None:
        _check_nonce_size(nonce)
    claims: dict[int, Any] = {}
    if issuer is not None:
        claims[ISS] = issuer
    if now is not None:
        claims[IAT] = int(now)
        if lifetime is not None:
            claims[EXP] = math.ceil(now + lifetime)
    claims[CNF] = {CNF_KID: subject_kid}
    if nonce is not None:
        claims[EAT_NONCE] = nonce
    if ueid is not None:
        claims[UEID] = ueid
    claims[EAT_PROFILE] = EAT_PROFILE_TEEP
    claims[AR_STATUS] = status
    return cose.sign1(cbor2.dumps(claims), verifier_key)


def verify_attestation_result(
    data: bytes,
    verifier_trust: cose.TrustArg,
    *,
    expected_kid: bytes,
    expected_nonce: bytes | None,
    now: float | None = None,
    max_age: float | None = None,
) -> AttestationResult:
    """Check an Attestation Result: signed by a trusted Verifier, cnf kid = the key that signed the
    peer's TEEP message, fresh (nonce = the token sent, or iat/exp), status "affirming".

    Raises CoseError subclasses, ClaimMissing/ClaimInvalid, MissingNonce/StaleNonce, AttestationFailed."""
    verified, claims = _open(data, verifier_trust)
    for key in (CNF, AR_STATUS):
        if key not in claims:
            raise ClaimMissing(f"attestation result lacks {_name(key)}")
    subject = _cnf_kid(claims)
    status = claims[AR_STATUS]
    if not isinstance(status, str):
        raise ClaimInvalid("attestation result status must be text")
    nonce, iat, exp = _check_freshness(claims, expected_nonce=expected_nonce, now=now, max_age=max_age)
    if subject != expected_kid:
        raise AttestationFailed(
            f"attestation result is about key {subject.hex()}, not the signer {expected_kid.hex()}"
        )
    if status != STATUS_AFFIRMING:
        raise AttestationFailed(f"Verifier's appraisal: {status}")
    issuer = claims.get(ISS)
    ueid = claims.get(UEID)
    return AttestationResult(
        status=status,
        subject_kid=subject,
        nonce=nonce,
        iat=iat,
        exp=exp,
        issuer=issuer if isinstance(issuer, str) else None,
        verifier_kid=verified.key.kid,
        ueid=ueid if isinstance(ueid, bytes) else None,
        claims=claims,
    )


@dataclass(frozen=True)
class ReferenceValues:
    """What a Verifier accepts; `None` means "any". Manifests are compared by their body
    (e.g. a SUIT_Reference map): every manifest the Evidence lists must be known."""

    oemids: Collection[bytes | int] | None = None
    hwmodels: Collection[bytes] | None = None
    hwversions: Collection[str] | None = None
    ueids: Collection[bytes] | None = None
    manifest_digests: Collection[bytes] | None = None


def _manifest_digest(entry: list[Any]) -> bytes | None:
    body = entry[1]
    if isinstance(body, dict):
        digest = body.get(0)
        if isinstance(digest, list) and len(digest) == 2 and isinstance(digest[1], bytes):
            return digest[1]
    return None


class Verifier:
    """A (local, simulated) RATS Verifier: appraises Agent Evidence against reference values and
    signs Attestation Results for the passport model."""

    def __init__(
        self,
        key: SigningKey,
        attesters: cose.TrustArg,
        reference: ReferenceValues | None = None,
        *,
        max_age: float | None = 300.0,
        result_lifetime: float | None = 3600.0,
        issuer: str | None = None,
    ) -> None:
        self.key = key
        self.attesters = TrustStore.coerce(attesters)
        self.reference = reference or ReferenceValues()
        self.max_age = max_age
        self.result_lifetime = result_lifetime
        self.issuer = issuer

    @property
    def public(self) -> VerifyingKey:
        return self.key.public

    def appraise(self, evidence: bytes, *, nonce: bytes | None, now: float | None) -> EvidenceClaims:
        """Verify the Evidence and compare it with the reference values (ClaimInvalid on mismatch)."""
        claims = verify_evidence(
            evidence, self.attesters, expected_nonce=nonce, now=now, max_age=self.max_age
        )
        ref = self.reference
        checks: list[tuple[str, Any, Collection[Any] | None]] = [
            ("oemid", claims.oemid, ref.oemids),
            ("hwmodel", claims.hwmodel, ref.hwmodels),
            ("hwversion", claims.hwversion[0], ref.hwversions),
            ("ueid", claims.ueid, ref.ueids),
        ]
        for name, value, allowed in checks:
            if allowed is not None and value not in allowed:
                shown = value.hex() if isinstance(value, bytes) else value
                raise ClaimInvalid(f"{name} {shown} is not among the reference values")
        if ref.manifest_digests is not None:
            for entry in claims.manifests:
                digest = _manifest_digest(list(entry))
                if digest is None or digest not in ref.manifest_digests:
                    raise ClaimInvalid(f"manifest {entry!r} is not among the reference values")
        return claims

    def issue(self, evidence: bytes, *, nonce: bytes | None, now: float | None) -> bytes:
        """Attestation Result for this Evidence: "affirming" when appraisal passes, "contraindicated"
        when a claim does not match the reference values. Evidence that cannot be verified at all
        (bad signature, stale nonce) gets no result: the error is raised."""
        try:
            claims = self.appraise(evidence, nonce=nonce, now=now)
            status, subject, ueid = STATUS_AFFIRMING, claims.cnf_kid, claims.ueid
        except ClaimInvalid:
            _, raw = _open(evidence, self.attesters)
            status, subject, ueid = "contraindicated", _cnf_kid(raw), None
        return build_attestation_result(
            self.key,
            subject_kid=subject,
            nonce=nonce,
            status=status,
            now=now,
            lifetime=self.result_lifetime,
            issuer=self.issuer,
            ueid=ueid,
        )


__all__ = [
    "AttestationResult",
    "EvidenceClaims",
    "EvidenceError",
    "ReferenceValues",
    "Verifier",
    "build_attestation_result",
    "build_evidence",
    "verify_attestation_result",
    "verify_evidence",
]
