"""OTrP objects ↔ "trees" (dicts, lists, str, bool, int, bytes): the member tables of otrp/model/ read
and written, shared by the JSON form (otrp/encoding/json.py) and the CBOR mapping (otrp/encoding/cbor.py).

With ``text=True`` binary members are written in their JSON text form (standard base64 with padding; hex
where the draft says hex) and parsed leniently in the variants the draft and its samples use
(base64url, string booleans, a lone string where an array is meant, `reason` as string or object).
With ``text=False`` (the CBOR mapping) binary members are byte strings and booleans must be booleans.
Parsing is strict otherwise: a missing mandatory member or an unknown member raises `OtrpDecodeError`
naming the message and the member (the draft: "All JSON elements are mandatory unless marked optional";
ERR_REQUEST_INVALID covers "unknown member").
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from teep_coap.otrp.model import (
    BY_TBS_NAME,
    SIGNATURE_ALGS,
    STATUS_VALUES,
    BrokerError,
    Kind,
    Member,
    OtrpDecodeError,
    OtrpErrorCode,
    OtrpMessage,
    OtrpObject,
    Reason,
)

# CreateSD's list spells it without the final S; read both, write the §8 spelling.
_ERROR_CODE_ALIASES = {"ERR_SD_ALREADY_EXIST": OtrpErrorCode.ERR_SD_ALREADY_EXISTS}


T = TypeVar("T", bound=OtrpObject)
_B64_RE = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")
_HEX_RE = re.compile(r"^(?:[0-9A-Fa-f]{2})*$")


def b64decode_any(text: str, path: str) -> bytes:
    """Standard base64 or base64url, padded or not (the samples mix both); whitespace is not allowed."""
    if not _B64_RE.match(text):
        raise OtrpDecodeError(path, "not base64 or base64url text")
    url = "-" in text or "_" in text
    if url and ("+" in text or "/" in text):
        raise OtrpDecodeError(path, "mixes base64 and base64url alphabets")
    body = text.rstrip("=")
    if len(body) % 4 == 1:
        raise OtrpDecodeError(path, "base64 text has an impossible length")
    padded = body + "=" * (-len(body) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_" if url else None, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise OtrpDecodeError(path, f"bad base64: {exc}") from None


def b64encode_std(data: bytes) -> str:
    """OTrP-specific binary members: standard base64 with padding [draft]."""
    return base64.b64encode(data).decode("ascii")


def _type_name(value: object) -> str:
    return type(value).__name__


def _parse_bool(value: object, path: str, text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if text and isinstance(value, str):
        # samples write "true"/"false", " false" (A20) and "0"/"1" (A10, A12)
        word = value.strip().lower()
        if word in ("true", "1"):
            return True
        if word in ("false", "0"):
            return False
    raise OtrpDecodeError(path, f"expected a boolean, got {_type_name(value)} {value!r:.40}")


def _parse_bytes(value: object, path: str, text: bool, hex_form: bool = False) -> bytes:
    if not text:
        if isinstance(value, bytes):
            return value
        raise OtrpDecodeError(path, f"expected a byte string, got {_type_name(value)}")
    if not isinstance(value, str):
        raise OtrpDecodeError(
            path, f"expected a {'hex' if hex_form else 'base64'} string, got {_type_name(value)}"
        )
    if hex_form and _HEX_RE.match(value):
        return bytes.fromhex(value)
    return b64decode_any(value, path)


def _parse_str(value: object, path: str) -> str:
    if isinstance(value, str):
        return value
    raise OtrpDecodeError(path, f"expected a string, got {_type_name(value)}")


def _parse_sigalg(value: object, path: str, text: bool) -> str:
    name = _parse_str(value, path)
    if name in SIGNATURE_ALGS:
        return name
    if text:
        # sample A19 base64-encodes it ("UlMyNTY=")
        try:
            decoded = b64decode_any(name, path).decode("ascii")
        except (OtrpDecodeError, UnicodeDecodeError):
            decoded = ""
        if decoded in SIGNATURE_ALGS:
            return decoded
    raise OtrpDecodeError(path, f"unknown signature algorithm {name!r:.40}")


def parse_error_code(value: object, path: str) -> OtrpErrorCode:
    name = _parse_str(value, path)
    if name in _ERROR_CODE_ALIASES:
        return _ERROR_CODE_ALIASES[name]
    try:
        return OtrpErrorCode(name)
    except ValueError:
        raise OtrpDecodeError(path, f"unknown error code {name!r:.60}") from None


def to_tree(obj: OtrpObject, text: bool) -> dict[str, Any]:
    """The object as a JSON-like tree (see module doc for `text`)."""
    out: dict[str, Any] = {}
    for m in obj.MEMBERS:
        value = getattr(obj, m.attr)
        if value is None:
            if not m.optional:
                raise OtrpDecodeError(f"{type(obj).__name__}.{m.wire}", "mandatory member is None")
            continue
        out[m.wire] = _member_to_tree(m, value, text)
    return out


def from_tree(cls: type[T], tree: object, text: bool, path: str | None = None) -> T:
    """Strict parse of a tree; `path` prefixes error messages (message and member names)."""
    where = path or cls.__name__
    if not isinstance(tree, Mapping):
        raise OtrpDecodeError(where, f"expected an object, got {_type_name(tree)}")
    known = {m.wire for m in cls.MEMBERS}
    for key in tree:
        if key not in known:
            raise OtrpDecodeError(f"{where}.{key}", "unknown member")
    kwargs: dict[str, Any] = {}
    for m in cls.MEMBERS:
        sub = f"{where}.{m.wire}"
        if m.wire not in tree:
            if not m.optional:
                raise OtrpDecodeError(sub, "mandatory member is missing")
            kwargs[m.attr] = None
            continue
        kwargs[m.attr] = _member_from_tree(m, tree[m.wire], text, sub)
    obj = cls(**kwargs)
    obj.check(where)
    return obj


def _member_to_tree(m: Member, value: Any, text: bool) -> Any:
    k = m.kind
    if k in (Kind.STR, Kind.ID, Kind.BOOL, Kind.INT, Kind.SIGALG, Kind.STATUS):
        return value
    if k is Kind.ERRCODE:
        return str(value)
    if k is Kind.STR_LIST:
        return list(value)
    if k is Kind.BYTES:
        return b64encode_std(value) if text else value
    if k is Kind.HEX:
        return value.hex() if text else value
    if k is Kind.BYTES_LIST:
        return [b64encode_std(v) if text else v for v in value]
    if k is Kind.HEX_LIST:
        return [v.hex() if text else v for v in value]
    if k is Kind.REASON:
        return to_tree(value, text)
    if k is Kind.ENVELOPE:
        if isinstance(value, bytes):
            return b64encode_std(value) if text else value
        return dict(value)
    if k is Kind.OBJ:
        return to_tree(value, text)
    if k is Kind.OBJ_LIST:
        return [to_tree(v, text) for v in value]
    raise AssertionError(k)


def _member_from_tree(m: Member, value: object, text: bool, path: str) -> Any:
    k = m.kind
    if k is Kind.STR:
        return _parse_str(value, path)
    if k is Kind.ID:
        if text and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return _parse_str(value, path)
    if k is Kind.BOOL:
        return _parse_bool(value, path, text)
    if k is Kind.INT:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if text and isinstance(value, str) and value.isdigit():  # sample: "cnt": "1"
            return int(value)
        raise OtrpDecodeError(path, f"expected a non-negative integer, got {_type_name(value)}")
    if k is Kind.BYTES:
        return _parse_bytes(value, path, text)
    if k is Kind.HEX:
        return _parse_bytes(value, path, text, hex_form=True)
    if k in (Kind.BYTES_LIST, Kind.HEX_LIST, Kind.STR_LIST):
        if text and isinstance(value, str):  # A01: "ocspdat"/"supportedsigalgs" as a lone string
            value = [value]
        if not isinstance(value, list):
            raise OtrpDecodeError(path, f"expected an array, got {_type_name(value)}")
        if k is Kind.STR_LIST:
            return tuple(_parse_str(v, f"{path}[{i}]") for i, v in enumerate(value))
        return tuple(
            _parse_bytes(v, f"{path}[{i}]", text, hex_form=k is Kind.HEX_LIST) for i, v in enumerate(value)
        )
    if k is Kind.SIGALG:
        return _parse_sigalg(value, path, text)
    if k is Kind.STATUS:
        status = _parse_str(value, path)
        if status not in STATUS_VALUES:
            raise OtrpDecodeError(path, f'expected "pass" or "fail", got {status!r:.40}')
        return status
    if k is Kind.ERRCODE:
        return parse_error_code(value, path)
    if k is Kind.REASON:
        return parse_reason(value, text, path)
    if k is Kind.ENVELOPE:
        if isinstance(value, Mapping):
            if not text:
                raise OtrpDecodeError(path, "expected a byte string (COSE_Encrypt)")
            return dict(value)
        return _parse_bytes(value, path, text)
    if k is Kind.OBJ:
        assert m.cls is not None
        return from_tree(m.cls, value, text, path)
    if k is Kind.OBJ_LIST:
        assert m.cls is not None
        if not isinstance(value, list):
            raise OtrpDecodeError(path, f"expected an array, got {_type_name(value)}")
        return tuple(from_tree(m.cls, v, text, f"{path}[{i}]") for i, v in enumerate(value))
    raise AssertionError(k)


# --------------------------------------------------------------------------------------------------


def parse_reason(value: object, text: bool, path: str) -> Reason:
    """`reason` as an object, or a bare string: an error code if it names one, else the message."""
    if isinstance(value, str):
        try:
            return Reason(error_code=parse_error_code(value, path))
        except OtrpDecodeError:
            return Reason(error_message=value)
    return from_tree(Reason, value, text, path)


def tbs_tree(msg: OtrpMessage, text: bool) -> dict[str, Any]:
    """`{"<Cmd>TBS…": {...}}` with encrypted members in clear (the "bare" message)."""
    return {msg.TBS_NAME: to_tree(msg, text)}


def parse_tbs(tree: object, text: bool) -> OtrpMessage:
    """`{"<Cmd>TBS…": {...}}` (encrypted members already in clear) → message object."""
    if not isinstance(tree, Mapping) or len(tree) != 1:
        raise OtrpDecodeError("TBS", "expected an object with exactly one member naming the message")
    ((name, body),) = tree.items()
    cls = BY_TBS_NAME.get(name) if isinstance(name, str) else None
    if cls is None:
        raise OtrpDecodeError(str(name)[:60], "unknown OTrP message name")
    return from_tree(cls, body, text, name)


def parse_broker_error(tree: object, text: bool) -> BrokerError:
    """Both Broker error forms: `{"OTrPBrokerError": {...}}` and `{"status": {"result": "fail", ...}}`."""
    if isinstance(tree, Mapping) and set(tree) == {"status"} and isinstance(tree["status"], Mapping):
        body = tree["status"]
        unknown = set(body) - {"result", "error-code", "error-message"}
        if unknown:
            raise OtrpDecodeError(f"status.{sorted(unknown)[0]}", "unknown member")
        if body.get("result") != "fail":
            raise OtrpDecodeError("status.result", 'expected "fail"')
        return BrokerError(errcode=parse_error_code(body.get("error-code"), "status.error-code"))
    if isinstance(tree, Mapping) and set(tree) == {BrokerError.OUTER_NAME}:
        return from_tree(BrokerError, tree[BrokerError.OUTER_NAME], text, BrokerError.OUTER_NAME)
    raise OtrpDecodeError("OTrPBrokerError", "not a Broker error object")
