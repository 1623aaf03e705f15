"""Checks of field values against the CDDL, shared by the CBOR decoder, the encoder and the JSON twin.

Each checker takes a value as cbor2 decodes it (lists, dicts) or as the model holds it (tuples) and
returns the model form (tuples), or raises `Invalid` with the error class and a detail without
location; the caller adds where (message, label, element) and turns it into its own error family
(`TeepDecodeError` subclasses when decoding, `TeepEncodeError` when encoding, `TeepJsonError` for JSON).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import cbor2
from cbor2 import CBORSimpleValue, CBORTag, FrozenDict, undefined

from teep_coap.encoding.errors import (
    MissingMember,
    NotCbor,
    SizeOutOfRange,
    TeepDecodeError,
    TooDeep,
    UnsupportedValue,
    WrongType,
)
from teep_coap.encoding.fields import (
    INT64_MIN,
    RTC_FIELDS,
    SIZE_LIMITS,
    SYSTEM_COMPONENT_ID,
    UINT32_MAX,
    UINT64_MAX,
    label_name,
)
from teep_coap.encoding.scanner import REFUSED_TAGS
from teep_coap.model.teep import RequestedTcInfo, SystemPropertyClaims

_T = TypeVar("_T")


def fast_builder(cls: type[_T]) -> Callable[[dict[str, Any]], _T]:
    """A fast constructor for checked values: the frozen dataclass `__init__` (one
    `object.__setattr__` per field) is skipped and the instance dict is filled at once. Falls back to
    the real constructor if the model ever gains slots or a `__post_init__`.
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if hasattr(cls, "__slots__") or hasattr(cls, "__post_init__"):
        return lambda kwargs: cls(**kwargs)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    factories = [(f.name, f.default_factory) for f in fields if f.default_factory is not dataclasses.MISSING]
    new = object.__new__
    count = len(fields)

    def build(kwargs: dict[str, Any]) -> _T:
        inst = new(cls)
        d = inst.__dict__
        d.update(defaults)
        d.update(kwargs)
        if len(d) != count:  # a field with a default factory was not given (callers usually give them)
            for name, factory in factories:
                if name not in d:
                    d[name] = factory()
        return inst

    return build


class Invalid(Exception):
    """Internal: a value failed a check. `cls` is the decode error class to raise, `detail` the text."""

    def __init__(self, cls: type[TeepDecodeError], detail: str) -> None:
        super().__init__(detail)
        self.cls = cls
        self.detail = detail

    def within(self, where: str) -> Invalid:
        """The same problem, one level further out (`item 2: ...`)."""
        return Invalid(self.cls, f"{where}: {self.detail}")


def type_name(value: Any) -> str:
    """The CBOR name of a decoded value, for error messages."""
    if value is None:
        return "null"
    if value is True or value is False:
        return str(value).lower()
    if isinstance(value, int):
        return "unsigned integer" if value >= 0 else "negative integer"
    if isinstance(value, bytes):
        return "byte string"
    if isinstance(value, str):
        return "text string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, float):
        return "float"
    if isinstance(value, CBORTag):
        return f"tag {value.tag}"
    if isinstance(value, CBORSimpleValue):
        return f"simple value {value.value}"
    if value is undefined:
        return "undefined"
    qualname = f"{type(value).__module__}.{type(value).__qualname__}"
    return f"{qualname} (from CBOR tag {_TAG_OF_TYPE.get(qualname, '?')})"


# Python types cbor2 makes of the tags it interprets, and those tags, to name them in errors.
_TAG_OF_TYPE = {
    "datetime.datetime": "0/1",
    "decimal.Decimal": "4/5",
    "fractions.Fraction": "30",
    "re.Pattern": "35",
    "email.message.Message": "36",
    "uuid.UUID": "37",
    "datetime.date": "100/1004",
    "builtins.set": "258",
    "builtins.frozenset": "258",
    "ipaddress.IPv4Address": "52/260",
    "ipaddress.IPv6Address": "54/260",
    "ipaddress.IPv4Network": "52/261",
    "ipaddress.IPv6Network": "54/261",
    "builtins.complex": "43000",
}


def _wrong(expected: str, value: Any) -> Invalid:
    return Invalid(WrongType, f"expected {expected}, got {type_name(value)}")


# ---------------------------------------------------------------- generic values ("any")

_BREAK = getattr(cbor2, "break_marker", object())  # not in cbor2 type stubs
# Leaf types that need no further check.
_GENERIC_LEAVES = (str, bytes)


def check_any(value: Any, depth: int, max_depth: int) -> bool:
    """Check a value of `any` type (extensions, SUIT parameters, legacy label 5) sitting at `depth`.

    Allowed: integers in the CBOR range, bool, null, undefined, text, bytes, float, arrays, maps,
    tags not interpreted by cbor2, simple values; at most `max_depth` containers deep. Returns True
    if a float occurs (the encoder then writes floats in their shortest form).
    """
    t = type(value)
    if t is int:
        if not INT64_MIN <= value <= UINT64_MAX:
            raise Invalid(
                UnsupportedValue, "integer outside the 64-bit CBOR range (bignums are not supported)"
            )
        return False
    if t in _GENERIC_LEAVES or value is None or t is bool or value is undefined:
        return False
    if t is float:
        return True
    if t is CBORSimpleValue:
        if 20 <= value.value < 32:
            raise Invalid(NotCbor, f"simple value {value.value} in a two-byte form is not well-formed")
        return False
    if t is list or t is tuple:
        if depth > max_depth:
            raise Invalid(TooDeep, f"nesting deeper than {max_depth} levels")
        found = False
        for i, item in enumerate(value):
            try:
                found = check_any(item, depth + 1, max_depth) or found
            except Invalid as exc:
                raise exc.within(f"item {i}") from None
        return found
    if t is dict or t is FrozenDict:
        if depth > max_depth:
            raise Invalid(TooDeep, f"nesting deeper than {max_depth} levels")
        found = False
        for k, v in value.items():
            try:
                if check_any(k, depth + 1, max_depth):
                    raise Invalid(UnsupportedValue, "a float inside a map key is not supported")
                found = check_any(v, depth + 1, max_depth) or found
            except Invalid as exc:
                raise exc.within(f"map entry {_short(k)}") from None
        return found
    if t is CBORTag:
        if depth > max_depth:
            raise Invalid(TooDeep, f"nesting deeper than {max_depth} levels")
        tag = value.tag
        if type(tag) is not int or not 0 <= tag <= UINT64_MAX:
            raise Invalid(WrongType, f"tag number {tag!r} is not a 64-bit unsigned integer")
        if tag in REFUSED_TAGS or tag in (0, 1, 2, 3, 37, 100, 258, 260, 261, 1004, 43000, 55799):
            raise Invalid(UnsupportedValue, f"CBOR tag {tag} is not supported in extension values")
        try:
            return check_any(value.value, depth + 1, max_depth)
        except Invalid as exc:
            raise exc.within(f"tag {tag}") from None
    if value is _BREAK:
        raise Invalid(NotCbor, "unexpected break byte 0xff")
    if isinstance(value, int) and not isinstance(value, bool):  # IntEnum members of model.codes
        return check_any(int(value), depth, max_depth)
    raise Invalid(UnsupportedValue, f"value of type {type_name(value)} is not supported")


def _short(value: Any) -> str:
    """A short printable form of a key (no huge reprs in error messages)."""
    if type(value) is int:
        return str(value) if -(10**18) < value < 10**18 else "<large integer>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------- kinds of the TEEP CDDL


def _is_int(value: Any) -> bool:
    """An integer that is not a bool (IntEnum members of `model.codes` count as integers)."""
    return type(value) is int or (isinstance(value, int) and type(value) is not bool)


def _uint(value: Any, _d: int, _m: int) -> int:
    if not _is_int(value) or value < 0:
        raise _wrong("unsigned integer", value)
    if value > UINT64_MAX:
        raise Invalid(SizeOutOfRange, "unsigned integer above 2**64-1")
    return value


def _uint32(value: Any, _d: int, _m: int) -> int:
    if not _is_int(value) or value < 0:
        raise _wrong("unsigned integer", value)
    if value > UINT32_MAX:
        raise Invalid(SizeOutOfRange, f"{_short(value)} does not fit in 4 bytes (uint .size 4)")
    return value


def _int(value: Any) -> int:
    if not _is_int(value):
        raise _wrong("integer", value)
    if not INT64_MIN <= value <= UINT64_MAX:
        raise Invalid(SizeOutOfRange, "integer outside the 64-bit CBOR range")
    return value


def _bool(value: Any, _d: int, _m: int) -> bool:
    if type(value) is not bool:
        raise _wrong("true or false", value)
    return value


def _bstr(value: Any, _d: int, _m: int) -> bytes:
    if type(value) is not bytes:
        raise _wrong("byte string", value)
    return value


def _text(value: Any, _d: int, _m: int) -> str:
    if type(value) is not str:
        raise _wrong("text string", value)
    return value


def _sized_bstr(kind: str) -> Callable[[Any, int, int], bytes]:
    lo, hi = SIZE_LIMITS[kind]

    def check(value: Any, _d: int, _m: int) -> bytes:
        if type(value) is not bytes:
            raise _wrong(f"byte string of {lo}..{hi} bytes", value)
        if not lo <= len(value) <= hi:
            raise Invalid(SizeOutOfRange, f"{kind} is {len(value)} bytes, must be {lo}..{hi}")
        return value

    return check


def _sized_text(kind: str) -> Callable[[Any, int, int], str]:
    lo, hi = SIZE_LIMITS[kind]

    def check(value: Any, _d: int, _m: int) -> str:
        if type(value) is not str:
            raise _wrong(f"text string of {lo}..{hi} bytes", value)
        size = len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
        if not lo <= size <= hi:
            raise Invalid(SizeOutOfRange, f"text is {size} UTF-8 bytes, must be {lo}..{hi}")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise Invalid(WrongType, "text contains lone surrogates (not UTF-8)") from None
        return value

    return check


def _array(value: Any, nonempty: bool) -> list[Any] | tuple[Any, ...]:
    if type(value) is not list and type(value) is not tuple:
        raise _wrong("non-empty array" if nonempty else "array", value)
    if nonempty and not value:
        raise Invalid(SizeOutOfRange, "array is empty, must have at least one element")
    return value


def _list_of(item: Callable[[Any, int, int], Any]) -> Callable[[Any, int, int], tuple[Any, ...]]:
    def check(value: Any, depth: int, max_depth: int) -> tuple[Any, ...]:
        items = _array(value, True)
        try:
            return tuple([item(v, depth + 1, max_depth) for v in items])
        except Invalid:
            pass
        for i, v in enumerate(items):  # slow path only to say which item is wrong
            try:
                item(v, depth + 1, max_depth)
            except Invalid as exc:
                raise exc.within(f"item {i}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    return check


# Fast paths for the lists every message carries: one loop with inline type checks, no call per
# item; on the first anomaly they fall back to the generic checker, which names the item and problem.
_I_MIN, _I_MAX = INT64_MIN, UINT64_MAX


def _fast_list(
    fast: Callable[[list[Any] | tuple[Any, ...]], tuple[Any, ...] | None],
    slow: Callable[[Any, int, int], tuple[Any, ...]],
) -> Callable[[Any, int, int], tuple[Any, ...]]:
    def check(value: Any, depth: int, max_depth: int) -> tuple[Any, ...]:
        if (type(value) is list or type(value) is tuple) and value:
            result = fast(value)
            if result is not None:
                return result
        return slow(value, depth, max_depth)

    return check


def _fast_profiles(value: list[Any] | tuple[Any, ...]) -> tuple[Any, ...] | None:
    out = []
    for p in value:
        if (type(p) is not list and type(p) is not tuple) or len(p) != 4:
            return None
        a, b, c, d = p
        if not (type(a) is int and type(b) is int and type(c) is int and type(d) is int):
            return None
        if not (
            _I_MIN <= a <= _I_MAX
            and _I_MIN <= b <= _I_MAX
            and _I_MIN <= c <= _I_MAX
            and _I_MIN <= d <= _I_MAX
        ):
            return None
        out.append((a, b, c, d))
    return tuple(out)


def _fast_suites(value: list[Any] | tuple[Any, ...]) -> tuple[Any, ...] | None:
    out = []
    for suite in value:
        if (type(suite) is not list and type(suite) is not tuple) or not suite:
            return None
        ops = []
        for op in suite:
            if (type(op) is not list and type(op) is not tuple) or len(op) != 2:
                return None
            typ, alg = op
            if not (type(typ) is int and type(alg) is int and 0 <= typ <= _I_MAX and _I_MIN <= alg <= _I_MAX):
                return None
            ops.append((typ, alg))
        out.append(tuple(ops))
    return tuple(out)


def _fast_uints(limit: int) -> Callable[[list[Any] | tuple[Any, ...]], tuple[Any, ...] | None]:
    def fast(value: list[Any] | tuple[Any, ...]) -> tuple[Any, ...] | None:
        for v in value:
            if type(v) is not int or not 0 <= v <= limit:
                return None
        return tuple(value)

    return fast


def _fast_bstrs(value: list[Any] | tuple[Any, ...]) -> tuple[Any, ...] | None:
    for v in value:
        if type(v) is not bytes:
            return None
    return tuple(value)


def _op(value: Any) -> tuple[int, int]:
    if (type(value) is not list and type(value) is not tuple) or len(value) != 2:
        raise Invalid(
            WrongType,
            f"cipher-suite operation must be [cose-type, alg], got {type_name(value)}"
            + (f" of {len(value)} elements" if isinstance(value, (list, tuple)) else ""),
        )
    typ, alg = value
    try:
        return (_uint(typ, 0, 0), _int(alg))
    except Invalid as exc:
        raise exc.within("cose-type" if not _is_int(typ) or typ < 0 else "alg") from None


def _suite(value: Any, _d: int, _m: int) -> tuple[tuple[int, int], ...]:
    # fast path: the usual one-operation suite [[18, alg]] with plain integers
    if type(value) is list and len(value) == 1:
        op = value[0]
        if type(op) is list and len(op) == 2:
            typ, alg = op
            if (
                type(typ) is int
                and type(alg) is int
                and 0 <= typ <= UINT64_MAX
                and INT64_MIN <= alg <= UINT64_MAX
            ):
                return ((typ, alg),)
    ops = _array(value, True)
    out = []
    for i, op in enumerate(ops):
        try:
            out.append(_op(op))
        except Invalid as exc:
            raise exc.within(f"operation {i}") from None
    return tuple(out)


def _profile(value: Any, _d: int, _m: int) -> tuple[int, int, int, int]:
    if (type(value) is not list and type(value) is not tuple) or len(value) != 4:
        raise Invalid(
            WrongType,
            "SUIT COSE profile must be [digest, auth, key-exchange, encryption], got "
            + type_name(value)
            + (f" of {len(value)} elements" if isinstance(value, (list, tuple)) else ""),
        )
    a, b, c, d = value
    if (
        type(a) is int
        and type(b) is int
        and type(c) is int
        and type(d) is int
        and min(value) >= INT64_MIN
        and max(value) <= UINT64_MAX
    ):
        return (a, b, c, d)
    return (_int(a), _int(b), _int(c), _int(d))


def _compid(value: Any, _d: int, _m: int) -> tuple[bytes, ...]:
    items = _array(value, False)
    for i, v in enumerate(items):
        if type(v) is not bytes:
            raise _wrong("byte string", v).within(f"item {i}")
    return tuple(items)


def _map(value: Any) -> dict[Any, Any]:
    if type(value) is not dict:
        raise _wrong("map", value)
    return value


def _claims(value: Any, depth: int, max_depth: int) -> SystemPropertyClaims:
    """system-property-claims: `{0: component-id, + SUIT parameter (int label) => any}`."""
    if isinstance(value, SystemPropertyClaims):  # model form (encoding): check it field by field
        items: dict[Any, Any] = {SYSTEM_COMPONENT_ID: value.component_id, **dict(value.parameters)}
        order = value.label_order
    else:
        items = _map(value)
        order = None
    if SYSTEM_COMPONENT_ID not in items:
        raise Invalid(MissingMember, "system-property-claims has no label 0 (system-component-id)")
    params: dict[int, Any] = {}
    compid: tuple[bytes, ...] = ()
    for k, v in items.items():
        if type(k) is not int or not INT64_MIN <= k <= UINT64_MAX:
            raise Invalid(WrongType, f"map key {_short(k)} is a {type_name(k)}, expected an integer label")
        try:
            if k == SYSTEM_COMPONENT_ID:
                compid = _compid(v, depth + 1, max_depth)
            else:
                check_any(v, depth + 1, max_depth)
                params[k] = v
        except Invalid as exc:
            raise exc.within(f"label {k}") from None
    if not params:
        raise Invalid(
            MissingMember, "system-property-claims needs at least one SUIT parameter besides label 0"
        )
    if order is None and not isinstance(value, SystemPropertyClaims):
        order = tuple(items)
    return _build_claims({"component_id": compid, "parameters": params, "label_order": order})


def _rtc(value: Any, depth: int, max_depth: int) -> RequestedTcInfo:
    """requested-tc-info: `{16: component-id, ?17: uint, ?18: bool}`; other labels -> extensions."""
    if isinstance(value, RequestedTcInfo):
        items: dict[Any, Any] = {16: value.component_id}
        if value.tc_manifest_sequence_number is not None:
            items[17] = value.tc_manifest_sequence_number
        if value.have_binary is not None:
            items[18] = value.have_binary
        items.update(value.extensions)
        order = value.label_order
    else:
        items = _map(value)
        order = tuple(items)
    kwargs: dict[str, Any] = {}
    ext: dict[int, Any] = {}
    known = {label: (attr, kind) for label, attr, kind in RTC_FIELDS}
    for k, v in items.items():
        if type(k) is not int or not 0 <= k <= UINT64_MAX:
            raise Invalid(
                WrongType, f"map key {_short(k)} is a {type_name(k)}, expected an unsigned integer label"
            )
        spec = known.get(k)
        try:
            if spec is None:
                check_any(v, depth + 1, max_depth)
                ext[k] = v
            else:
                kwargs[spec[0]] = CHECKERS[spec[1]](v, depth + 1, max_depth)
        except Invalid as exc:
            raise exc.within(f"label {label_name(k)}") from None
    if "component_id" not in kwargs:
        raise Invalid(MissingMember, "requested-tc-info has no label 16 (component-id)")
    kwargs["extensions"] = ext
    kwargs["label_order"] = order
    return _build_rtc(kwargs)


def _any(value: Any, depth: int, max_depth: int) -> Any:
    check_any(value, depth, max_depth)
    return value


_build_claims = fast_builder(SystemPropertyClaims)
_build_rtc = fast_builder(RequestedTcInfo)

CHECKERS: Mapping[str, Callable[[Any, int, int], Any]] = {
    "token": _sized_bstr("token"),
    "challenge": _sized_bstr("challenge"),
    "bstr": _bstr,
    "text": _text,
    "msg": _sized_text("msg"),
    "lang": _sized_text("lang"),
    "uint": _uint,
    "uint32": _uint32,
    "bool": _bool,
    "uint_list": _fast_list(_fast_uints(UINT64_MAX), _list_of(_uint)),
    "uint32_list": _fast_list(_fast_uints(UINT32_MAX), _list_of(_uint32)),
    "bstr_list": _fast_list(_fast_bstrs, _list_of(_bstr)),
    "suites": _fast_list(_fast_suites, _list_of(_suite)),
    "profiles": _fast_list(_fast_profiles, _list_of(_profile)),
    "compid": _compid,
    "compid_list": _list_of(_compid),
    "tc_list": _list_of(_claims),
    "rtc_list": _list_of(_rtc),
    "any": _any,
}
