"""JWS for the TEEP JSON twin (application/teep+json), with jwcrypto: ES256 (P-256) and EdDSA (Ed25519).

The JSON era of TEEP (draft-ietf-teep-protocol-00, docs/protocol-facts.md §2) said "JOSE for JSON" but never
specified the wrapper. Our local convention mirrors the COSE_Sign1 the CBOR binding uses:

* **Flattened JWS JSON Serialization** (RFC 7515 §7.2.2) for one signer, the general serialization
  for several (the twin of COSE_Sign for a first QueryRequest); never compact: the body of an
  application/teep+json message stays a JSON object, and the flattened form has a place for an
  unprotected header, like COSE. It costs ~40 bytes of member names more than compact.
* protected header `{"alg": "ES256"}` or `{"alg": "EdDSA"}` (the COSE protected `{1: alg}`);
  unprotected `"header": {"kid": …}` where kid = base64url of the RFC 9679 COSE Key Thumbprint (the
  same 32 bytes the CBOR binding puts in COSE header 4), so one trust store serves both bindings.
* JSON is written without insignificant whitespace.

On receipt the `alg` is taken from the protected header only (an unprotected alg is refused), `crit`
is refused (we understand no extension), and the signature is checked by jwcrypto with the trusted
key found by kid. Every failure is a typed `SecurityError`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from teep_coap.encoding.untrusted import loads_untrusted_json
from teep_coap.security.errors import SecurityError, SignatureInvalid, UnknownKid, UnsupportedAlgorithm
from teep_coap.security.keys import ALG_ED25519, ALG_ESP256, SigningKey, VerifyingKey
from teep_coap.security.truststore import TrustStore

# JOSE alg we emit per key type, and the JOSE algs we accept mapped to the COSE alg the key checks.
JOSE_ALG_P256 = "ES256"
JOSE_ALG_ED25519 = "EdDSA"
ACCEPTED_JOSE_ALGS: dict[str, int] = {"ES256": ALG_ESP256, "EdDSA": ALG_ED25519, "Ed25519": ALG_ED25519}


class JoseError(SecurityError):
    """A JWS was refused (root of JOSE failures that are not kid/alg/signature problems)."""


class JoseDecodeError(JoseError):
    """Not a well-formed flattened JWS: not JSON, missing members, bad base64url, bad header."""


@dataclass(frozen=True)
class JwsVerified:
    """A verified JWS: its payload and who signed it."""

    payload: bytes
    alg: str
    kid: bytes | None
    key: VerifyingKey


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64u_decode(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise JoseDecodeError(f"JWS member {what!r} must be a base64url string")
    if "=" in text or "+" in text or "/" in text:
        raise JoseDecodeError(f"JWS member {what!r} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as exc:
        raise JoseDecodeError(f"JWS member {what!r} is not base64url: {exc}") from None


def _jwcrypto_key(key: SigningKey | VerifyingKey) -> jwk.JWK:
    return jwk.JWK.from_pyca(key.crypto_key)


def jose_alg(key: SigningKey | VerifyingKey) -> str:
    """The JOSE alg name for a key: ES256 for P-256, EdDSA for Ed25519."""
    return JOSE_ALG_P256 if key.key_type == "P-256" else JOSE_ALG_ED25519


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _signature_entry(signer: jws.JWS, key: SigningKey, include_kid: bool) -> dict[str, Any]:
    alg = jose_alg(key)
    header: dict[str, str] | None = {"kid": _b64u(key.kid)} if include_kid else None
    try:
        signer.add_signature(
            _jwcrypto_key(key),
            alg=alg,
            protected=_dumps({"alg": alg}).decode(),
            header=json.dumps(header) if header else None,
        )
    except JWException as exc:
        raise JoseError(f"cannot sign JWS: {exc}") from None
    entry: dict[str, Any] = {"protected": _b64u(_dumps({"alg": alg}))}
    if header:
        entry["header"] = header
    return entry


def sign_json(payload: bytes, key: SigningKey | Sequence[SigningKey], *, include_kid: bool = True) -> bytes:
    """JWS of `payload`: flattened JSON serialization for one key, general serialization (one entry in
    `signatures` per key) for several, the JOSE twin of COSE_Sign1 / COSE_Sign (see the module docstring).
    """
    keys = [key] if isinstance(key, SigningKey) else list(key)
    if not keys:
        raise JoseError("a JWS needs at least one signing key")
    signer = jws.JWS(payload)
    entries = [_signature_entry(signer, k, include_kid) for k in keys]
    try:
        serialized = json.loads(signer.serialize(compact=False))
    except JWException as exc:
        raise JoseError(f"cannot serialize JWS: {exc}") from None
    signatures = serialized.get("signatures", [serialized])
    for entry, produced in zip(entries, signatures, strict=True):
        if produced["protected"] != entry["protected"]:  # jwcrypto keeps our exact header bytes
            raise JoseError("jwcrypto changed the protected header")
        entry["signature"] = produced["signature"]
    encoded_payload = serialized["payload"]
    if len(entries) == 1:
        only = entries[0]
        out: dict[str, Any] = {"protected": only["protected"]}
        if "header" in only:
            out["header"] = only["header"]
        out["payload"] = encoded_payload
        out["signature"] = only["signature"]
        return _dumps(out)
    return _dumps({"payload": encoded_payload, "signatures": entries})


def _as_store(trust: TrustStore | VerifyingKey | Iterable[VerifyingKey]) -> TrustStore:
    if isinstance(trust, TrustStore):
        return trust
    if isinstance(trust, VerifyingKey):
        return TrustStore((trust,))
    return TrustStore(trust)


@dataclass(frozen=True)
class JwsSignature:
    """One signature of a JWS with its headers (checked for shape, not yet verified)."""

    protected: dict[str, Any]
    header: dict[str, Any]
    protected_b64: str
    signature: bytes

    @property
    def alg(self) -> Any:
        return self.protected.get("alg")

    @property
    def kid(self) -> bytes | None:
        text = self.protected.get("kid", self.header.get("kid"))
        return _b64u_decode(text, "kid") if text is not None else None


@dataclass(frozen=True)
class ParsedJws:
    """A JWS split into its parts; `general` is True for the several-signature serialization."""

    payload: bytes
    payload_b64: str
    signatures: tuple[JwsSignature, ...]
    general: bool


def _signature(obj: Any, where: str) -> JwsSignature:
    if not isinstance(obj, dict):
        raise JoseDecodeError(f"{where} must be a JSON object")
    unknown = set(obj) - {"protected", "header", "signature"}
    if unknown:
        raise JoseDecodeError(f"unknown members in {where}: {', '.join(sorted(unknown))}")
    for member in ("protected", "signature"):
        if member not in obj:
            raise JoseDecodeError(f"JWS member {member!r} is missing in {where}")
    try:
        protected = loads_untrusted_json(_b64u_decode(obj["protected"], "protected"))
    except ValueError as exc:
        raise JoseDecodeError(f"JWS protected header is not JSON: {exc}") from None
    if not isinstance(protected, dict):
        raise JoseDecodeError("JWS protected header must be a JSON object")
    header = obj.get("header", {})
    if not isinstance(header, dict):
        raise JoseDecodeError("JWS unprotected header must be a JSON object")
    both = set(protected) & set(header)
    if both:
        raise JoseDecodeError(f"header parameters in both buckets: {', '.join(sorted(both))}")
    if "crit" in protected or "crit" in header:
        raise JoseDecodeError("JWS `crit` names extensions this implementation does not understand")
    if "alg" in header:
        raise JoseDecodeError("JWS alg must be in the protected header")
    sig = JwsSignature(protected, header, obj["protected"], _b64u_decode(obj["signature"], "signature"))
    _ = sig.kid  # checks the kid's encoding now
    return sig


def parse_json(data: bytes) -> ParsedJws:
    """Split a flattened or general JWS JSON serialization into its parts, checking every member."""
    try:
        obj = loads_untrusted_json(data)  # floats, huge integers, deep nesting refused while parsing
    except (ValueError, UnicodeDecodeError) as exc:
        raise JoseDecodeError(f"JWS is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise JoseDecodeError("JWS must be a JSON object (JWS JSON Serialization)")
    if "payload" not in obj:
        raise JoseDecodeError("JWS member 'payload' is missing")
    payload_b64 = obj["payload"]
    payload = _b64u_decode(payload_b64, "payload")
    if "signatures" in obj:
        unknown = set(obj) - {"payload", "signatures"}
        if unknown:
            raise JoseDecodeError(f"unknown JWS members: {', '.join(sorted(unknown))}")
        entries = obj["signatures"]
        if not isinstance(entries, list) or not entries:
            raise JoseDecodeError("JWS 'signatures' must be a non-empty array")
        sigs = tuple(_signature(e, f"signatures[{i}]") for i, e in enumerate(entries))
        return ParsedJws(payload, payload_b64, sigs, True)
    rest = {k: v for k, v in obj.items() if k != "payload"}
    return ParsedJws(payload, payload_b64, (_signature(rest, "the JWS"),), False)


def _check_one(parsed: ParsedJws, sig: JwsSignature, key: VerifyingKey, alg: str) -> bool:
    """jwcrypto checks the signature of one entry (rebuilt as a flattened JWS)."""
    flat: dict[str, Any] = {"protected": sig.protected_b64, "payload": parsed.payload_b64}
    flat["signature"] = _b64u(sig.signature)
    token = jws.JWS()
    try:
        token.deserialize(json.dumps(flat))
        token.verify(_jwcrypto_key(key), alg=alg)
    except jws.InvalidJWSSignature:
        return False
    except JWException as exc:
        raise JoseDecodeError(f"JWS refused: {exc}") from None
    return True


def verify_json(
    data: bytes,
    trust: TrustStore | VerifyingKey | Iterable[VerifyingKey],
    *,
    allowed_algs: Iterable[str] | None = None,
) -> JwsVerified:
    """Verify a JWS against trusted keys; returns the payload and the signer.

    Several signatures (general serialization) pass when one verifies with a trusted key of an allowed
    algorithm. Errors, most specific first: SignatureInvalid, UnknownKid, UnsupportedAlgorithm; shape
    problems are JoseDecodeError.
    """
    parsed = parse_json(data)
    store = _as_store(trust)
    allowed = set(ACCEPTED_JOSE_ALGS) if allowed_algs is None else set(ACCEPTED_JOSE_ALGS) & set(allowed_algs)
    problems: list[SecurityError] = []
    for sig in parsed.signatures:
        alg = sig.alg
        if not isinstance(alg, str) or alg not in allowed:
            problems.append(UnsupportedAlgorithm(f"JWS algorithm {alg!r} not supported or not allowed"))
            continue
        kid = sig.kid
        candidates = store.resolve(kid, ACCEPTED_JOSE_ALGS[alg])
        if not candidates:
            who = f"kid {kid.hex()}" if kid is not None else f"alg {alg} (no kid)"
            problems.append(UnknownKid(f"no trusted key for {who}"))
            continue
        for key in candidates:
            if _check_one(parsed, sig, key, alg):
                return JwsVerified(payload=parsed.payload, alg=alg, kid=kid, key=key)
        problems.append(
            SignatureInvalid(f"JWS signature does not verify ({kid.hex() if kid else 'any key'})")
        )
    for kind in (SignatureInvalid, UnknownKid, UnsupportedAlgorithm):
        for problem in problems:
            if isinstance(problem, kind):
                raise problem
    raise JoseDecodeError("JWS has no signature")


__all__ = [
    "ACCEPTED_JOSE_ALGS",
    "JoseDecodeError",
    "JoseError",
    "JwsSignature",
    "JwsVerified",
    "ParsedJws",
    "jose_alg",
    "parse_json",
    "sign_json",
    "verify_json",
]
