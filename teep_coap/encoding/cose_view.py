"""Display-only view of a COSE_Sign1 (tag 18) / COSE_Sign (tag 98) object wrapping a TEEP message.

Nothing here verifies anything (that is `teep_coap.security.cose`): it splits the structure with cbor2
so the CLI can show the headers next to the decoded payload, and puts the same structure back
together from that view so that `decode` then `encode` gives the original bytes.
Header labels are shown as JSON member names: integer labels as decimal strings, text labels as
themselves (a text label that looks like an integer would be read back as the integer).
"""

from __future__ import annotations

import re
from typing import Any

import cbor2
from cbor2 import CBORTag

from teep_coap.encoding.cbor_codec import decode_value
from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.encoding.json_codec import b64url, b64url_decode, generic_from_json, generic_to_json
from teep_coap.encoding.values import Invalid

COSE_SIGN1 = 18
COSE_SIGN = 98
COSE_NAMES = {COSE_SIGN1: "COSE_Sign1", COSE_SIGN: "COSE_Sign"}
_INT = re.compile(r"-?(0|[1-9][0-9]*)")


class CoseViewError(TeepDecodeError):
    """A tagged COSE object whose layout is not COSE_Sign1/COSE_Sign (RFC 9052 §4)."""


def is_cose(data: bytes) -> bool:
    """True if the bytes start with tag 18 (0xd2) or tag 98 (0xd8 0x62)."""
    return data[:1] == b"\xd2" or data[:2] == b"\xd8\x62"


def _headers_to_json(headers: Any, where: str) -> dict[str, Any]:
    if type(headers) is not dict:
        raise CoseViewError(f"{where}: header map expected, got {type(headers).__name__}")
    return {str(k) if type(k) in (int, str) else repr(k): generic_to_json(v) for k, v in headers.items()}


def _headers_from_json(obj: Any, where: str) -> dict[Any, Any]:
    if type(obj) is not dict:
        raise CoseViewError(f"{where}: expected an object of header parameters")
    try:
        return {(int(k) if _INT.fullmatch(k) else k): generic_from_json(v) for k, v in obj.items()}
    except Invalid as exc:
        raise CoseViewError(f"{where}: {exc.detail}") from None


def _protected(raw: Any, where: str) -> dict[str, Any]:
    if type(raw) is not bytes:
        raise CoseViewError(f"{where}: protected header must be a byte string")
    return _headers_to_json(decode_value(raw) if raw else {}, where)


def split_cose(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(the view of the COSE wrapper, the payload bytes) of a tagged COSE_Sign1 / COSE_Sign."""
    obj = decode_value(data)
    if type(obj) is not CBORTag or obj.tag not in COSE_NAMES:
        raise CoseViewError("not a COSE_Sign1 (tag 18) or COSE_Sign (tag 98) object")
    body = obj.value
    size = 4
    if type(body) is not list or len(body) != size:
        raise CoseViewError(f"{COSE_NAMES[obj.tag]} must be an array of 4 elements")
    prot, unprot, payload, last = body
    if type(payload) is not bytes:
        raise CoseViewError(
            f"{COSE_NAMES[obj.tag]} payload must be a byte string (detached payloads carry no message)"
        )
    view: dict[str, Any] = {
        "type": COSE_NAMES[obj.tag],
        "protected": _protected(prot, "protected"),
        "protected-bstr": b64url(prot) if type(prot) is bytes else None,
        "unprotected": _headers_to_json(unprot, "unprotected"),
    }
    if obj.tag == COSE_SIGN1:
        if type(last) is not bytes:
            raise CoseViewError("COSE_Sign1 signature must be a byte string")
        view["signatures"] = [{"signature": b64url(last)}]
    else:
        if type(last) is not list or not last:
            raise CoseViewError("COSE_Sign signatures must be a non-empty array")
        sigs = []
        for i, sig in enumerate(last):
            if type(sig) is not list or len(sig) != 3 or type(sig[2]) is not bytes:
                raise CoseViewError(f"COSE_Sign signature {i} must be [protected, unprotected, signature]")
            sigs.append(
                {
                    "protected": _protected(sig[0], f"signature {i} protected"),
                    "protected-bstr": b64url(sig[0]),
                    "unprotected": _headers_to_json(sig[1], f"signature {i} unprotected"),
                    "signature": b64url(sig[2]),
                }
            )
        view["signatures"] = sigs
    view["verified"] = False
    return view, payload


def join_cose(view: Any, payload: bytes) -> bytes:
    """The COSE object of a view made by `split_cose`, around `payload` (byte-exact round trip)."""
    try:
        if type(view) is not dict or view.get("type") not in ("COSE_Sign1", "COSE_Sign"):
            raise CoseViewError('"cose"."type" must be "COSE_Sign1" or "COSE_Sign"')
        prot = b64url_decode(view.get("protected-bstr", ""))
        unprot = _headers_from_json(view.get("unprotected", {}), "unprotected")
        sigs = view.get("signatures")
        if type(sigs) is not list or not sigs or not all(type(s) is dict for s in sigs):
            raise CoseViewError('"cose"."signatures" must be a non-empty array of objects')
        if view["type"] == "COSE_Sign1":
            if len(sigs) != 1:
                raise CoseViewError("COSE_Sign1 has exactly one signature")
            return cbor2.dumps(
                CBORTag(COSE_SIGN1, [prot, unprot, payload, b64url_decode(sigs[0].get("signature"))])
            )
        signatures = [
            [
                b64url_decode(s.get("protected-bstr", "")),
                _headers_from_json(s.get("unprotected", {}), f"signature {i} unprotected"),
                b64url_decode(s.get("signature")),
            ]
            for i, s in enumerate(sigs)
        ]
        return cbor2.dumps(CBORTag(COSE_SIGN, [prot, unprot, payload, signatures]))
    except Invalid as exc:
        raise CoseViewError(f"cose: {exc.detail}") from None
