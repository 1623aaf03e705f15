"""From TEEP message objects to signed bytes and back, for both engines: the `Wire` of a profile.

A `Wire` is how an engine seals (encode + sign) and opens (verify + decode) messages:

* `CoseWire` (`COSE`, the default): CBOR + COSE_Sign1 (one key) or COSE_Sign (one signature per key);
* `JoseWire` (`JOSE`): the TEEP JSON twin (`encoding.json_codec`, written compactly) + JWS from
  `security.jose` (flattened for one key, general for several: the twins of COSE_Sign1 / COSE_Sign).

Both engines take a wire (`TamEngine(..., wire=...)`, `AgentEngine(..., wire=...)`); `wire_for(encoding)`
picks it from a profile's `encoding`. Opening verifies against the trusted keys, then decodes strictly.
Errors stay typed: `SecurityError` subclasses from COSE/JOSE (UnknownKid, UnsupportedAlgorithm,
SignatureInvalid, CoseDecodeError / JoseDecodeError), `TeepDecodeError` from the codecs; `NotSigned`
when `peek` finds no signature container. Each engine decides what they mean for its answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2

from teep_coap.encoding.cbor_codec import encode
from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.encoding.json_codec import from_json, to_jsonable
from teep_coap.encoding.liberal import DRAFT_15, check_compat, decode_liberal
from teep_coap.encoding.untrusted import check_untrusted_cbor
from teep_coap.model.teep import TeepMessage
from teep_coap.protocol.errors import ConfigError
from teep_coap.security import cose
from teep_coap.security.errors import SecurityError
from teep_coap.security.jose import ACCEPTED_JOSE_ALGS, parse_json, sign_json, verify_json
from teep_coap.security.keys import SigningKey, VerifyingKey
from teep_coap.security.suites import normalize_alg

COSE_SIGN1_TAG = 18
COSE_SIGN_TAG = 98
_HDR_ALG = 1
_HDR_KID = 4
_SIGNED_TAGS = frozenset({COSE_SIGN1_TAG, COSE_SIGN_TAG})
NO_TAGS: frozenset[int] = frozenset()

log = logging.getLogger("teep_coap.protocol.wire")


class NotSigned(ValueError):
    """Raised by `Wire.peek` when the bytes are not the wire's signature container."""


class NotCose(NotSigned):
    """Raised by `peek_signers` when the bytes are not a tagged COSE_Sign1/COSE_Sign."""


# Structures with exactly one signer: what a device must use (the TAM refuses the others).
SINGLE_SIGNER = ("COSE_Sign1", "JWS")


@dataclass(frozen=True)
class SignerHint:
    """What a COSE object or JWS says about who signed it (unverified): one entry per signature."""

    structure: str  # "COSE_Sign1" | "COSE_Sign" | "JWS" (flattened) | "JWS-general"
    signers: tuple[tuple[bytes | None, int | None], ...]  # (kid, COSE alg; None if unknown)
    # the COSE object as `cose.parse` read it, for `Wire.open(..., hint=)`; None where it refused it
    parsed: cose.Parsed | None = field(default=None, compare=False, repr=False)

    @property
    def single(self) -> bool:
        """One-signer structure (COSE_Sign1, flattened JWS) carrying exactly one signature."""
        return self.structure in SINGLE_SIGNER and len(self.signers) == 1


def _hdr_alg_kid(protected: Any, unprotected: Any) -> tuple[bytes | None, int | None]:
    prot: Any = {}
    if isinstance(protected, bytes) and protected:
        check_untrusted_cbor(protected, allowed_tags=NO_TAGS)
        prot = cbor2.loads(protected)
    if not isinstance(prot, dict):
        prot = {}
    unprot = unprotected if isinstance(unprotected, dict) else {}
    kid = prot.get(_HDR_KID, unprot.get(_HDR_KID))
    alg = prot.get(_HDR_ALG, unprot.get(_HDR_ALG))
    return (
        bytes(kid) if isinstance(kid, bytes) and kid else None,  # h'' names no key: same as absent
        alg if isinstance(alg, int) and not isinstance(alg, bool) else None,
    )


def peek_signers(data: bytes) -> SignerHint:
    """Read kid and alg of each signature without verifying, so the TAM can fetch the right device
    key from its database before calling the COSE layer. A well-formed object is read by the COSE
    layer's own parser and the hint keeps what it read (`open(..., hint=)` then verifies it without
    decoding the bytes again); what that parser refuses is read leniently for its kid and alg, and
    `open` refuses it with the COSE layer's reason."""
    if not looks_like_cose(data):  # one look at the first bytes spares walking a long non-COSE body
        raise NotCose("not a tagged COSE_Sign1 (18) or COSE_Sign (98)")
    try:
        parsed = cose.parse(data)
    except SecurityError:
        return _peek_leniently(data)
    signers = tuple((sig.kid or None, sig.alg) for sig in parsed.info.signatures)
    return SignerHint(parsed.info.structure, signers, parsed)


def _peek_leniently(data: bytes) -> SignerHint:
    """kid and alg of each signature of a COSE object the COSE layer's parser refused (hand-written:
    a few lines of cbor2 walking)."""
    try:
        check_untrusted_cbor(data, allowed_tags=_SIGNED_TAGS)  # before cbor2: see encoding.untrusted
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
    deviations: tuple[str, ...] = ()  # what was read liberally (encoding.liberal); empty if conforming


def _decode_liberal(payload: bytes, compat: str) -> tuple[TeepMessage, tuple[str, ...]]:

    message, deviations = decode_liberal(payload, compat=compat)
    if deviations:
        log.info("read liberally: %s", "; ".join(deviations))
    return message, deviations


def open_signed(
    data: bytes,
    trust: Any,
    *,
    allowed_algs: Iterable[int] | None = None,
    compat: str = "",
    parsed: cose.Parsed | None = None,
) -> Opened:
    """Verify with `trust` (TrustStore, key or keys), then decode the TEEP payload (strictly, with the
    tolerated deviations of `encoding.liberal` for `compat`). `parsed`: what `cose.parse` read from
    these very bytes (the hint of `peek_signers`), so they are not decoded again.

    Raises the COSE layer's `CoseError` subclasses or the codec's `TeepDecodeError`."""

    source: bytes | cose.Parsed = parsed if parsed is not None and parsed.data is data else data
    algs = list(allowed_algs) if allowed_algs is not None else None
    verified = cose.verify(source, trust, allowed_algs=algs)
    payload = bytes(verified.payload)
    message, deviations = _decode_liberal(payload, compat)
    return Opened(
        message=message,
        payload=payload,
        alg=verified.alg,
        kid=verified.kid,
        key=verified.key,
        structure=verified.structure,
        deviations=deviations,
    )


def describe(data: bytes | None) -> dict[str, Any] | None:
    """JSON-able view of a message we just produced or received (signed or bare), for CLIs and logs.
    Does not verify: only call it on bytes that were verified or produced by us. Reads every
    tolerated deviation (`encoding.liberal`), since the bytes were accepted already."""

    def decode(payload: bytes) -> TeepMessage:
        return decode_liberal(payload, compat=DRAFT_15)[0]

    if not data:
        return None
    if looks_like_cose(data):
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


# ---------------------------------------------------------------------------- the Wire abstraction


class Wire:
    """How an engine seals and opens TEEP messages (encoding + signature container)."""

    encoding: str = ""  # the profile `encoding` this wire serves: "cbor" | "json"
    container: str = ""  # name of the signature container in error texts: "COSE" | "JWS"

    def seal(self, msg: TeepMessage, keys: SigningKey | Sequence[SigningKey]) -> bytes:
        """Encode and sign: one-signer structure for one key, one signature per key otherwise."""
        raise NotImplementedError

    def is_signed(self, data: bytes) -> bool:
        """Cheap look: do these bytes claim to be this wire's signature container?"""
        raise NotImplementedError

    def peek(self, data: bytes) -> SignerHint:
        """kid and alg of each signature, unverified (raises NotSigned)."""
        raise NotImplementedError

    def open(
        self,
        data: bytes,
        trust: Any,
        *,
        allowed_algs: Iterable[int] | None = None,
        hint: SignerHint | None = None,
    ) -> Opened:
        """Verify with `trust` (TrustStore, key or keys; COSE alg numbers), then decode; `hint`: what
        `peek` said of these bytes (it may spare decoding them again)."""
        raise NotImplementedError

    def decode_bare(self, data: bytes) -> TeepMessage:
        """Decode an unsigned message (only where the configuration accepts unsigned messages)."""
        raise NotImplementedError

    def describe(self, data: bytes | None) -> dict[str, Any] | None:
        """JSON-able view of bytes we produced or already verified (does not verify)."""
        raise NotImplementedError


@dataclass(frozen=True)
class CoseWire(Wire):
    """CBOR + COSE (application/teep+cbor): the module functions above. `compat` names the older
    peers' deviations to tolerate on receipt (`encoding.liberal`; "" = strict)."""

    encoding: str = "cbor"
    container: str = "COSE"
    compat: str = ""

    def seal(self, msg: TeepMessage, keys: SigningKey | Sequence[SigningKey]) -> bytes:
        return seal(msg, keys)

    def is_signed(self, data: bytes) -> bool:
        return looks_like_cose(data)

    def peek(self, data: bytes) -> SignerHint:
        return peek_signers(data)

    def open(
        self,
        data: bytes,
        trust: Any,
        *,
        allowed_algs: Iterable[int] | None = None,
        hint: SignerHint | None = None,
    ) -> Opened:
        parsed = hint.parsed if hint is not None else None
        return open_signed(data, trust, allowed_algs=allowed_algs, compat=self.compat, parsed=parsed)

    def decode_bare(self, data: bytes) -> TeepMessage:
        return _decode_liberal(data, self.compat)[0]

    def describe(self, data: bytes | None) -> dict[str, Any] | None:
        return describe(data)


def _jose_names(cose_algs: Iterable[int]) -> list[str]:
    """JOSE alg names whose key algorithm is one of `cose_algs` (legacy numbers count as their
    successors)."""

    wanted = {normalize_alg(a) for a in cose_algs}
    return [name for name, alg in ACCEPTED_JOSE_ALGS.items() if alg in wanted]


@dataclass(frozen=True)
class JoseWire(Wire):
    """TEEP JSON twin + JWS (application/teep+json); conventions in `security.jose`."""

    encoding: str = "json"
    container: str = "JWS"

    @staticmethod
    def encode(msg: TeepMessage) -> bytes:
        """The JSON twin without insignificant whitespace (what goes inside the JWS)."""

        return json.dumps(
            to_jsonable(msg), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()

    def seal(self, msg: TeepMessage, keys: SigningKey | Sequence[SigningKey]) -> bytes:

        if not isinstance(keys, SigningKey) and len(keys) == 1:
            keys = keys[0]
        return sign_json(self.encode(msg), keys)

    def is_signed(self, data: bytes) -> bool:
        """A JWS JSON serialization is an object with a `payload` member; the bare twin has none."""
        try:
            self.peek(data)
        except NotSigned:
            return False
        return True

    def peek(self, data: bytes) -> SignerHint:

        try:
            parsed = parse_json(data)
            signers = tuple(
                (sig.kid, ACCEPTED_JOSE_ALGS.get(sig.alg) if isinstance(sig.alg, str) else None)
                for sig in parsed.signatures
            )
        except SecurityError as exc:
            raise NotSigned(f"not a JWS: {exc}") from None
        return SignerHint("JWS-general" if parsed.general else "JWS", signers)

    def open(
        self,
        data: bytes,
        trust: Any,
        *,
        allowed_algs: Iterable[int] | None = None,
        hint: SignerHint | None = None,
    ) -> Opened:
        # a JWS is parsed again: its JSON costs little next to the signature
        names = _jose_names(allowed_algs) if allowed_algs is not None else None
        verified = verify_json(data, trust, allowed_algs=names)
        payload = bytes(verified.payload)
        return Opened(
            message=from_json(payload),
            payload=payload,
            alg=ACCEPTED_JOSE_ALGS[verified.alg],
            kid=verified.kid,
            key=verified.key,
            structure="JWS",
        )

    def decode_bare(self, data: bytes) -> TeepMessage:

        return from_json(data)

    def describe(self, data: bytes | None) -> dict[str, Any] | None:

        if not data:
            return None
        if not self.is_signed(data):
            return {"jws": None, "size": len(data), "message": to_jsonable(from_json(data))}
        parsed = parse_json(data)
        return {
            "jws": "general" if parsed.general else "flattened",
            "signers": [
                {"alg": sig.alg, "kid": sig.kid.hex() if sig.kid else None} for sig in parsed.signatures
            ],
            "size": len(data),
            "message": to_jsonable(from_json(parsed.payload)),
        }


COSE = CoseWire()
JOSE = JoseWire()
WIRES: dict[str, Wire] = {"cbor": COSE, "json": JOSE}


def wire_for(encoding: str, compat: str = "") -> Wire:
    """The wire of a profile's `encoding` ("cbor" → COSE, "json" → JOSE); `compat` (a profile's
    compatibility setting, e.g. "draft-15") makes the COSE wire tolerate that era's deviations."""

    try:
        wire = WIRES[encoding]
    except KeyError:
        raise ConfigError(f"no TEEP wire for encoding {encoding!r} (known: {', '.join(WIRES)})") from None
    if not compat:
        return wire

    try:
        check_compat(compat)
    except TeepDecodeError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(wire, CoseWire):
        raise ConfigError(f"compatibility setting {compat!r} applies to the CBOR encoding only")
    return CoseWire(compat=compat)
