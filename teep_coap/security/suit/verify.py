"""Authenticity of a SUIT envelope: manifest digest, COSE signature, severable-member digests.

The COSE work is done by `teep_coap.security.cose` (python-cwt underneath); this module only decides
what is signed (the bstr-encoded SUIT_Digest, as a detached payload) and maps COSE failures onto the
SUIT report reasons.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cbor2

from teep_coap.security import cose
from teep_coap.security import errors as sec_errors
from teep_coap.security.suit.codec import loads_exact, parse_envelope_header
from teep_coap.security.suit.errors import (
    ManifestDigestMismatch,
    SuitError,
    SuitParseError,
    Unauthorised,
    UnsupportedAlgorithm,
    UnsupportedCose,
)
from teep_coap.security.suit.model import Envelope, bstr_header

_COSE_SIGN1_TAG = 18
_COSE_SIGN_TAG = 98
_MAC_TAGS = {17: "COSE_Mac0", 97: "COSE_Mac"}


def _map_cose_error(exc: sec_errors.SecurityError) -> SuitError:
    """Translate a security-layer failure into the SUIT reason an Agent reports."""
    msg = f"authentication block: {exc}"
    if isinstance(exc, sec_errors.UnsupportedAlgorithm):
        return UnsupportedAlgorithm(msg)
    if isinstance(exc, sec_errors.CriticalHeaderNotUnderstood):
        return UnsupportedCose(msg)
    if isinstance(exc, sec_errors.CoseDecodeError):
        return SuitParseError(msg)
    if isinstance(exc, sec_errors.UnknownKid):
        return Unauthorised(f"authentication block: signer not trusted ({exc})")
    return Unauthorised(msg)


def check_manifest_digest(env: Envelope) -> None:
    """The manifest bstr must hash to the digest the signature covers."""
    if not env.digest.matches(env.manifest_bstr):
        raise ManifestDigestMismatch(
            "manifest does not match the digest in the authentication wrapper (tampered manifest?)"
        )


def check_severed_members(env: Envelope) -> None:
    """Severed members present in the envelope must match the digests the manifest holds.

    Runs after the signature check: it is the first step that needs the (now authentic) manifest.
    """
    if not env.severable:
        return
    for key, raw in env.severable.items():
        expected = env.manifest.severed.get(key)
        if expected is None:
            raise SuitParseError(
                f"envelope carries severable member {key} but the manifest does not hold its digest"
            )
        if not expected.matches(bstr_header(len(raw)) + raw):
            raise Unauthorised(f"severable member {key} does not match its digest in the manifest")


def _diagnose_block(block: bytes) -> None:
    """Why a block is not a COSE signature we handle, as the SUIT reason (raises), else returns."""
    obj = loads_exact(block, "authentication block")
    if not isinstance(obj, cbor2.CBORTag):
        raise UnsupportedCose("authentication block must be a tagged COSE structure (COSE_Sign1_Tagged)")
    if obj.tag in _MAC_TAGS:
        raise UnsupportedCose(f"authentication block is {_MAC_TAGS[obj.tag]}; only signatures are supported")
    if obj.tag not in (_COSE_SIGN1_TAG, _COSE_SIGN_TAG):
        raise UnsupportedCose(f"authentication block has CBOR tag {obj.tag}, not a COSE signature")
    if isinstance(obj.value, list) and len(obj.value) >= 3 and obj.value[2] is not None:
        raise UnsupportedCose("authentication block must have a nil (detached) payload")


def _verify_block(block: bytes, digest_raw: bytes, trust: Any) -> tuple[bytes | None, int]:
    """Verify one authentication block over the detached digest bstr.

    `cose.verify` parses the block itself and refuses everything `_diagnose_block` refuses (a MAC,
    another tag, an attached payload, trailing bytes), so the block is decoded a second time only
    on failure, to name the SUIT reason; the success path pays for one decode.
    """

    try:
        verified = cose.verify(block, trust, detached_payload=digest_raw)
    except sec_errors.SecurityError as exc:
        _diagnose_block(block)
        raise _map_cose_error(exc) from None
    return verified.kid, int(verified.alg)


def _with_signer(env: Envelope, kid: bytes | None, alg: int) -> Envelope:
    """`env` marked verified; a manifest already decoded (by `parse_envelope`) is carried over."""
    out = dataclasses.replace(env, verified=True, signer_kid=kid, signer_alg=alg)
    if env.manifest_decoded:
        out.__dict__["manifest"] = env.manifest  # the cached_property slot, not a dataclass field
    return out


def verify_envelope(data: bytes | Envelope, trust: Any) -> Envelope:
    """Check that `data` is authentic; returns the envelope with `verified=True`.

    Order (SUIT: authenticate before interpreting): top-level structure, manifest digest, signature
    (any authentication block signed by a key in `trust`, a `TrustStore`), severed members. The
    manifest is decoded only after that, on first access of `Envelope.manifest` (a malformed but
    authentic manifest raises `SuitParseError` there). Raises a `SuitError` subclass whose `reason`
    is the SUIT report reason.
    """
    fresh = not isinstance(data, Envelope)
    env = data if isinstance(data, Envelope) else parse_envelope_header(data)
    check_manifest_digest(env)
    if trust is None:
        raise Unauthorised("no trusted keys given: the envelope cannot be authenticated")
    if not env.auth_blocks:
        raise Unauthorised("authentication wrapper holds no authentication block (unsigned manifest)")
    first_error: SuitError | None = None
    for block in env.auth_blocks:
        try:
            kid, alg = _verify_block(block, env.digest_raw, trust)
        except SuitError as exc:
            first_error = first_error or exc
            continue
        check_severed_members(env)
        if fresh:
            # Built a few lines up and not yet seen by anyone: set the signer in place instead of
            # copying all fields (dataclasses.replace costs ~2 µs, 5% of the signature check).
            object.__setattr__(env, "verified", True)
            object.__setattr__(env, "signer_kid", kid)
            object.__setattr__(env, "signer_alg", alg)
            return env
        return _with_signer(env, kid, alg)
    assert first_error is not None
    raise first_error
