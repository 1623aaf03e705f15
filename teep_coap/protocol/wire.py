"""From TEEP message objects to signed bytes and back, for both engines.

Sealing = CBOR encode + COSE_Sign1 (one key) or COSE_Sign (one signature per key). Opening = COSE
verify against the trusted keys, then strict TEEP decode. Errors stay typed: security errors from the
COSE layer, `TeepDecodeError` from the codec; each engine decides what they mean for its answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from teep_coap.model.teep import TeepMessage
from teep_coap.security.keys import SigningKey, VerifyingKey

COSE_SIGN1_TAG = 18
COSE_SIGN_TAG = 98
_HDR_ALG = 1
_HDR_KID = 4


class NotCose(ValueError):
    """Raised by `peek_signers` when the bytes are not a tagged COSE_Sign1/COSE_Sign."""


@dataclass(frozen=True)
class SignerHint:
    """What a COSE object says about who signed it (unverified): one entry per signature."""

    structure: str  # "COSE_Sign1" | "COSE_Sign"
    signers: tuple[tuple[bytes | None, int | None], ...]  # (kid, alg)


def _hdr_alg_kid(protected: Any, unprotected: Any) -> tuple[bytes | None, int | None]:
    prot: Any = {}
    if isinstance(protected, bytes) and protected:
        prot = cbor2.loads(protected)
    if not isinstance(prot, dict):
        prot = {}
    unprot = unprotected if isinstance(unprotected, dict) else {}
    kid = prot.get(_HDR_KID, unprot.get(_HDR_KID))
    alg = prot.get(_HDR_ALG, unprot.get(_HDR_ALG))
    return (
        bytes(kid) if isinstance(kid, bytes) else None,
        alg if isinstance(alg, int) and not isinstance(alg, bool) else None,
    )


def peek_signers(data: bytes) -> SignerHint:
    """Read kid and alg of each signature without verifying, so the TAM can fetch the right device
    key from its database before calling the COSE layer (hand-written: a few lines of cbor2 walking,
    the COSE layer verifies everything again)."""
    try:
        obj = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises many types on garbage; all mean "not COSE"
        raise NotCose(f"not CBOR: {exc}") from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag not in (COSE_SIGN1_TAG, COSE_SIGN_TAG):
        raise NotCose("not a tagged COSE_Sign1 (18) or COSE_Sign (98)")
    v = obj.value
    try:
        if obj.tag == COSE_SIGN1_TAG:
            if not isinstance(v, list) or len(v) != 4:
                raise NotCose("COSE_Sign1 is not a 4-element array")
            return SignerHint("COSE_Sign1", (_hdr_alg_kid(v[0], v[1]),))
        if not isinstance(v, list) or len(v) != 4 or not isinstance(v[3], list):
            raise NotCose("COSE_Sign is not a 4-element array with a signature list")
        sigs = tuple(_hdr_alg_kid(s[0], s[1]) for s in v[3] if isinstance(s, list) and len(s) == 3)
        return SignerHint("COSE_Sign", sigs)
    except NotCose:
        raise
    except Exception as exc:
        raise NotCose(f"malformed COSE headers: {exc}") from None


def looks_like_cose(data: bytes) -> bool:
    """First byte is tag 18 (0xD2) or tag 98 (0xD8 0x62)."""
    return data[:1] == b"\xd2" or data[:2] == b"\xd8\x62"


def seal(msg: TeepMessage, keys: SigningKey | Sequence[SigningKey]) -> bytes:
    """Encode and sign: COSE_Sign1 for one key, COSE_Sign with one signature per key otherwise."""
    from teep_coap.encoding.cbor_codec import encode
    from teep_coap.security import cose

    payload = encode(msg)
    if isinstance(keys, SigningKey):
        return bytes(cose.sign1(payload, keys))
    if len(keys) == 1:
        return bytes(cose.sign1(payload, keys[0]))
    return bytes(cose.sign(payload, list(keys)))


@dataclass(frozen=True)
class Opened:
    """A verified and decoded TEEP message."""

    message: TeepMessage
    payload: bytes
    alg: int
    kid: bytes | None
    key: VerifyingKey
    structure: str


def open_signed(data: bytes, trust: Any, *, allowed_algs: Iterable[int] | None = None) -> Opened:
    """Verify with `trust` (TrustStore, key or keys), then decode the TEEP payload.

    Raises the COSE layer's `CoseError` subclasses or the codec's `TeepDecodeError`."""
    from teep_coap.encoding.cbor_codec import decode
    from teep_coap.security import cose

    verified = cose.verify(data, trust, allowed_algs=list(allowed_algs) if allowed_algs is not None else None)
    payload = bytes(verified.payload)
    return Opened(
        message=decode(payload),
        payload=payload,
        alg=verified.alg,
        kid=verified.kid,
        key=verified.key,
        structure=verified.structure,
    )


def describe(data: bytes | None) -> dict[str, Any] | None:
    """JSON-able view of a message we just produced or received (signed or bare), for CLIs and logs.
    Does not verify: only call it on bytes that were verified or produced by us."""
    from teep_coap.encoding.cbor_codec import decode
    from teep_coap.encoding.json_codec import to_jsonable

    if not data:
        return None
    if looks_like_cose(data):
        from teep_coap.security import cose

        info = cose.inspect(data)
        return {
            "cose": info.structure,
            "signers": [
                {"alg": sig.alg, "kid": sig.kid.hex() if sig.kid else None} for sig in info.signatures
            ],
            "size": len(data),
            "message": to_jsonable(decode(bytes(info.payload or b""))),
        }
    return {"cose": None, "size": len(data), "message": to_jsonable(decode(data))}
