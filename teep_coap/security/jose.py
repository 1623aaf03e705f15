"""JWS for the TEEP JSON twin (application/teep+json), with jwcrypto: ES256 (P-256) and EdDSA (Ed25519).

The JSON era of TEEP (draft-ietf-teep-protocol-00, NOTES.md §2) said "JOSE for JSON" but never
specified the wrapper. Our local convention mirrors the COSE_Sign1 the CBOR binding uses:

* **Flattened JWS JSON Serialization** (RFC 7515 §7.2.2), not compact: the body of an
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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from teep_coap.security.errors import SecurityError, SignatureInvalid, UnknownKid, UnsupportedAlgorithm
from teep_coap.security.keys import ALG_ED25519, ALG_ESP256, SigningKey, VerifyingKey
from teep_coap.security.truststore import TrustStore

# JOSE alg we emit per key type, and the JOSE algs we accept mapped to the COSE alg the key checks.
JOSE_ALG_P256 = "ES256"
JOSE_ALG_ED25519 = "EdDSA"
ACCEPTED_JOSE_ALGS: dict[str, int] = {"ES256": ALG_ESP256, "EdDSA": ALG_ED25519, "Ed25519": ALG_ED25519}
_PROTECTED_MEMBERS = {"alg", "kid"}


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


def sign_json(payload: bytes, key: SigningKey, *, include_kid: bool = True) -> bytes:
    """Flattened JWS JSON Serialization of `payload` signed with `key` (see the module docstring)."""
    alg = jose_alg(key)
    signer = jws.JWS(payload)
    header: dict[str, str] | None = {"kid": _b64u(key.kid)} if include_kid else None
    try:
        signer.add_signature(
            _jwcrypto_key(key),
            alg=alg,
            protected=_dumps({"alg": alg}).decode(),
            header=json.dumps(header) if header else None,
        )
        flattened = json.loads(signer.serialize(compact=False))
    except JWException as exc:
        raise JoseError(f"cannot sign JWS: {exc}") from None
    out: dict[str, Any] = {"protected": flattened["protected"]}
    if header:
        out["header"] = header
    out["payload"] = flattened["payload"]
    out["signature"] = flattened["signature"]
    return _dumps(out)


def _as_store(trust: TrustStore | VerifyingKey | Iterable[VerifyingKey]) -> TrustStore:
    if isinstance(trust, TrustStore):
        return trust
    if isinstance(trust, VerifyingKey):
        return TrustStore((trust,))
    return TrustStore(trust)


def parse_json(data: bytes) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Split a flattened JWS into (protected header, unprotected header, payload, signature), checked."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JoseDecodeError(f"JWS is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise JoseDecodeError("JWS must be a JSON object (flattened JWS JSON Serialization)")
    if "signatures" in obj:
        raise JoseDecodeError(
            "general JWS JSON Serialization (several signatures) is not used; send flattened"
        )
    unknown = set(obj) - {"protected", "header", "payload", "signature"}
    if unknown:
        raise JoseDecodeError(f"unknown JWS members: {', '.join(sorted(unknown))}")
    for member in ("protected", "payload", "signature"):
        if member not in obj:
            raise JoseDecodeError(f"JWS member {member!r} is missing")
    try:
        protected = json.loads(_b64u_decode(obj["protected"], "protected"))
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
    payload = _b64u_decode(obj["payload"], "payload")
    signature = _b64u_decode(obj["signature"], "signature")
    return protected, header, payload, signature


def verify_json(
    data: bytes,
    trust: TrustStore | VerifyingKey | Iterable[VerifyingKey],
    *,
    allowed_algs: Iterable[str] | None = None,
) -> JwsVerified:
    """Verify a flattened JWS against trusted keys; returns the payload and the signer.

    Errors: JoseDecodeError (structure), UnsupportedAlgorithm, UnknownKid, SignatureInvalid.
    """
    protected, header, payload, _signature = parse_json(data)
    if "crit" in protected or "crit" in header:
        raise JoseDecodeError("JWS `crit` names extensions this implementation does not understand")
    if "alg" in header:
        raise JoseDecodeError("JWS alg must be in the protected header")
    alg = protected.get("alg")
    allowed = set(ACCEPTED_JOSE_ALGS) if allowed_algs is None else set(ACCEPTED_JOSE_ALGS) & set(allowed_algs)
    if not isinstance(alg, str) or alg not in allowed:
        raise UnsupportedAlgorithm(f"JWS algorithm {alg!r} not supported or not allowed")
    kid_text = protected.get("kid", header.get("kid"))
    kid = _b64u_decode(kid_text, "kid") if kid_text is not None else None
    candidates = _as_store(trust).resolve(kid, ACCEPTED_JOSE_ALGS[alg])
    if not candidates:
        who = f"kid {kid.hex()}" if kid is not None else f"alg {alg} (no kid)"
        raise UnknownKid(f"no trusted key for {who}")
    text = data.decode("utf-8")
    for key in candidates:
        token = jws.JWS()
        try:
            token.deserialize(text)
            token.verify(_jwcrypto_key(key), alg=alg)
        except jws.InvalidJWSSignature:
            continue
        except JWException as exc:
            raise JoseDecodeError(f"JWS refused: {exc}") from None
        return JwsVerified(payload=payload, alg=alg, kid=kid, key=key)
    raise SignatureInvalid(f"JWS signature does not verify ({kid.hex() if kid else 'any trusted key'})")


__all__ = [
    "ACCEPTED_JOSE_ALGS",
    "JoseDecodeError",
    "JoseError",
    "JwsVerified",
    "jose_alg",
    "parse_json",
    "sign_json",
    "verify_json",
]
