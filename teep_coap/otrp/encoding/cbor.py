"""OTrP ↔ CBOR: a local, non-interoperable mapping (docs/otrp-cbor-mapping.md).

No OTrP CBOR label table was ever published (draft-liu-opentrustprotocol-cbor-00 is not available),
so this module defines one. Integer labels keep the comparison with TEEP (which uses integer labels)
fair: member names become small integers (the most frequent ones below 24, one byte), message names
become type numbers, `status` and error codes become integers; binary members are byte strings.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import cbor2

from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.encoding.untrusted import check_untrusted_cbor
from teep_coap.otrp.encoding.tree import parse_tbs, to_tree
from teep_coap.otrp.model import (
    CreateSDRequest,
    CreateSDResponse,
    DeleteSDRequest,
    DeleteSDResponse,
    DeleteTARequest,
    DeleteTAResponse,
    GetDeviceStateRequest,
    GetDeviceTEEStateResponse,
    InstallTARequest,
    InstallTAResponse,
    OtrpDecodeError,
    OtrpErrorCode,
    OtrpMessage,
    UpdateSDRequest,
    UpdateSDResponse,
    UpdateTARequest,
    UpdateTAResponse,
)

# message type numbers: the wire array's first element and the TBS array's first element
TYPE_GET_DEVICE_STATE_RESPONSE = 2  # the outer array of per-TEE responses
TYPE_BROKER_ERROR = 16
MESSAGE_TYPE: dict[type[OtrpMessage], int] = {
    GetDeviceStateRequest: 1,
    GetDeviceTEEStateResponse: 3,
    CreateSDRequest: 4,
    CreateSDResponse: 5,
    UpdateSDRequest: 6,
    UpdateSDResponse: 7,
    DeleteSDRequest: 8,
    DeleteSDResponse: 9,
    InstallTARequest: 10,
    InstallTAResponse: 11,
    UpdateTARequest: 12,
    UpdateTAResponse: 13,
    DeleteTARequest: 14,
    DeleteTAResponse: 15,
}
TYPE_TO_CLASS: dict[int, type[OtrpMessage]] = {v: k for k, v in MESSAGE_TYPE.items()}

# member labels: one flat table (names are unique in meaning across objects)
LABELS: dict[str, int] = {
    "ver": 1,
    "rid": 2,
    "tid": 3,
    "tee": 4,
    "nextdsi": 5,
    "dsihash": 6,
    "content": 7,
    "status": 8,
    "reason": 9,
    "did": 10,
    "dsi": 11,
    "edsi": 12,
    "encrypted_ta": 13,
    "tamid": 14,
    "spid": 15,
    "sdname": 16,
    "taid": 17,
    "key": 18,
    "iv": 19,
    "alg": 20,
    "ciphertadata": 21,
    "signerreq": 22,
    "ocspdat": 23,
    "supportedsigalgs": 24,
    "spcert": 25,
    "teespaik": 26,
    "changes": 27,
    "newsdname": 28,
    "newspid": 29,
    "deloldspcert": 30,
    "renewteespaik": 31,
    "teespaiktype": 32,
    "cert": 33,
    "deleteta": 34,
    "cipherpdata": 35,
    "ciphernewtadata": 36,
    "ciphernewpdata": 37,
    "tfwdata": 38,
    "tbs": 39,
    "sigalg": 40,
    "sig": 41,
    "name": 42,
    "cacert": 43,
    "sdlist": 44,
    "cnt": 45,
    "sd": 46,
    "talist": 47,
    "taname": 48,
    "teeaiklist": 49,
    "spaik": 50,
    "spaiktype": 51,
    "error-code": 52,
    "error-message": 53,
    "requestedtalist": 54,
    "icaocspdat": 55,
    "errcode": 56,
}
NAMES: dict[int, str] = {v: k for k, v in LABELS.items()}
STATUS_CODES: dict[str, int] = {"pass": 0, "fail": 1}
STATUS_NAMES: dict[int, str] = {v: k for k, v in STATUS_CODES.items()}
ERROR_CODES: dict[str, int] = {code.value: i for i, code in enumerate(OtrpErrorCode, start=1)}
ERROR_NAMES: dict[int, str] = {v: k for k, v in ERROR_CODES.items()}
_VALUE_MAPS_OUT = {"status": STATUS_CODES, "error-code": ERROR_CODES, "errcode": ERROR_CODES}
_VALUE_MAPS_IN = {"status": STATUS_NAMES, "error-code": ERROR_NAMES, "errcode": ERROR_NAMES}

MAX_CBOR_DEPTH = 32
OTRP_TAGS = frozenset({18, 96})  # COSE_Sign1 and COSE_Encrypt: the only tags of our OTrP mapping


def dumps(obj: Any) -> bytes:
    """Deterministic-length CBOR (cbor2 writes definite lengths and shortest integers)."""
    return cbor2.dumps(obj)


def loads(data: bytes, what: str = "CBOR") -> Any:
    """One complete CBOR item, nothing after it; any decoder failure becomes `OtrpDecodeError`."""
    if not isinstance(data, bytes | bytearray):
        raise OtrpDecodeError(what, "expected bytes")
    try:  # before cbor2, also on unverified input: see encoding.untrusted
        check_untrusted_cbor(bytes(data), allowed_tags=OTRP_TAGS, max_depth=MAX_CBOR_DEPTH)
    except TeepDecodeError as exc:
        raise OtrpDecodeError(what, f"not valid CBOR for OTrP: {exc}") from None
    stream = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # cbor2 raises many types (CBORDecodeError, ValueError, OverflowError...)
        raise OtrpDecodeError(what, f"not valid CBOR: {str(exc)[:120]}") from None
    if stream.tell() != len(data):
        raise OtrpDecodeError(what, f"{len(data) - stream.tell()} bytes after the CBOR item")
    return obj


def labels_out(tree: Any, parent: str = "") -> Any:
    """Names → integer labels (recursively), mapped values for status / error codes."""
    if isinstance(tree, Mapping):
        out: dict[int, Any] = {}
        for key, value in tree.items():
            if key not in LABELS:
                raise OtrpDecodeError(str(key), "member has no CBOR label")
            vmap = _VALUE_MAPS_OUT.get(key)
            out[LABELS[key]] = vmap[value] if vmap is not None and value in vmap else labels_out(value, key)
        return out
    if isinstance(tree, list | tuple):
        return [labels_out(v, parent) for v in tree]
    return tree


def labels_in(obj: Any, path: str = "CBOR", depth: int = 0) -> Any:
    """Integer labels → names; only the types the mapping uses are allowed."""
    if depth > MAX_CBOR_DEPTH:
        raise OtrpDecodeError(path, f"nested deeper than {MAX_CBOR_DEPTH}")
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if not isinstance(key, int) or isinstance(key, bool) or key not in NAMES:
                raise OtrpDecodeError(f"{path}.{key!r:.20}", "unknown label")
            name = NAMES[key]
            vmap = _VALUE_MAPS_IN.get(name)
            if vmap is not None:
                if not isinstance(value, int) or isinstance(value, bool) or value not in vmap:
                    raise OtrpDecodeError(f"{path}.{name}", f"unknown {name} value {value!r:.20}")
                out[name] = vmap[value]
            else:
                out[name] = labels_in(value, f"{path}.{name}", depth + 1)
        return out
    if isinstance(obj, list):
        return [labels_in(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
    if isinstance(obj, bool | str | bytes) or (isinstance(obj, int) and -(2**63) <= obj < 2**64):
        return obj
    raise OtrpDecodeError(path, f"unexpected CBOR item {type(obj).__name__}")


def tbs_item(msg: OtrpMessage, tree: Mapping[str, Any] | None = None) -> list[Any]:
    """`[type, {labels}]`: the CBOR to-be-signed object (cf. JSON `{"<Cmd>TBS…": {...}}`)."""
    body = to_tree(msg, text=False) if tree is None else tree
    return [MESSAGE_TYPE[type(msg)], labels_out(body)]


def encode_tbs(msg: OtrpMessage) -> bytes:
    """The bare TBS object with its encrypted members in clear."""
    return dumps(tbs_item(msg))


def split_tbs(obj: Any, what: str = "TBS") -> tuple[type[OtrpMessage], dict[str, Any]]:
    """`[type, {labels}]` → (message class, named tree), without parsing the members yet."""
    if not isinstance(obj, list) or len(obj) != 2:
        raise OtrpDecodeError(what, "expected [type, {members}]")
    kind, body = obj
    cls = TYPE_TO_CLASS.get(kind) if isinstance(kind, int) and not isinstance(kind, bool) else None
    if cls is None:
        raise OtrpDecodeError(what, f"unknown OTrP message type {kind!r:.20}")
    if not isinstance(body, dict):
        raise OtrpDecodeError(cls.TBS_NAME, "expected a map of members")
    named: dict[str, Any] = labels_in(body, cls.TBS_NAME)
    return cls, named


def decode_tbs(data: bytes) -> OtrpMessage:
    """Parse a bare CBOR TBS object (encrypted members in clear)."""
    cls, named = split_tbs(loads(data, "TBS"))
    return parse_tbs({cls.TBS_NAME: named}, text=False)
