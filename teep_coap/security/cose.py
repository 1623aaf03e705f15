"""COSE_Sign1 and COSE_Sign (RFC 9052) around TEEP messages, on python-cwt and `cryptography`.

What TEEP needs (docs/protocol-facts.md §1.1, §1.6): COSE_Sign1_Tagged (tag 18) with protected `{1: alg}`,
unprotected `{4: kid}` (RFC 9679 thumbprint), empty external_aad; COSE_Sign (tag 98) with one signature
per algorithm for a first QueryRequest whose receiver's suite is unknown.

Who does what:
- python-cwt encodes every COSE_Sign and every COSE_Sign1 with extra headers, and is the alternative
  verifier (`via_cwt=True`), which tests run side by side with ours.
- TEEP's plain COSE_Sign1 (`_sign1_plain`) and all signature checks (`_check_direct`) build the
  Sig_structure by concatenation and call the key's `cryptography` primitive: cwt alone stays below
  the 70%-of-raw performance target and reads an empty body header h'a0' differently from libteep
  (see the two functions for the measurements and the details).
- This module always parses the structure itself first, because cwt accepts things TEEP must refuse
  (it never checks `crit` on decode, takes `alg` from either bucket, does not compare a signature's
  alg with the key, and leaks ValueError/DecodeError); the parse also gives `inspect()` and precise
  error types. Every failure leaves as one `CoseError` subclass.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cbor2
from cwt import COSE, Signer

from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.encoding.untrusted import check_untrusted_cbor
from teep_coap.security.cwt_keys import cwt_key
from teep_coap.security.errors import (
    CoseDecodeError,
    CoseError,
    CriticalHeaderNotUnderstood,
    SignatureInvalid,
    UnknownKid,
    UnsupportedAlgorithm,
)
from teep_coap.security.keys import ALG_NAMES, SIGNATURE_ALGS, SigningKey, VerifyingKey
from teep_coap.security.truststore import TrustStore

TAG_SIGN1 = 18
TAG_SIGN = 98

# Header labels (RFC 9052 §3.1).
H_ALG, H_CRIT, H_CONTENT_TYPE, H_KID = 1, 2, 3, 4
# Labels this implementation understands; anything else named in `crit` is refused.
UNDERSTOOD_HEADERS = frozenset({H_ALG, H_CRIT, H_CONTENT_TYPE, H_KID})

Structure = Literal["COSE_Sign1", "COSE_Sign"]

# One instance for the process: cwt's COSE object holds only configuration. Headers are passed
# explicitly (no auto inclusion) so the bytes are exactly what TEEP specifies.
_COSE = COSE.new(alg_auto_inclusion=False, kid_auto_inclusion=False)


@dataclass(frozen=True)
class SignatureInfo:
    """One signer's headers: the body of a COSE_Sign1, or one COSE_Signature of a COSE_Sign."""

    protected: dict[Any, Any]
    unprotected: dict[Any, Any]
    protected_bytes: bytes
    signature: bytes

    @property
    def alg(self) -> int | None:
        value = self.protected.get(H_ALG)
        return value if isinstance(value, int) else None

    @property
    def kid(self) -> bytes | None:
        value = self.protected.get(H_KID, self.unprotected.get(H_KID))
        return value if isinstance(value, bytes) else None


@dataclass(frozen=True)
class CoseInfo:
    """Unverified view of a COSE_Sign1 / COSE_Sign (for `decode` and `inspect` commands)."""

    structure: Structure
    tagged: bool
    protected: dict[Any, Any]
    unprotected: dict[Any, Any]
    payload: bytes | None
    signatures: tuple[SignatureInfo, ...]
    protected_bytes: bytes = field(repr=False)

    @property
    def detached(self) -> bool:
        return self.payload is None

    @property
    def alg(self) -> int | None:
        """alg of the (first) signer."""
        return self.signatures[0].alg if self.signatures else None

    @property
    def kid(self) -> bytes | None:
        """kid of the (first) signer."""
        return self.signatures[0].kid if self.signatures else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (bytes as hex)."""
        return {
            "structure": self.structure,
            "tagged": self.tagged,
            "protected": _jsonable(self.protected),
            "unprotected": _jsonable(self.unprotected),
            "payload": None if self.payload is None else self.payload.hex(),
            "signatures": [
                {
                    "alg": s.alg,
                    "alg_name": ALG_NAMES.get(s.alg, "unknown") if s.alg is not None else None,
                    "kid": None if s.kid is None else s.kid.hex(),
                    "protected": _jsonable(s.protected),
                    "unprotected": _jsonable(s.unprotected),
                    "signature": s.signature.hex(),
                }
                for s in self.signatures
            ],
        }


@dataclass(frozen=True)
class Verified:
    """Result of a successful `verify`: the payload and who signed it."""

    payload: bytes
    alg: int
    kid: bytes | None
    key: VerifyingKey
    structure: Structure
    protected: dict[Any, Any]
    unprotected: dict[Any, Any]


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, cbor2.CBORTag):
        return {"tag": value.tag, "value": _jsonable(value.value)}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


# ---------------------------------------------------------------------------------------------- signing


def _headers(
    key: SigningKey,
    include_kid: bool,
    protected_extra: Mapping[Any, Any] | None,
    unprotected_extra: Mapping[Any, Any] | None,
) -> tuple[dict[Any, Any], dict[Any, Any]]:
    protected: dict[Any, Any] = {H_ALG: key.alg}
    if protected_extra:
        protected.update(protected_extra)
    unprotected: dict[Any, Any] = {H_KID: key.kid} if include_kid else {}
    if unprotected_extra:
        unprotected.update(unprotected_extra)
    return protected, unprotected


def _cbor_head(major: int, n: int) -> bytes:
    """Initial byte(s) of a CBOR data item with major type `major` and argument `n` (RFC 8949 §3)."""
    if n < 24:
        return bytes((major << 5 | n,))
    if n < 0x100:
        return bytes((major << 5 | 24, n))
    if n < 0x10000:
        return bytes((major << 5 | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((major << 5 | 26,)) + n.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + n.to_bytes(8, "big")


def _bstr(data: bytes) -> bytes:
    return _cbor_head(2, len(data)) + data


_SIG1_CONTEXT = cbor2.dumps(["Signature1"])[1:]  # the text string "Signature1", CBOR-encoded
_NIL = b"\xf6"
_PROTECTED_ALG = {alg: cbor2.dumps({H_ALG: alg}) for alg in SIGNATURE_ALGS}
_KNOWN_PROTECTED = {encoded: {H_ALG: alg} for alg, encoded in _PROTECTED_ALG.items()}


def _sign1_plain(
    payload: bytes | None,
    content: bytes,
    key: SigningKey,
    include_kid: bool,
    tagged: bool,
    external_aad: bytes,
) -> bytes:
    """COSE_Sign1 with exactly TEEP's headers ({1: alg} / {4: kid}), encoded by concatenation.

    Hand-written on purpose: going through cwt costs three cbor2 encoder runs and header validation
    per message, which put ESP256 and Ed25519 signing at 59-65% of the raw `cryptography` rate (the
    target is 70%). The bytes are identical to cwt's output (tests compare them for Ed25519, whose
    signatures are deterministic) and are verified by cwt and pycose in the tests; every other header
    layout still goes through cwt.
    """
    protected = _PROTECTED_ALG.get(key.alg) or cbor2.dumps({H_ALG: key.alg})
    to_be_signed = b"".join((b"\x84", _SIG1_CONTEXT, _bstr(protected), _bstr(external_aad), _bstr(content)))
    signature = key.sign(to_be_signed)
    unprotected = b"\xa1\x04" + _bstr(key.kid) if include_kid else b"\xa0"
    return b"".join(
        (
            b"\xd2\x84" if tagged else b"\x84",
            _bstr(protected),
            unprotected,
            _bstr(payload) if payload is not None else _NIL,
            _bstr(signature),
        )
    )


def sign1(
    payload: bytes | None,
    key: SigningKey,
    *,
    detached_payload: bytes | None = None,
    include_kid: bool = True,
    tagged: bool = True,
    external_aad: bytes = b"",
    protected_extra: Mapping[Any, Any] | None = None,
    unprotected_extra: Mapping[Any, Any] | None = None,
    via_cwt: bool = False,
) -> bytes:
    """COSE_Sign1 over `payload`, or over `detached_payload` with a nil payload in the structure.

    `protected_extra` / `unprotected_extra` add header parameters (e.g. content type 3 or `crit`).
    TEEP's plain headers take the concatenation fast path unless `via_cwt` (tests and the benchmark
    use it to compare both paths); everything else is encoded by cwt.
    """
    if (payload is None) == (detached_payload is None):
        raise CoseError("sign1 needs exactly one of payload and detached_payload")
    content = payload if payload is not None else detached_payload
    assert content is not None
    if not protected_extra and not unprotected_extra and not via_cwt:
        return _sign1_plain(payload, content, key, include_kid, tagged, external_aad)
    protected, unprotected = _headers(key, include_kid, protected_extra, unprotected_extra)
    try:
        tag = _COSE.encode_and_sign(
            content,
            key=cwt_key(key),
            protected=protected,
            unprotected=unprotected,
            external_aad=external_aad,
            out="cbor2/CBORTag",
        )
    except Exception as exc:  # cwt raises ValueError/EncodeError on bad headers
        raise CoseError(f"cannot sign: {exc}") from None
    if payload is None:
        tag.value[2] = None
    return cbor2.dumps(tag if tagged else tag.value)


def sign(
    payload: bytes,
    keys: Sequence[SigningKey],
    *,
    include_kid: bool = True,
    external_aad: bytes = b"",
) -> bytes:
    """COSE_Sign_Tagged (98) with one COSE_Signature per key, empty body protected header.

    Used for the first QueryRequest to an Agent whose cipher suite is not known
    (docs/protocol-facts.md §1.6)."""
    if not keys:
        raise CoseError("COSE_Sign needs at least one signing key")
    signers = []
    for k in keys:
        protected, unprotected = _headers(k, include_kid, None, None)
        signers.append(Signer.new(cose_key=cwt_key(k), protected=protected, unprotected=unprotected))
    try:
        encoded: bytes = _COSE.encode_and_sign(
            payload, protected={}, unprotected={}, signers=signers, external_aad=external_aad
        )
    except Exception as exc:
        raise CoseError(f"cannot sign: {exc}") from None
    return encoded


# ---------------------------------------------------------------------------------------------- parsing


def _loads_exact(data: bytes) -> Any:
    """Decode one CBOR item that spans all of `data` (trailing bytes are an error)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CoseDecodeError(f"COSE input must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise CoseDecodeError("empty input is not a COSE object")
    try:  # nothing cbor2 would spend long on (bignums, other tags, floats) reaches it unverified
        check_untrusted_cbor(data)
    except TeepDecodeError as exc:
        raise CoseDecodeError(f"not a COSE structure: {exc}") from None
    stream = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(stream).decode()
    except RecursionError:
        raise CoseDecodeError("CBOR nested too deeply") from None
    except Exception as exc:  # cbor2 raises CBORDecodeError, ValueError, TypeError, ... on garbage
        raise CoseDecodeError(f"not well-formed CBOR: {exc}") from None
    if stream.tell() != len(data):
        raise CoseDecodeError(f"{len(data) - stream.tell()} trailing bytes after the COSE object")
    return item


def _header_map(raw: Any, what: str) -> dict[Any, Any]:
    if not isinstance(raw, dict):
        raise CoseDecodeError(f"{what} header must be a map")
    for label in raw:
        if not isinstance(label, int | str) or isinstance(label, bool):
            raise CoseDecodeError(f"{what} header label {label!r} is neither int nor text")
    return raw


def _protected_map(raw: Any, what: str) -> dict[Any, Any]:
    if not isinstance(raw, bytes):
        raise CoseDecodeError(f"{what} protected header must be a byte string")
    if raw == b"":
        return {}
    known = _KNOWN_PROTECTED.get(raw)
    if known is not None:  # TEEP's own headers: skip a CBOR decoder run per message
        return dict(known)
    try:
        decoded = _loads_exact(raw)
    except CoseDecodeError as exc:
        raise CoseDecodeError(f"{what} protected header: {exc}") from None
    return _header_map(decoded, f"{what} protected")


def _check_headers(
    protected: dict[Any, Any], unprotected: dict[Any, Any], what: str, *, need_alg: bool
) -> None:
    """RFC 9052 §3 rules that matter before any signature is checked."""
    common = protected.keys() & unprotected.keys()
    if common:
        raise CoseDecodeError(f"{what}: header labels {sorted(map(str, common))} in both buckets")
    if H_CRIT in unprotected:
        raise CoseDecodeError(f"{what}: crit must be in the protected header")
    if H_CRIT in protected:
        crit = protected[H_CRIT]
        if not isinstance(crit, list) or not crit:
            raise CoseDecodeError(f"{what}: crit must be a non-empty array")
        for label in crit:
            if not isinstance(label, int | str) or isinstance(label, bool):
                raise CoseDecodeError(f"{what}: crit label {label!r} is neither int nor text")
            if label not in protected:
                raise CoseDecodeError(f"{what}: crit names {label!r}, absent from the protected header")
            if label not in UNDERSTOOD_HEADERS:
                raise CriticalHeaderNotUnderstood(
                    f"{what}: critical header parameter {label!r} not understood"
                )
    if H_ALG in unprotected:
        raise CoseDecodeError(f"{what}: alg must be in the protected header")
    if H_ALG in protected:
        if not isinstance(protected[H_ALG], int | str) or isinstance(protected[H_ALG], bool):
            raise CoseDecodeError(f"{what}: alg must be an int or text")
        if not isinstance(protected[H_ALG], int):
            raise UnsupportedAlgorithm(f"{what}: algorithm {protected[H_ALG]!r} not supported")
    elif need_alg:
        raise CoseDecodeError(f"{what}: no alg in the protected header")
    kid = protected.get(H_KID, unprotected.get(H_KID))
    if kid is not None and not isinstance(kid, bytes):
        raise CoseDecodeError(f"{what}: kid must be a byte string")
    ctype = protected.get(H_CONTENT_TYPE, unprotected.get(H_CONTENT_TYPE))
    if ctype is not None and (not isinstance(ctype, int | str) or isinstance(ctype, bool)):
        raise CoseDecodeError(f"{what}: content type must be an int or text")


def _parse(data: bytes, *, allow_untagged: bool) -> tuple[CoseInfo, list[Any]]:
    item = _loads_exact(data)
    tagged = isinstance(item, cbor2.CBORTag)
    if tagged:
        if item.tag == TAG_SIGN1:
            structure: Structure = "COSE_Sign1"
        elif item.tag == TAG_SIGN:
            structure = "COSE_Sign"
        else:
            raise CoseDecodeError(f"CBOR tag {item.tag} is not COSE_Sign1 (18) or COSE_Sign (98)")
        body = item.value
    elif isinstance(item, list):
        if not allow_untagged:
            raise CoseDecodeError(
                "untagged COSE structure; expected COSE_Sign1_Tagged (18) or COSE_Sign_Tagged (98)"
            )
        structure = "COSE_Sign1"
        body = item
    else:
        raise CoseDecodeError(f"not a COSE structure (top-level CBOR {type(item).__name__})")
    if not isinstance(body, list) or len(body) != 4:
        raise CoseDecodeError(f"{structure} must be an array of 4 items")
    p_raw, u_raw, payload, last = body
    protected = _protected_map(p_raw, structure)
    unprotected = _header_map(u_raw, f"{structure} unprotected")
    if payload is not None and not isinstance(payload, bytes):
        raise CoseDecodeError(f"{structure} payload must be a byte string or nil")
    _check_headers(protected, unprotected, structure, need_alg=structure == "COSE_Sign1")
    if structure == "COSE_Sign1":
        if not isinstance(last, bytes):
            raise CoseDecodeError("COSE_Sign1 signature must be a byte string")
        sigs: tuple[SignatureInfo, ...] = (SignatureInfo(protected, unprotected, p_raw, last),)
    else:
        if not isinstance(last, list) or not last:
            raise CoseDecodeError("COSE_Sign signatures must be a non-empty array")
        parsed = []
        for i, entry in enumerate(last):
            what = f"COSE_Signature[{i}]"
            if not isinstance(entry, list) or len(entry) != 3:
                raise CoseDecodeError(f"{what} must be an array of 3 items")
            sp = _protected_map(entry[0], what)
            su = _header_map(entry[1], f"{what} unprotected")
            if not isinstance(entry[2], bytes):
                raise CoseDecodeError(f"{what} signature must be a byte string")
            _check_headers(sp, su, what, need_alg=H_ALG not in protected)
            parsed.append(SignatureInfo(sp, su, entry[0], entry[2]))
        sigs = tuple(parsed)
    info = CoseInfo(structure, tagged, protected, unprotected, payload, sigs, p_raw)
    return info, body


def inspect(data: bytes, *, allow_untagged: bool = True) -> CoseInfo:
    """Parse headers and payload WITHOUT verifying anything (for `decode`/`inspect` commands)."""
    return _parse(data, allow_untagged=allow_untagged)[0]


@dataclass(frozen=True)
class Parsed:
    """A tagged COSE object as `parse` read and checked it, not verified. A caller that had to read
    the signers' kids first (to fetch their keys) hands this to `verify` in place of the bytes, which
    are then not decoded a second time."""

    data: bytes
    info: CoseInfo
    body: list[Any] = field(repr=False)


def parse(data: bytes) -> Parsed:
    """Decode and check a COSE_Sign1_Tagged / COSE_Sign_Tagged as `verify` does, without verifying
    it; raises what `verify` would raise for its structure (CoseDecodeError and the others)."""
    info, body = _parse(data, allow_untagged=False)
    return Parsed(data, info, body)


# ---------------------------------------------------------------------------------------------- verify


TrustArg = TrustStore | VerifyingKey | Iterable[VerifyingKey]


def _check_with_cwt(
    tag: int, body: list[Any], payload: bytes, key: VerifyingKey, external_aad: bytes
) -> bool:
    """Signature check delegated to cwt: True if it verifies. The structure was validated by `_parse`,
    so any cwt failure here means the signature does not verify with this key."""
    try:
        _COSE.decode_with_headers(
            cbor2.CBORTag(tag, body),
            cwt_key(key),
            external_aad=external_aad,
            detached_payload=payload if body[2] is None else None,
        )
    except Exception:
        return False
    return True


_SIG_CONTEXT = cbor2.dumps(["Signature"])[1:]  # the text string "Signature", CBOR-encoded


def _check_direct(
    body_protected: bytes,
    sign_protected: bytes | None,
    payload: bytes,
    signature: bytes,
    key: VerifyingKey,
    aad: bytes,
) -> bool:
    """Signature check without cwt: Sig_structure by concatenation, then the key's `cryptography`
    verify. `sign_protected` is None for COSE_Sign1 (context "Signature1"), the signer's protected
    bytes for COSE_Sign (context "Signature").

    Hand-written for two reasons. Speed: cwt re-decodes the headers and re-encodes the Sig_structure
    (about 10 us per message, which put ESP256 verification below 70% of the raw rate on a loaded
    2-core machine). Interop: cwt puts h'' in the Sig_structure when the body protected header is an
    empty map sent as h'a0', but libteep (t_cose) signs COSE_Sign over the bytes as sent, so its
    QueryRequest verifies only this way; we try the bytes as sent first and h'' second (both readings
    of RFC 9052 exist). The structure was validated by `_parse`; tests check this path against cwt
    and pycose on valid, tampered and foreign messages."""
    if sign_protected is None:
        head = b"\x84" + _SIG1_CONTEXT
        tail = _bstr(aad) + _bstr(payload)
    else:
        head = b"\x85" + _SIG_CONTEXT
        tail = _bstr(sign_protected) + _bstr(aad) + _bstr(payload)
    candidates = [body_protected]
    if body_protected == b"\xa0":
        candidates.append(b"")
    for protected in candidates:
        try:
            key.verify(head + _bstr(protected) + tail, signature)
        except SignatureInvalid:
            continue
        return True
    return False


def verify(
    data: bytes | Parsed,
    trust: TrustArg,
    *,
    detached_payload: bytes | None = None,
    external_aad: bytes = b"",
    allowed_algs: Collection[int] | None = None,
    allow_untagged: bool = False,
    via_cwt: bool = False,
) -> Verified:
    """Verify a COSE_Sign1_Tagged / COSE_Sign_Tagged against trusted keys and return its payload.

    A COSE_Sign passes when one of its signatures verifies with a trusted key whose algorithm the
    caller allows (an Agent that knows only Ed25519 accepts the Ed25519 signature of a two-signer
    QueryRequest). Errors, most specific first: SignatureInvalid (a trusted key was tried and failed),
    UnknownKid (no trusted key for the kid/alg), UnsupportedAlgorithm (no signer uses an allowed alg).
    Signatures are checked by `_check_direct`, or by python-cwt with `via_cwt=True`. `data` may be
    the object `parse` made of the bytes (always tagged).
    """
    if isinstance(data, Parsed):
        info, body = data.info, data.body
    else:
        info, body = _parse(data, allow_untagged=allow_untagged)
    if info.payload is None and detached_payload is None:
        raise CoseDecodeError(f"{info.structure} has a detached (nil) payload and none was supplied")
    if info.payload is not None and detached_payload is not None:
        raise CoseDecodeError(f"{info.structure} carries its payload; a detached payload was also supplied")
    payload = info.payload if info.payload is not None else detached_payload
    assert payload is not None
    store = TrustStore.coerce(trust)
    allowed = SIGNATURE_ALGS if allowed_algs is None else SIGNATURE_ALGS & set(allowed_algs)
    body_alg = info.protected.get(H_ALG)

    problems: list[CoseError] = []
    for index, sig in enumerate(info.signatures):
        alg = sig.alg if sig.alg is not None else body_alg
        if not isinstance(alg, int) or alg not in allowed:
            name = ALG_NAMES.get(alg, "unknown") if isinstance(alg, int) else "unknown"
            problems.append(UnsupportedAlgorithm(f"algorithm {alg!r} ({name}) not supported or not allowed"))
            continue
        kid = sig.kid
        candidates = store.resolve(kid, alg)
        if not candidates:
            who = f"kid {kid.hex()}" if kid else f"alg {alg} (no kid)"
            problems.append(UnknownKid(f"no trusted key for {who}"))
            continue
        if len(sig.signature) != 64:
            problems.append(
                SignatureInvalid(f"{ALG_NAMES[alg]} signature must be 64 bytes, got {len(sig.signature)}")
            )
            continue
        if info.structure == "COSE_Sign1":
            tag, check_body, sign_protected = TAG_SIGN1, body, None
        else:
            tag, check_body = TAG_SIGN, [body[0], body[1], body[2], [body[3][index]]]
            sign_protected = sig.protected_bytes
        for key in candidates:
            if (
                _check_with_cwt(tag, check_body, payload, key, external_aad)
                if via_cwt
                else _check_direct(body[0], sign_protected, payload, sig.signature, key, external_aad)
            ):
                return Verified(
                    payload=payload,
                    alg=alg,
                    kid=kid,
                    key=key,
                    structure=info.structure,
                    protected=sig.protected,
                    unprotected=sig.unprotected,
                )
        who = kid.hex() if kid else "any trusted key"
        problems.append(SignatureInvalid(f"{info.structure} signature does not verify ({who})"))
    for kind in (SignatureInvalid, UnknownKid, UnsupportedAlgorithm):
        for problem in problems:
            if isinstance(problem, kind):
                raise problem
    raise CoseDecodeError("no signature found")  # unreachable: _parse guarantees one signature
