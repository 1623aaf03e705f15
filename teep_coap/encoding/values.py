"""Checks of field values against the CDDL, shared by the CBOR decoder, the encoder and the JSON twin.

Each checker takes a value as cbor2 decodes it (lists, dicts) or as the model holds it (tuples) and
returns the model form (tuples), or raises `Invalid` with the error class and a detail without
location; the caller adds where (message, label, element) and turns it into its own error family
(`TeepDecodeError` subclasses when decoding, `TeepEncodeError` when encoding, `TeepJsonError` for JSON).

What all checks share (`Invalid`, `type_name`, `check_any`) is in `encoding.generic_values`, the
building of model instances without their constructor in `encoding.instances`; both are re-exported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from teep_coap.encoding.errors import (
    MissingMember,
    SizeOutOfRange,
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
from teep_coap.encoding.generic_values import Invalid, check_any, type_name
from teep_coap.encoding.generic_values import short as _short
from teep_coap.encoding.generic_values import wrong as _wrong
from teep_coap.encoding.instances import _new, _set_dict, fast_builder, instance_template
from teep_coap.model.teep import RequestedTcInfo, SystemPropertyClaims

_T = TypeVar("_T")


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


def _profiles_shape(value: Any) -> tuple[tuple[int, int, int, int], ...] | None:
    """supported-suit-cose-profiles in model form when shape and types are right, else None. The
    integers are not range-checked: decoded plain CBOR holds no others (`builders.py`)."""
    tv = type(value)
    if (tv is not list and tv is not tuple) or not value:
        return None
    out: list[tuple[int, int, int, int]] = []
    append = out.append
    for p in value:
        tp = type(p)
        if (tp is not list and tp is not tuple) or len(p) != 4:
            return None
        a, b, c, d = p
        if type(a) is not int or type(b) is not int or type(c) is not int or type(d) is not int:
            return None
        append((a, b, c, d))
    return tuple(out)


def _suites_shape(value: Any) -> tuple[tuple[tuple[int, int], ...], ...] | None:
    """supported-teep-cipher-suites in model form when shape and types are right (cose-type >= 0),
    else None; the integers' upper and lower CBOR bounds are not checked (see `_profiles_shape`)."""
    tv = type(value)
    if (tv is not list and tv is not tuple) or not value:
        return None
    out: list[tuple[tuple[int, int], ...]] = []
    append = out.append
    for suite in value:
        ts = type(suite)
        if (ts is not list and ts is not tuple) or not suite:
            return None
        ops = []
        for op in suite:
            to = type(op)
            if (to is not list and to is not tuple) or len(op) != 2:
                return None
            typ, alg = op
            if type(typ) is not int or type(alg) is not int or typ < 0:
                return None
            ops.append((typ, alg))
        append(tuple(ops))
    return tuple(out)


def _in_cbor_range(rows: tuple[tuple[int, ...], ...]) -> bool:
    """Every integer of these rows is one CBOR can carry (major types 0/1, no bignum)."""
    lo, hi = _I_MIN, _I_MAX
    for row in rows:
        for x in row:
            if not lo <= x <= hi:
                return False
    return True


def _profiles_list(value: Any, depth: int, max_depth: int) -> tuple[Any, ...]:
    """supported-suit-cose-profiles: shape and types, then the range; on any anomaly the generic
    checker takes over and names the item and problem."""
    out = _profiles_shape(value)
    if out is not None and _in_cbor_range(out):
        return out
    return _slow_profiles(value, depth, max_depth)


def _suites_list(value: Any, depth: int, max_depth: int) -> tuple[Any, ...]:
    """supported-teep-cipher-suites: like `_profiles_list`."""
    out = _suites_shape(value)
    if out is not None:
        lo, hi = _I_MIN, _I_MAX
        for suite in out:
            for typ, alg in suite:  # cose-type >= 0 is checked by the shape already
                if typ > hi or not lo <= alg <= hi:
                    return _slow_suites(value, depth, max_depth)
        return out
    return _slow_suites(value, depth, max_depth)


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
    known = _RTC_KNOWN
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


_RTC_KNOWN = {label: (attr, kind) for label, attr, kind in RTC_FIELDS}


def _any(value: Any, depth: int, max_depth: int) -> Any:
    check_any(value, depth, max_depth)
    return value


_slow_suites = _list_of(_suite)
_slow_profiles = _list_of(_profile)
_build_claims = fast_builder(SystemPropertyClaims, ("parameters",))
_build_rtc = fast_builder(RequestedTcInfo, ("extensions",))
_CLAIMS_TEMPLATE = instance_template(SystemPropertyClaims, ("parameters",))
_RTC_TEMPLATE = instance_template(RequestedTcInfo, ("extensions",))


def _fast_claims(value: list[Any] | tuple[Any, ...], depth: int, max_depth: int) -> tuple[Any, ...] | None:
    """tc-list as decoded (maps with integer keys, component-ids of byte strings): one loop, the same
    result as `_list_of(_claims)`; None on anything else, which the slow path then explains."""
    template = _CLAIMS_TEMPLATE
    if template is None:
        return None
    lo, hi = _I_MIN, _I_MAX
    out = []
    for claims in value:
        if type(claims) is not dict:
            return None
        compid = None
        params: dict[int, Any] = {}
        for k, v in claims.items():
            if type(k) is not int:
                return None
            if k == SYSTEM_COMPONENT_ID:
                if type(v) is not list:
                    return None
                for part in v:
                    if type(part) is not bytes:
                        return None
                compid = tuple(v)
            elif lo <= k <= hi:
                t = type(v)
                if not (t is bytes or t is str or (t is int and lo <= v <= hi)):  # else: generic check
                    try:
                        check_any(v, depth + 2, max_depth)
                    except Invalid:
                        return None
                params[k] = v
            else:
                return None
        if compid is None or not params:
            return None
        fields = template.copy()
        fields["component_id"] = compid
        fields["parameters"] = params
        fields["label_order"] = tuple(claims)
        inst = _new(SystemPropertyClaims)  # `install`, inlined
        _set_dict(inst, "__dict__", fields)
        out.append(inst)
    return tuple(out)


def _fast_rtcs(value: list[Any] | tuple[Any, ...], depth: int, max_depth: int) -> tuple[Any, ...] | None:
    """requested-tc-list as decoded: one loop, the same result as `_list_of(_rtc)`, or None."""
    template = _RTC_TEMPLATE
    if template is None:
        return None
    out = []
    for info in value:
        if type(info) is not dict:
            return None
        fields = template.copy()
        ext: dict[int, Any] = {}
        has_compid = False
        for k, v in info.items():
            if type(k) is not int:
                return None
            if k == 16:  # component-id
                if type(v) is not list:
                    return None
                for part in v:
                    if type(part) is not bytes:
                        return None
                fields["component_id"] = tuple(v)
                has_compid = True
            elif k == 17:  # tc-manifest-sequence-number
                if type(v) is not int or not 0 <= v <= UINT64_MAX:
                    return None
                fields["tc_manifest_sequence_number"] = v
            elif k == 18:  # have-binary
                if type(v) is not bool:
                    return None
                fields["have_binary"] = v
            elif 0 <= k <= UINT64_MAX:
                t = type(v)
                if not (t is bytes or t is str or (t is int and _I_MIN <= v <= _I_MAX)):
                    try:
                        check_any(v, depth + 2, max_depth)
                    except Invalid:
                        return None
                ext[k] = v
            else:
                return None
        if not has_compid:
            return None
        fields["extensions"] = ext
        fields["label_order"] = tuple(info)
        inst = _new(RequestedTcInfo)
        _set_dict(inst, "__dict__", fields)
        out.append(inst)
    return tuple(out)


def _fast_list_deep(
    fast: Callable[[list[Any] | tuple[Any, ...], int, int], tuple[Any, ...] | None],
    slow: Callable[[Any, int, int], tuple[Any, ...]],
) -> Callable[[Any, int, int], tuple[Any, ...]]:
    """`_fast_list` for fast paths that need the depth (their items hold generic values)."""

    def check(value: Any, depth: int, max_depth: int) -> tuple[Any, ...]:
        if type(value) is list and value:
            result = fast(value, depth, max_depth)
            if result is not None:
                return result
        return slow(value, depth, max_depth)

    return check


# The one-loop fast paths of the deep lists, for callers that take the generic checker on None.
FAST_DEEP_LISTS: Mapping[str, Callable[[list[Any] | tuple[Any, ...], int, int], tuple[Any, ...] | None]] = {
    "tc_list": _fast_claims,
    "rtc_list": _fast_rtcs,
}

# Shape-and-type checks for values decoded from plain CBOR (`_plaincbor.plain`), whose integers are
# within the CBOR range by construction: the model form, or None where the kind's checker must decide.
PLAIN_SHAPES: Mapping[str, Callable[[Any], tuple[Any, ...] | None]] = {
    "suites": _suites_shape,
    "profiles": _profiles_shape,
}

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
    "suites": _suites_list,
    "profiles": _profiles_list,
    "compid": _compid,
    "compid_list": _list_of(_compid),
    "tc_list": _fast_list_deep(_fast_claims, _list_of(_claims)),
    "rtc_list": _fast_list_deep(_fast_rtcs, _list_of(_rtc)),
    "any": _any,
}


# Inline checks of the simplest kinds, for the decoder's hot path: kind -> (code, lo, hi). A value that
# passes one is exactly what the kind's checker accepts and returns unchanged (lists: as a tuple);
# anything else goes to the checker, which converts it or names the problem. (A test compares both.)
FAST_CALL, FAST_BYTES, FAST_INT, FAST_TEXT, FAST_ASCII, FAST_UINTS, FAST_BSTRS, FAST_COMPIDS = range(8)
_NO_LIMIT = 1 << 64  # above any length a decoded string can have

FAST_CHECKS: Mapping[str, tuple[int, int, int]] = {
    "token": (FAST_BYTES, *SIZE_LIMITS["token"]),
    "challenge": (FAST_BYTES, *SIZE_LIMITS["challenge"]),
    "bstr": (FAST_BYTES, 0, _NO_LIMIT),
    "text": (FAST_TEXT, 0, _NO_LIMIT),
    "msg": (FAST_ASCII, *SIZE_LIMITS["msg"]),  # an ASCII text has as many UTF-8 bytes as characters
    "lang": (FAST_ASCII, *SIZE_LIMITS["lang"]),
    "uint": (FAST_INT, 0, UINT64_MAX),
    "uint32": (FAST_INT, 0, UINT32_MAX),
    "uint_list": (FAST_UINTS, 0, UINT64_MAX),
    "uint32_list": (FAST_UINTS, 0, UINT32_MAX),
    "bstr_list": (FAST_BSTRS, 0, 0),
    "compid_list": (FAST_COMPIDS, 0, 0),
}


def fast_check(kind: str) -> tuple[int, int, int]:
    """The inline check of a kind, (FAST_CALL, 0, 0) where there is none."""
    return FAST_CHECKS.get(kind, (FAST_CALL, 0, 0))
