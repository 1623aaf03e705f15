"""The JSON twin of the TEEP CBOR encoding (application/teep+json), for the comparison with the JSON
binding. Lossless: model -> JSON -> model gives an equal model, extensions and label order included.
The mapping is documented in docs/teep-json.md; in short:

- one JSON object per message: `"type"` (the number), the options under their CDDL names in wire order
  (that order is the message's `label_order`), then the positional members under their CDDL names
  (`"supported-teep-cipher-suites"`, ..., `"err-code"`), then `"extra-positional"` if any;
- byte strings of known fields: base64url without padding; unknown labels: the decimal label as the
  member name, with the value in the generic form below;
- generic CBOR values: numbers, strings, true/false/null, arrays as themselves; byte strings
  `{"bstr": b64url}`, maps `{"map": [[key, value], ...]}`, tags `{"tag": n, "value": v}`, simple
  values `{"simple": n}`, undefined `{"undefined": true}`, non-finite floats `{"float": "NaN"}`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from cbor2 import CBORSimpleValue, CBORTag, FrozenDict, undefined

from teep_coap.encoding.cbor_codec import to_cbor_structure
from teep_coap.encoding.errors import TeepDecodeError, TeepEncodeError
from teep_coap.encoding.fields import (
    LABEL_NAMES,
    MESSAGE_CLASS,
    MESSAGE_NAMES,
    OPTION_FIELDS,
    POSITIONAL_FIELDS,
    RTC_FIELDS,
    SYSTEM_COMPONENT_ID,
)
from teep_coap.encoding.values import CHECKERS, Invalid, type_name
from teep_coap.model.codes import MEDIA_TYPE_TEEP_JSON
from teep_coap.model.teep import RequestedTcInfo, SystemPropertyClaims, TeepMessage

MEDIA_TYPE = MEDIA_TYPE_TEEP_JSON
TYPE_MEMBER = "type"
EXTRA_MEMBER = "extra-positional"
SYSTEM_COMPONENT_ID_NAME = "system-component-id"
DEFAULT_MAX_JSON_SIZE = 4 << 20

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_INT_KEY = re.compile(r"-?(0|[1-9][0-9]{0,19})")


class TeepJsonError(TeepDecodeError):
    """JSON that is not a valid TEEP message in the JSON twin mapping; the message says where."""


# ---------------------------------------------------------------- generic values


def generic_to_json(value: Any) -> Any:
    """A decoded CBOR value in its lossless JSON form."""
    t = type(value)
    if t is bytes:
        return {"bstr": b64url(value)}
    if t is list or t is tuple:
        return [generic_to_json(v) for v in value]
    if t is dict or t is FrozenDict:
        return {"map": [[generic_to_json(k), generic_to_json(v)] for k, v in value.items()]}
    if t is float and not math.isfinite(value):
        return {"float": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if t is CBORTag:
        return {"tag": value.tag, "value": generic_to_json(value.value)}
    if t is CBORSimpleValue:
        return {"simple": value.value}
    if value is undefined:
        return {"undefined": True}
    return value


_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def generic_from_json(value: Any, *, key: bool = False) -> Any:
    """The CBOR value of a generic JSON form; `key` makes arrays and maps hashable (map keys)."""
    t = type(value)
    if t is list:
        items = [generic_from_json(v, key=key) for v in value]
        return tuple(items) if key else items
    if t is dict:
        if len(value) == 1:
            ((name, inner),) = value.items()
            if name == "bstr":
                return b64url_decode(inner)
            if name == "map":
                if type(inner) is not list:
                    raise Invalid(TeepJsonError, '"map" must hold an array of [key, value] pairs')
                out: dict[Any, Any] = {}
                for i, pair in enumerate(inner):
                    if type(pair) is not list or len(pair) != 2:
                        raise Invalid(TeepJsonError, f'"map" entry {i} is not a [key, value] pair')
                    k = generic_from_json(pair[0], key=True)
                    if k in out:
                        raise Invalid(TeepJsonError, f'"map" entry {i} repeats a key')
                    out[k] = generic_from_json(pair[1], key=key)
                return FrozenDict(out) if key else out
            if name == "simple":
                if type(inner) is not int or not (0 <= inner <= 19 or 32 <= inner <= 255):
                    raise Invalid(TeepJsonError, '"simple" must be 0..19 or 32..255')
                return CBORSimpleValue(inner)
            if name == "undefined" and inner is True:
                return undefined
            if name == "float" and type(inner) is str and inner in _FLOATS:
                return _FLOATS[inner]
        if set(value) == {"tag", "value"}:
            if type(value["tag"]) is not int or value["tag"] < 0:
                raise Invalid(TeepJsonError, '"tag" must be an unsigned integer')
            return CBORTag(value["tag"], generic_from_json(value["value"], key=key))
        raise Invalid(
            TeepJsonError,
            f"object with members {sorted(value)[:4]} is not a generic CBOR value "
            '({"bstr"}, {"map"}, {"tag","value"}, {"simple"}, {"undefined"}, {"float"})',
        )
    if value is None or t in (bool, int, float, str):
        return value
    raise Invalid(TeepJsonError, f"unsupported JSON value of type {t.__name__}")


# ---------------------------------------------------------------- base64url


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: Any) -> bytes:
    """Strict base64url without padding: the only spelling that `b64url` produces."""
    if type(text) is not str:
        raise Invalid(TeepJsonError, f"expected a base64url string, got {_json_type(text)}")
    if _B64URL.fullmatch(text) is None:
        bad = next(c for c in text if not (c.isascii() and (c.isalnum() or c in "-_")))
        raise Invalid(
            TeepJsonError, f"base64url string contains {bad!r} (no padding, alphabet A-Z a-z 0-9 - _)"
        )
    if len(text) % 4 == 1:
        raise Invalid(TeepJsonError, f"base64url string has an impossible length {len(text)}")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - the checks above prevent it
        raise Invalid(TeepJsonError, f"invalid base64url: {exc}") from None
    if b64url(data) != text:
        raise Invalid(TeepJsonError, "base64url string has non-zero padding bits (not canonical)")
    return data


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- kinds: model <-> JSON


def _bytes_list_to(v: tuple[bytes, ...]) -> list[str]:
    return [b64url(b) for b in v]


def _bytes_list_from(v: Any) -> tuple[bytes, ...]:
    if type(v) is not list:
        raise Invalid(TeepJsonError, f"expected an array of base64url strings, got {_json_type(v)}")
    out = []
    for i, item in enumerate(v):
        try:
            out.append(b64url_decode(item))
        except Invalid as exc:
            raise exc.within(f"item {i}") from None
    return tuple(out)


def _nested_list(v: Any) -> Any:
    """JSON arrays to tuples (deep) for the numeric kinds; the checkers then validate the numbers."""
    if type(v) is list:
        return tuple(_nested_list(x) for x in v)
    return v


def _claims_to(c: SystemPropertyClaims) -> dict[str, Any]:
    items: dict[int, Any] = {SYSTEM_COMPONENT_ID: c.component_id, **dict(c.parameters)}
    order = list(c.label_order or ()) + [k for k in items if k not in (c.label_order or ())]
    out: dict[str, Any] = {}
    for k in order:
        if k not in items:
            continue
        if k == SYSTEM_COMPONENT_ID:
            out[SYSTEM_COMPONENT_ID_NAME] = _bytes_list_to(c.component_id)
        else:
            out[str(k)] = generic_to_json(items[k])
    return out


def _claims_from(v: Any) -> SystemPropertyClaims:
    if type(v) is not dict:
        raise Invalid(TeepJsonError, f"system-property-claims must be an object, got {_json_type(v)}")
    compid: tuple[bytes, ...] | None = None
    params: dict[int, Any] = {}
    order: list[int] = []
    for name, value in v.items():
        try:
            if name == SYSTEM_COMPONENT_ID_NAME:
                compid = _bytes_list_from(value)
                order.append(SYSTEM_COMPONENT_ID)
                continue
            label = _int_key(name)
            if label == SYSTEM_COMPONENT_ID:
                raise Invalid(TeepJsonError, f'label 0 must be written "{SYSTEM_COMPONENT_ID_NAME}"')
            params[label] = generic_from_json(value)
            order.append(label)
        except Invalid as exc:
            raise exc.within(f"member {name!r}") from None
    if compid is None:
        raise Invalid(TeepJsonError, f'system-property-claims has no "{SYSTEM_COMPONENT_ID_NAME}"')
    return SystemPropertyClaims(component_id=compid, parameters=params, label_order=tuple(order))


_RTC_NAMES = {label: LABEL_NAMES[label] for label, _a, _k in RTC_FIELDS}


def _rtc_to(r: RequestedTcInfo) -> dict[str, Any]:
    items: dict[int, Any] = {16: r.component_id}
    if r.tc_manifest_sequence_number is not None:
        items[17] = r.tc_manifest_sequence_number
    if r.have_binary is not None:
        items[18] = r.have_binary
    items.update(r.extensions)
    order = list(r.label_order or ()) + [k for k in items if k not in (r.label_order or ())]
    out: dict[str, Any] = {}
    for k in order:
        if k not in items:
            continue
        if k == 16:
            out[_RTC_NAMES[16]] = _bytes_list_to(r.component_id)
        elif k in _RTC_NAMES:
            out[_RTC_NAMES[k]] = items[k]
        else:
            out[str(k)] = generic_to_json(items[k])
    return out


def _rtc_from(v: Any) -> RequestedTcInfo:
    if type(v) is not dict:
        raise Invalid(TeepJsonError, f"requested-tc-info must be an object, got {_json_type(v)}")
    by_name = {name: label for label, name in _RTC_NAMES.items()}
    kwargs: dict[str, Any] = {}
    ext: dict[int, Any] = {}
    order: list[int] = []
    for name, value in v.items():
        try:
            if name in by_name:
                label = by_name[name]
                kwargs[{16: "component_id", 17: "tc_manifest_sequence_number", 18: "have_binary"}[label]] = (
                    _bytes_list_from(value) if label == 16 else value
                )
            else:
                label = _int_key(name)
                if label in _RTC_NAMES:
                    raise Invalid(TeepJsonError, f"label {label} must be written {_RTC_NAMES[label]!r}")
                ext[label] = generic_from_json(value)
            order.append(label)
        except Invalid as exc:
            raise exc.within(f"member {name!r}") from None
    if "component_id" not in kwargs:
        raise Invalid(TeepJsonError, 'requested-tc-info has no "component-id"')
    return RequestedTcInfo(**kwargs, extensions=ext, label_order=tuple(order))


_TO_JSON: Mapping[str, Callable[[Any], Any]] = {
    "token": b64url,
    "challenge": b64url,
    "bstr": b64url,
    "bstr_list": _bytes_list_to,
    "compid": _bytes_list_to,
    "compid_list": lambda v: [_bytes_list_to(c) for c in v],
    "tc_list": lambda v: [_claims_to(c) for c in v],
    "rtc_list": lambda v: [_rtc_to(r) for r in v],
    "suites": lambda v: [[list(op) for op in suite] for suite in v],
    "profiles": lambda v: [list(p) for p in v],
    "uint_list": list,
    "uint32_list": list,
    "any": generic_to_json,
}
_FROM_JSON: Mapping[str, Callable[[Any], Any]] = {
    "token": b64url_decode,
    "challenge": b64url_decode,
    "bstr": b64url_decode,
    "bstr_list": _bytes_list_from,
    "compid": _bytes_list_from,
    "compid_list": lambda v: tuple(_bytes_list_from(c) for c in v) if type(v) is list else v,
    "tc_list": lambda v: tuple(_claims_from(c) for c in v) if type(v) is list else v,
    "rtc_list": lambda v: tuple(_rtc_from(r) for r in v) if type(v) is list else v,
    "suites": _nested_list,
    "profiles": _nested_list,
    "uint_list": _nested_list,
    "uint32_list": _nested_list,
    "any": generic_from_json,
}


def _int_key(name: str) -> int:
    if _INT_KEY.fullmatch(name) is None:
        raise Invalid(
            TeepJsonError, f"unknown member {name!r} (unknown labels are written as decimal numbers)"
        )
    return int(name)


# ---------------------------------------------------------------- messages


def to_jsonable(msg: TeepMessage) -> dict[str, Any]:
    """The message as a JSON-ready dict (see the module docstring). Invalid models raise TeepEncodeError."""
    structure = to_cbor_structure(msg)  # validates the model and fixes the option order
    mtype = int(type(msg).type)
    names = {label: (attr, kind) for label, attr, kind in OPTION_FIELDS[type(msg).type]}
    out: dict[str, Any] = {TYPE_MEMBER: mtype}
    for label in structure[1]:
        spec = names.get(label)
        if spec is None:
            out[str(label)] = generic_to_json(msg.extensions[label])
        else:
            value = getattr(msg, spec[0])
            convert = _TO_JSON.get(spec[1])
            out[LABEL_NAMES[label]] = convert(value) if convert else value
    for attr, kind, cname in POSITIONAL_FIELDS[type(msg).type]:
        value = getattr(msg, attr)
        convert = _TO_JSON.get(kind)
        out[cname] = convert(value) if convert else value
    if msg.extra_positional:
        out[EXTRA_MEMBER] = [generic_to_json(v) for v in msg.extra_positional]
    return out


def from_jsonable(obj: Any) -> TeepMessage:
    """The message of a JSON-ready dict; raises TeepJsonError naming the member that is wrong."""
    if type(obj) is not dict:
        raise TeepJsonError(f"a TEEP message in JSON is an object, got {_json_type(obj)}")
    if TYPE_MEMBER not in obj:
        raise TeepJsonError('member "type" is missing')
    mtype = obj[TYPE_MEMBER]
    if type(mtype) is not int:
        raise TeepJsonError(f'member "type": expected a number, got {_json_type(mtype)}')
    cls = MESSAGE_CLASS.get(mtype)
    if cls is None:
        known = ", ".join(f"{int(t)} ({n})" for t, n in MESSAGE_NAMES.items())
        raise TeepJsonError(f'member "type": message type {mtype} is unknown; known: {known}')
    name = MESSAGE_NAMES[cls.type]
    options = {LABEL_NAMES[label]: (label, attr, kind) for label, attr, kind in OPTION_FIELDS[cls.type]}
    positional = {cname: (attr, kind) for attr, kind, cname in POSITIONAL_FIELDS[cls.type]}
    kwargs: dict[str, Any] = {}
    extensions: dict[int, Any] = {}
    order: list[int] = []
    for member, value in obj.items():
        if member == TYPE_MEMBER:
            continue
        try:
            if member in positional:
                attr, kind = positional[member]
                convert = _FROM_JSON.get(kind)
                kwargs[attr] = CHECKERS[kind](convert(value) if convert else value, 2, 16)
            elif member in options:
                label, attr, kind = options[member]
                convert = _FROM_JSON.get(kind)
                converted = convert(value) if convert else value
                kwargs[attr] = converted if kind == "any" else CHECKERS[kind](converted, 3, 16)
                order.append(label)
            elif member == EXTRA_MEMBER:
                if type(value) is not list:
                    raise Invalid(TeepJsonError, f"expected an array, got {_json_type(value)}")
                kwargs["extra_positional"] = tuple(generic_from_json(v) for v in value)
            else:
                label = _int_key(member)
                if label < 0:
                    raise Invalid(TeepJsonError, "option labels are unsigned integers")
                if label in LABEL_NAMES and LABEL_NAMES[label] in options:
                    raise Invalid(TeepJsonError, f"label {label} must be written {LABEL_NAMES[label]!r}")
                extensions[label] = generic_from_json(value)
                order.append(label)
        except Invalid as exc:
            raise TeepJsonError(f"{name} member {member!r}: {exc.detail}") from None
    for cname, (attr, _kind) in positional.items():
        if attr not in kwargs:
            raise TeepJsonError(f"{name}: positional member {cname!r} is missing")
    try:
        msg = cls(**kwargs, extensions=extensions, label_order=tuple(order))
        to_cbor_structure(msg)  # the same checks as the CBOR encoder (generic values, depth, ...)
    except TeepEncodeError as exc:
        raise TeepJsonError(str(exc)) from None
    except TypeError as exc:  # pragma: no cover - every member is mapped above
        raise TeepJsonError(f"{name}: {exc}") from None
    return msg


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise TeepJsonError(f"duplicate JSON member {k!r}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise TeepJsonError(f'JSON constant {name} is not allowed (write {{"float": "{name}"}})')


def to_json(msg: TeepMessage, *, indent: int | None = None) -> str:
    """The message as JSON text (application/teep+json)."""
    return json.dumps(to_jsonable(msg), indent=indent, ensure_ascii=False, allow_nan=False)


def from_json(text: str | bytes, *, max_size: int = DEFAULT_MAX_JSON_SIZE) -> TeepMessage:
    """The message of JSON text; strict: no duplicate members, no NaN/Infinity literals."""
    return from_jsonable(parse_json(text, max_size=max_size))


def parse_json(text: str | bytes, *, max_size: int = DEFAULT_MAX_JSON_SIZE) -> Any:
    """Strict JSON parsing (no duplicate members, no NaN/Infinity), errors as TeepJsonError."""
    if len(text) > max_size:
        raise TeepJsonError(f"JSON text is {len(text)} bytes, over the limit of {max_size}")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except TeepJsonError:
        raise
    except json.JSONDecodeError as exc:
        raise TeepJsonError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise TeepJsonError(f"JSON text rejected: {type(exc).__name__}: {exc}") from None
    return obj


__all__ = [
    "MEDIA_TYPE",
    "TeepJsonError",
    "b64url",
    "b64url_decode",
    "from_json",
    "from_jsonable",
    "generic_from_json",
    "generic_to_json",
    "parse_json",
    "to_json",
    "to_jsonable",
    "type_name",
]
