"""What every field-value check shares: the `Invalid` problem it raises, the CBOR names of decoded
types for its messages, and the check of arbitrary ("any") values, whose only limits are depth and the
refused tags. Split out of `encoding.values`, which re-exports `Invalid`, `type_name` and `check_any`.
"""

from __future__ import annotations

from typing import Any

import cbor2
from cbor2 import CBORSimpleValue, CBORTag, FrozenDict, undefined

from teep_coap.encoding.errors import NotCbor, TeepDecodeError, TooDeep, UnsupportedValue, WrongType
from teep_coap.encoding.fields import INT64_MIN, UINT64_MAX
from teep_coap.encoding.scanner import REFUSED_TAGS


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


def wrong(expected: str, value: Any) -> Invalid:
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
                raise exc.within(f"map entry {short(k)}") from None
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


def short(value: Any) -> str:
    """A short printable form of a key (no huge reprs in error messages)."""
    if type(value) is int:
        return str(value) if -(10**18) < value < 10**18 else "<large integer>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
