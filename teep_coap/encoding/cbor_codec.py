"""TEEP messages <-> CBOR (application/teep+cbor), strict, total and byte-exact.

Decoding: size limit, then (only when the input may hold a tag cbor2 would interpret expensively)
the head scanner of `scanner.py`, then cbor2 with its depth limit, then the field checks of
`values.py`, and last a determinism check: the decoded item re-encoded must give the input bytes.
So whatever `decode` accepts, `encode` gives back byte for byte, and everything else (indefinite
lengths, longer-than-needed heads, duplicate keys, trailing bytes, ...) raises a precise
`TeepDecodeError` — found by the scanner once the cheap check has failed.

Encoding: definite lengths and shortest heads (cbor2 does both), floats in their shortest exact
form, option labels in the CDDL order of each message (token first, as in the working group's
examples; RFC 8949 §4.2.1 core sorting would put 3 before 20 and NOT reproduce them), or in the
message's `label_order` when it has one (decoded messages do), then unknown labels (`extensions`).
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import cbor2
from cbor2 import CBORDecodeError, CBORTag, FrozenDict

from teep_coap.encoding.errors import (
    MissingMember,
    MissingPositional,
    NotAnArray,
    NotCbor,
    NotDeterministic,
    TeepDecodeError,
    TeepEncodeError,
    TooDeep,
    TooLarge,
    UnknownMessageType,
    UnsupportedValue,
    WrongType,
)
from teep_coap.encoding.fields import (
    INT64_MIN,
    MESSAGE_CLASS,
    MESSAGE_NAMES,
    OPTION_FIELDS,
    POSITIONAL_FIELDS,
    SYSTEM_COMPONENT_ID,
    UINT64_MAX,
    label_name,
)
from teep_coap.encoding.scanner import scan
from teep_coap.encoding.values import CHECKERS, Invalid, check_any, fast_builder, type_name
from teep_coap.model.codes import MessageType
from teep_coap.model.teep import QueryResponse, RequestedTcInfo, SystemPropertyClaims, TeepMessage

DEFAULT_MAX_SIZE = 1 << 20
DEFAULT_MAX_DEPTH = 16

# cbor2 interprets some tags at a cost we refuse to pay before checking (see scanner.REFUSED_TAGS):
# 28/29 (value sharing) and 25/256 (string references) can expand exponentially when re-encoded, at
# any input size; 4/5 around a bignum and 30 (rational) take quadratic time, 35/36 parse text, which
# only matters for large inputs (200 KB: 8 s; 16 KB: a few ms). Their heads, followed by what must
# come next, are the byte patterns below (tag heads longer than needed included: cbor2 accepts them).
# Only if one of them occurs anywhere in the input (heads or string contents alike) does the scanner
# run before cbor2. The search is one regular expression for inputs up to 1 KiB, memchr-fast
# `bytes.find` above; a clean 64-byte message pays about 0.2 µs for it.
COSTLY_ONLY_ABOVE = 16 * 1024
_ARRAY_HEADS = frozenset([0x82, 0x98, 0x99, 0x9A, 0x9B, 0x9F])  # what a tag 4/5 array can start with
_D8_ALWAYS = frozenset([0x19, 0x1C, 0x1D])
_D8_LARGE = frozenset([*range(0x00, 0x18), 0x19, 0x1C, 0x1D, 0x1E, 0x23, 0x24])


def _costly_at(data: bytes, lead: int, i: int, large: bool) -> bool:
    """Does the tag head candidate `lead` at offset i start one of the costly patterns?"""
    nxt = data[i + 1 : i + 7]
    if lead == 0xD8:
        return bool(nxt) and nxt[0] in (_D8_LARGE if large else _D8_ALWAYS)
    if lead == 0xD9:
        return nxt[:1] == b"\x00" or nxt[:2] == b"\x01\x00"
    if lead == 0xDA:
        return nxt[:2] == b"\x00\x00"
    if lead == 0xDB:
        return nxt[:6] == b"\x00" * 6
    return large and bool(nxt) and nxt[0] in _ARRAY_HEADS  # 0xc4, 0xc5


_LEADS_SMALL = (b"\xd8", b"\xd9", b"\xda", b"\xdb")
_LEADS_LARGE = (b"\xc4", b"\xc5", *_LEADS_SMALL)


# The small-input patterns as one regular expression: one C call beats the find loop below up to
# about a kilobyte (sre tries the alternation at every offset, so it loses on larger inputs).
_SMALL_PATTERNS = re.compile(rb"\xd8[\x19\x1c\x1d]|\xd9(?:\x00|\x01\x00)|\xda\x00\x00|\xdb\x00{6}").search


def _may_hold_costly_tag(data: bytes) -> bool:
    size = len(data)
    if size <= 1024:
        return _SMALL_PATTERNS(data) is not None
    large = size > COSTLY_ONLY_ABOVE
    find = data.find
    for lead in _LEADS_LARGE if large else _LEADS_SMALL:
        i = find(lead)
        while i != -1:
            if _costly_at(data, lead[0], i, large):
                return True
            i = find(lead, i + 1)
    return False


# label -> (attribute, checker, kind) per message type; option attributes in CDDL order.
_OPTION_TABLE: dict[int, dict[int, tuple[str, Callable[[Any, int, int], Any], str]]] = {
    int(t): {label: (attr, CHECKERS[kind], kind) for label, attr, kind in specs}
    for t, specs in OPTION_FIELDS.items()
}
_POSITIONAL: dict[int, tuple[tuple[str, Callable[[Any, int, int], Any], str], ...]] = {
    int(t): tuple((attr, CHECKERS[kind], cname) for attr, kind, cname in specs)
    for t, specs in POSITIONAL_FIELDS.items()
}
_ATTR_ORDER: dict[int, tuple[tuple[int, str, str], ...]] = {int(t): s for t, s in OPTION_FIELDS.items()}


_BUILDERS = {t: fast_builder(cls) for t, cls in MESSAGE_CLASS.items()}
# per wire type: (CDDL name, label -> (attribute, checker), positional, builder)
_TYPE_INFO: dict[
    int,
    tuple[
        str,
        dict[int, tuple[str, Callable[[Any, int, int], Any]]],
        tuple[tuple[str, Callable[[Any, int, int], Any], str], ...],
        Callable[[dict[str, Any]], TeepMessage],
    ],
] = {
    t: (
        MESSAGE_NAMES[MessageType(t)],
        {label: (attr, checker) for label, (attr, checker, _kind) in _OPTION_TABLE[t].items()},
        _POSITIONAL[t],
        _BUILDERS[t],
    )
    for t in MESSAGE_CLASS
}
_TYPES_TEXT = ", ".join(f"{int(t)} ({name})" for t, name in MESSAGE_NAMES.items())


# ---------------------------------------------------------------- cbor2 plumbing


class _MinimalFloat:
    """A float to be written in its shortest exact form (cbor2 writes 8 bytes unless canonical=True,
    which would also sort our maps)."""

    __slots__ = ("value",)

    def __init__(self, value: float) -> None:
        self.value = value


def _default(encoder: Any, value: Any) -> None:
    if type(value) is _MinimalFloat:
        encoder.encode_minimal_float(value.value)
        return
    raise TypeError(f"cannot encode {type(value).__name__}")


class _Encoders(threading.local):
    """One cbor2 encoder per thread, reused: `cbor2.dumps` spends most of its time setting one up."""

    def __init__(self) -> None:
        self.fp = io.BytesIO()
        self.encoder = cbor2.CBOREncoder(self.fp, default=_default)


_ENCODERS = _Encoders()
_cbor2_loads = cbor2.loads


def _may_hold_float(data: bytes) -> bool:
    """False if no float head byte (0xf9-0xfb) occurs anywhere: then the message holds no float.
    (memchr through `in` is several times faster than a character-class regex here.)"""
    return b"\xf9" in data or b"\xfa" in data or b"\xfb" in data


_CBOR2_DEPTH = 399  # cbor2.loads refuses more than 400 levels, counting leaves as one
_SHAPE_DEPTH = 6  # deepest container of a known field: tc-list -> claims -> component-id = level 5


def _dumps(obj: Any) -> bytes:
    local = _ENCODERS
    fp = local.fp
    fp.seek(0)
    fp.truncate()
    try:
        local.encoder.encode(obj)
    except BaseException:
        # a failed encode may leave the reused encoder's state dirty: start afresh
        local.fp = io.BytesIO()
        local.encoder = cbor2.CBOREncoder(local.fp, default=_default)
        raise
    return fp.getvalue()


def _wrap_floats(value: Any) -> Any:
    """Copy of a generic value with every float wrapped for shortest-form encoding."""
    t = type(value)
    if t is float:
        return _MinimalFloat(value)
    if t is list or t is tuple:
        return [_wrap_floats(v) for v in value]
    if t is dict or t is FrozenDict:
        # keys holding floats are refused by `check_any` (a wrapped float is not hashable)
        return {k: _wrap_floats(v) for k, v in value.items()}
    if t is CBORTag:
        return CBORTag(value.tag, _wrap_floats(value.value))
    return value


def _generic_parts(msg: TeepMessage) -> list[Any]:
    """The parts of a message that may hold arbitrary CBOR (hence floats); known fields cannot."""
    parts: list[Any] = [msg.extensions, msg.extra_positional]
    if isinstance(msg, QueryResponse):
        parts.append(msg.selected_teep_cipher_suite)
        parts.extend(claims.parameters for claims in msg.tc_list or ())
        parts.extend(info.extensions for info in msg.requested_tc_list or ())
    return parts


def _contains_float(value: Any) -> bool:
    """Is there a float anywhere in this decoded value (keys included)? Iterative, no generators."""
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        item = pop()
        t = type(item)
        if t is float:
            return True
        if t is list or t is tuple:
            stack.extend(item)
        elif t is dict or t is FrozenDict:
            for k, v in item.items():
                push(k)
                push(v)
        elif t is CBORTag:
            push(item.value)
    return False


def _loads(data: bytes, max_depth: int) -> Any:
    """cbor2 decode of the first item; every failure becomes a precise TeepDecodeError.

    Trailing bytes are not looked for here: the determinism check of the caller finds them (the
    re-encoding is shorter) and the scanner then names them.
    """
    try:
        return cbor2.loads(data, max_depth=max_depth + 1)
    except CBORDecodeError as exc:
        if "nesting depth" in str(exc):
            raise TooDeep(f"nesting deeper than {max_depth} levels") from None
        _explain(data, max_depth)
        raise NotCbor(f"not well-formed CBOR: {exc}") from None
    except Exception as exc:  # semantic tag decoders of cbor2 raise assorted errors
        _explain(data, max_depth)
        raise NotCbor(f"CBOR value rejected by the decoder: {type(exc).__name__}: {exc}") from None


def _explain(data: bytes, max_depth: int) -> None:
    """Raise the scanner's precise error if it finds one (it returns None for well-formed input)."""
    scan(data, max_depth)


# ---------------------------------------------------------------- decoding


def decode(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH
) -> TeepMessage:
    """Decode one TEEP message (the bare array, not a COSE object) from CBOR bytes.

    Raises a `TeepDecodeError` subclass naming what is wrong and where, for any input.
    """
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise NotCbor(f"input must be bytes, got {type(data).__name__}")
        data = bytes(data)
    size = len(data)
    if size > max_size:
        raise TooLarge(f"message is {size} bytes, over the limit of {max_size}")
    if not size:
        raise NotCbor("empty input: expected a CBOR array")
    if _may_hold_costly_tag(data):
        scan(data, max_depth)
    try:
        # cbor2's own limit (400) bounds its recursion; below it, our checks bound the depth: the
        # fixed-shape fields nest at most _SHAPE_DEPTH levels and `check_any` counts the rest.
        if _SHAPE_DEPTH <= max_depth < _CBOR2_DEPTH:
            obj = _cbor2_loads(data)
        else:
            obj = _cbor2_loads(data, max_depth=max_depth + 1)
    except Exception:
        obj = _loads(data, max_depth)  # again, to turn the failure into the precise error
    msg = _message_from_obj(obj, max_depth)
    try:
        local = _ENCODERS  # the raw re-encoding (`_dumps` inlined: this is the hot path)
        fp = local.fp
        fp.seek(0)
        fp.truncate()
        local.encoder.encode(obj)
        again = fp.getvalue()
        # cbor2 alone writes every float in 8 bytes; `encode` writes the shortest exact form. So if a
        # float sits in the message, only `encode(msg)` tells whether the input was deterministic.
        # Without a 0xfb byte the raw re-encoding cannot have matched a message holding a float.
        if again == data:
            if b"\xfb" in data and _contains_float(_generic_parts(msg)):
                again = encode(msg)
        elif _may_hold_float(data) and _contains_float(_generic_parts(msg)):
            again = encode(msg)
    except Exception as exc:  # safety net (never seen in tests or fuzzing): decode stays total
        _ENCODERS.__init__()  # type: ignore[misc]  # a failed encode may leave the encoder dirty
        raise UnsupportedValue(f"decoded message cannot be re-encoded: {exc}") from None
    if again != data:
        scan(data, max_depth)
        diff = next(
            (i for i, (a, b) in enumerate(zip(again, data, strict=False)) if a != b), min(size, len(again))
        )
        raise NotDeterministic(
            f"input is not in deterministic encoding: re-encoding the decoded message differs at byte {diff}"
        )
    return msg


def decode_value(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode any single deterministic CBOR item with the same limits and strictness as `decode`
    (used e.g. for COSE structures around a TEEP message)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise NotCbor(f"input must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_size:
        raise TooLarge(f"input is {len(data)} bytes, over the limit of {max_size}")
    if not data:
        raise NotCbor("empty input")
    if _may_hold_costly_tag(data):
        scan(data, max_depth)
    obj = _loads(data, max_depth)
    try:
        has_float = check_any(obj, 1, max_depth)
    except Invalid as exc:
        raise exc.cls(f"CBOR item: {exc.detail}") from None
    again = _dumps(_wrap_floats(obj) if has_float else obj)
    if again != data:
        scan(data, max_depth)
        raise NotDeterministic("input is not in deterministic encoding")
    return obj


def _message_from_obj(obj: Any, max_depth: int) -> TeepMessage:
    if type(obj) is not list:
        raise NotAnArray(f"a TEEP message is a CBOR array, got {type_name(obj)}")
    if not obj:
        raise MissingPositional("element 0 (type) is missing: the array is empty")
    mtype = obj[0]
    if type(mtype) is not int:
        raise WrongType(f"element 0 (type): expected unsigned integer, got {type_name(mtype)}")
    info = _TYPE_INFO.get(mtype)
    if info is None:
        raise UnknownMessageType(
            f"message type {mtype if -1e9 < mtype < 1e9 else '<large>'} is unknown; known: {_TYPES_TEXT}"
        )
    name, table, positional, build = info
    if len(obj) < 2:
        raise MissingPositional(f"{name}: element 1 (options map) is missing")
    options = obj[1]
    if type(options) is not dict:
        raise WrongType(f"{name} element 1 (options): expected map, got {type_name(options)}")
    kwargs: dict[str, Any] = {}
    extensions: dict[int, Any] = {}
    for label, value in options.items():
        spec = table.get(label) if type(label) is int else None
        try:
            if spec is None:
                if type(label) is not int or not 0 <= label <= UINT64_MAX:  # a bignum is no uint
                    raise WrongType(
                        f"{name} options: key {value_repr(label)} is a {type_name(label)}, "
                        f"expected an unsigned integer label"
                    )
                check_any(value, 3, max_depth)
                extensions[label] = value
            else:
                attr, checker = spec
                kwargs[attr] = checker(value, 3, max_depth)
        except Invalid as exc:
            raise exc.cls(f"{name} options label {label_name(label)}: {exc.detail}") from None
    size = len(obj)
    index = 2
    for attr, checker, cname in positional:
        if size <= index:
            raise MissingPositional(f"{name}: element {index} ({cname}) is missing")
        try:
            kwargs[attr] = checker(obj[index], 2, max_depth)
        except Invalid as exc:
            raise exc.cls(f"{name} element {index} ({cname}): {exc.detail}") from None
        index += 1
    if size > index:
        extra = obj[index:]
        for offset, value in enumerate(extra, start=index):
            try:
                check_any(value, 2, max_depth)
            except Invalid as exc:
                raise exc.cls(f"{name} element {offset}: {exc.detail}") from None
        kwargs["extra_positional"] = tuple(extra)
    kwargs["extensions"] = extensions
    kwargs["label_order"] = tuple(options)
    return build(kwargs)


def value_repr(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or -(10**18) < value < 10**18 else "<large integer>"
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------- encoding


def encode(msg: TeepMessage) -> bytes:
    """Encode a TEEP message model as deterministic CBOR (see the module docstring for the order).

    Raises `TeepEncodeError` if the model violates the CDDL (the message says which field and why).
    """
    return _dumps(to_cbor_structure(msg))


def to_cbor_structure(msg: TeepMessage) -> list[Any]:
    """The message as the Python structure cbor2 encodes (array with an insertion-ordered options map)."""
    cls = type(msg)
    mtype = getattr(cls, "type", None)
    if cls is not MESSAGE_CLASS.get(int(mtype) if isinstance(mtype, int) else -1):
        raise TeepEncodeError(f"not a TEEP message model: {cls.__name__}")
    assert mtype is not None
    name = MESSAGE_NAMES[mtype]
    table = _OPTION_TABLE[mtype]
    present: dict[int, Any] = {}
    for label, attr, _kind in _ATTR_ORDER[mtype]:
        value = getattr(msg, attr)
        if value is not None:
            present[label] = value
    extensions = msg.extensions
    if extensions:
        for label in extensions:
            if type(label) is not int or not 0 <= label <= UINT64_MAX:
                raise TeepEncodeError(
                    f"{name} extensions: key {value_repr(label)} is not an unsigned integer"
                )
            if label in table:
                raise TeepEncodeError(
                    f"{name} extensions: label {label_name(label)} is a known field of {name}; set the field"
                )
            present[label] = extensions[label]
    order = msg.label_order
    if order is not None:
        labels = [label for label in order if label in present]
        if len(labels) != len(present) or len(set(labels)) != len(labels):
            seen = set(labels)
            labels = list(dict.fromkeys(labels)) + [label for label in present if label not in seen]
    else:
        labels = list(present)
    options: dict[int, Any] = {}
    for label in labels:
        value = present[label]
        spec = table.get(label)
        try:
            if spec is None:
                options[label] = _generic_out(value, 3)
            else:
                options[label] = _field_out(spec[2], spec[1], value, 3)
        except Invalid as exc:
            raise TeepEncodeError(f"{name} options label {label_name(label)}: {exc.detail}") from None
    out: list[Any] = [int(mtype), options]
    for index, (attr, checker, cname) in enumerate(_POSITIONAL[mtype], start=2):
        try:
            out.append(checker(getattr(msg, attr), 2, DEFAULT_MAX_DEPTH))
        except Invalid as exc:
            raise TeepEncodeError(f"{name} element {index} ({cname}): {exc.detail}") from None
    extra = msg.extra_positional
    if extra:
        if not isinstance(extra, tuple):
            raise TeepEncodeError(f"{name}: extra_positional must be a tuple")
        for index, value in enumerate(extra, start=len(out)):
            try:
                out.append(_generic_out(value, 2))
            except Invalid as exc:
                raise TeepEncodeError(f"{name} element {index}: {exc.detail}") from None
    return out


def _generic_out(value: Any, depth: int) -> Any:
    if check_any(value, depth, DEFAULT_MAX_DEPTH):
        return _wrap_floats(value)
    return value


def _field_out(kind: str, checker: Callable[[Any, int, int], Any], value: Any, depth: int) -> Any:
    if kind == "tc_list":
        return [_claims_out(c, i) for i, c in enumerate(_tuple_of(value, SystemPropertyClaims, "tc-list"))]
    if kind == "rtc_list":
        return [_rtc_out(r, i) for i, r in enumerate(_tuple_of(value, RequestedTcInfo, "requested-tc-list"))]
    if kind == "any":
        return _generic_out(value, depth)
    return checker(value, depth, DEFAULT_MAX_DEPTH)


def _tuple_of(value: Any, cls: type, what: str) -> tuple[Any, ...]:
    if not isinstance(value, tuple) or not value:
        raise Invalid(WrongType, f"{what} must be a non-empty tuple of {cls.__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, cls):
            raise Invalid(WrongType, f"item {i} is a {type(item).__name__}, expected {cls.__name__}")
    return value


def _ordered(items: Mapping[int, Any], order: tuple[int, ...] | None) -> dict[int, Any]:
    if not order:
        return dict(items)
    out = {k: items[k] for k in order if k in items}
    for k, v in items.items():
        if k not in out:
            out[k] = v
    return out


def _claims_out(claims: SystemPropertyClaims, index: int) -> dict[int, Any]:
    try:
        items: dict[int, Any] = {
            SYSTEM_COMPONENT_ID: CHECKERS["compid"](claims.component_id, 5, DEFAULT_MAX_DEPTH)
        }
        params = claims.parameters
        if not params:
            raise Invalid(
                MissingMember, "system-property-claims needs at least one SUIT parameter besides label 0"
            )
        for k, v in params.items():
            if type(k) is not int or k == SYSTEM_COMPONENT_ID or not INT64_MIN <= k <= UINT64_MAX:
                raise Invalid(WrongType, f"parameter label {value_repr(k)} must be a non-zero integer")
            try:
                items[k] = _generic_out(v, 5)
            except Invalid as exc:
                raise exc.within(f"label {k}") from None
    except Invalid as exc:
        raise exc.within(f"item {index}") from None
    return _ordered(items, claims.label_order)


def _rtc_out(info: RequestedTcInfo, index: int) -> dict[int, Any]:
    try:
        CHECKERS["rtc_list"]((info,), 3, DEFAULT_MAX_DEPTH)
    except Invalid as exc:
        raise exc.within(f"item {index}") from None
    items: dict[int, Any] = {16: info.component_id}
    if info.tc_manifest_sequence_number is not None:
        items[17] = info.tc_manifest_sequence_number
    if info.have_binary is not None:
        items[18] = info.have_binary
    for k, v in info.extensions.items():
        if k in (16, 17, 18):
            raise Invalid(WrongType, f"item {index}: extension label {k} is a known field; set the field")
        items[k] = _generic_out(v, 5)
    return _ordered(items, info.label_order)


__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "TeepDecodeError",
    "TeepEncodeError",
    "decode",
    "decode_value",
    "encode",
    "to_cbor_structure",
]
