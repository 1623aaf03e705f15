"""TEEP messages <-> CBOR (application/teep+cbor), strict, total and byte-exact.

Decoding: size limit, then (only when the input may hold a tag cbor2 would interpret expensively)
the head scanner of `scanner.py`, then cbor2 with its depth limit, then the field checks of
`values.py`, and last a determinism check: the decoded item re-encoded must give the input bytes.
So whatever `decode` accepts, `encode` gives back byte for byte, and everything else (indefinite
lengths, longer-than-needed heads, duplicate keys, trailing bytes, ...) raises a precise
`TeepDecodeError` — found by the scanner once the cheap check has failed. That order is the
reference (`_decode_checked`); `decode` first tries a short way (a C check of plain deterministic
CBOR instead of the re-encoding, then a generated builder per message type) and keeps only a
successful result from it (see `decode`).

Encoding: definite lengths and shortest heads (cbor2 does both), floats in their shortest exact
form, option labels in the CDDL order of each message (token first, as in the working group's
examples; RFC 8949 §4.2.1 core sorting would put 3 before 20 and NOT reproduce them), or in the
message's `label_order` when it has one (decoded messages do), then unknown labels (`extensions`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import cbor2

from teep_coap.encoding.builders import BUILDERS as _BUILDERS
from teep_coap.encoding.cbor2_tools import (
    CBOR2_DEPTH,
    COSTLY_ONLY_ABOVE,
    SHAPE_DEPTH,
    TOOLS,
    contains_float,
    dumps,
    generic_parts,
    loads,
    may_hold_costly_tag,
    may_hold_float,
    wrap_floats,
)
from teep_coap.encoding.errors import (
    MissingMember,
    MissingPositional,
    NotAnArray,
    NotCbor,
    NotDeterministic,
    TeepDecodeError,
    TeepEncodeError,
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
from teep_coap.encoding.values import (
    CHECKERS,
    FAST_ASCII,
    FAST_BSTRS,
    FAST_BYTES,
    FAST_COMPIDS,
    FAST_INT,
    FAST_TEXT,
    FAST_UINTS,
    Invalid,
    check_any,
    fast_check,
    instance_template,
    type_name,
)
from teep_coap.model.teep import RequestedTcInfo, SystemPropertyClaims, TeepMessage

_join = b"".join
_cbor2_loads = cbor2.loads

_plain: Callable[[bytes], bool] | None
try:
    from teep_coap.encoding._plaincbor import plain as _plain
except ImportError:  # not compiled (a source tree without `pip install`): every input takes the checked way
    _plain = None
PLAIN_CHECK_COMPILED = _plain is not None  # False: decode is correct but takes the slower checked way

DEFAULT_MAX_SIZE = 1 << 20
DEFAULT_MAX_DEPTH = 16

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


# Per wire type, for the decoder: CDDL name, label -> option spec, positional specs, class, instance
# template (see values.instance_template). A spec is (attribute, inline check code, lo, hi, checker),
# positional specs add the CDDL name; building them once here keeps the hot path free of look-ups.
_OptionSpec = tuple[str, int, int, int, Callable[[Any, int, int], Any]]
_PositionalSpec = tuple[str, int, int, int, Callable[[Any, int, int], Any], str]
_TYPE_INFO: dict[
    int,
    tuple[str, dict[int, _OptionSpec], tuple[_PositionalSpec, ...], type[TeepMessage], dict[str, Any] | None],
] = {
    int(t): (
        MESSAGE_NAMES[t],
        {label: (attr, *fast_check(kind), CHECKERS[kind]) for label, attr, kind in OPTION_FIELDS[t]},
        tuple((attr, *fast_check(kind), CHECKERS[kind], cname) for attr, kind, cname in POSITIONAL_FIELDS[t]),
        MESSAGE_CLASS[int(t)],
        instance_template(MESSAGE_CLASS[int(t)]),
    )
    for t in OPTION_FIELDS
}
_TYPES_TEXT = ", ".join(f"{int(t)} ({name})" for t, name in MESSAGE_NAMES.items())


# ---------------------------------------------------------------- decoding


def decode(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH
) -> TeepMessage:
    """Decode one TEEP message (the bare array, not a COSE object) from CBOR bytes.

    Raises a `TeepDecodeError` subclass naming what is wrong and where, for any input.

    The usual case takes a short way: when the C check `_plaincbor.plain` shows the input to be
    plain deterministic CBOR (no tags, no floats, shortest heads, definite lengths, distinct keys,
    nothing after the item: see `_plaincbor.c`), it is what cbor2 decodes and re-encodes to the same
    bytes, so the determinism check and the costly-tag search have nothing left to find, and only
    cbor2 and the message type's generated builder (`builders.py`: the field checks inlined) run.
    Only a message is returned from there; anything else, error or not, goes the checked way
    (`_decode_checked`), which is the reference for results and errors.
    """
    if (
        type(data) is bytes
        and len(data) <= max_size
        and SHAPE_DEPTH <= max_depth < CBOR2_DEPTH
        and _plain is not None
        and _plain(data)
    ):
        tools = TOOLS
        try:
            obj = tools.decode_bytes(data)
        except Exception:  # e.g. a text string that is not UTF-8: the checked way names it
            tools.reset_decoder()
        else:
            if type(obj) is list and obj and type(obj[0]) is int:
                build = _BUILDERS.get(obj[0])
                if build is not None:
                    msg = build(obj, max_depth)
                    if msg is not None:
                        return msg
    return _decode_checked(data, max_size, max_depth)


def _decode_checked(data: bytes, max_size: int, max_depth: int) -> TeepMessage:
    """`decode` in its reference order: size, costly-tag search (and scanner), cbor2, field checks,
    then the determinism check (the scanner names the cause of a difference)."""
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise NotCbor(f"input must be bytes, got {type(data).__name__}")
        data = bytes(data)
    size = len(data)
    if size > max_size:
        raise TooLarge(f"message is {size} bytes, over the limit of {max_size}")
    if not size:
        raise NotCbor("empty input: expected a CBOR array")
    # the costly-tag search, behind a gate of one memchr per tag head byte (about 10 ns each)
    if (
        0xD8 in data
        or 0xD9 in data
        or 0xDA in data
        or 0xDB in data
        or (size > COSTLY_ONLY_ABOVE and (0xC4 in data or 0xC5 in data))
    ) and may_hold_costly_tag(data):
        scan(data, max_depth)
    tools = TOOLS
    try:
        # cbor2's own limit (400) bounds its recursion; below it, our checks bound the depth: the
        # fixed-shape fields nest at most SHAPE_DEPTH levels and `check_any` counts the rest.
        if SHAPE_DEPTH <= max_depth < CBOR2_DEPTH:
            obj = tools.decode_bytes(data)
        else:
            obj = _cbor2_loads(data, max_depth=max_depth + 1)
    except Exception:
        tools.reset_decoder()
        obj = loads(data, max_depth)  # again, to turn the failure into the precise error
    msg = _message_from_obj(obj, max_depth)
    parts = tools.parts
    parts.clear()
    try:
        tools.encode(obj)  # the raw re-encoding (`dumps` inlined: this is the hot path)
        again = _join(parts)
        parts.clear()
        # cbor2 alone writes every float in 8 bytes; `encode` writes the shortest exact form. So if a
        # float sits in the message, only `encode(msg)` tells whether the input was deterministic.
        # Without a 0xfb byte the raw re-encoding cannot have matched a message holding a float.
        if again == data:
            if 0xFB in data and contains_float(generic_parts(msg)):
                again = encode(msg)
        elif may_hold_float(data) and contains_float(generic_parts(msg)):
            again = encode(msg)
    except Exception as exc:  # safety net (never seen in tests or fuzzing): decode stays total
        tools.reset_encoder()  # a failed encode may leave the encoder dirty
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
    if may_hold_costly_tag(data):
        scan(data, max_depth)
    obj = loads(data, max_depth)
    try:
        has_float = check_any(obj, 1, max_depth)
    except Invalid as exc:
        raise exc.cls(f"CBOR item: {exc.detail}") from None
    again = dumps(wrap_floats(obj) if has_float else obj)
    if again != data:
        scan(data, max_depth)
        raise NotDeterministic("input is not in deterministic encoding")
    return obj


def _message_from_obj(obj: Any, max_depth: int) -> TeepMessage:
    if type(obj) is not list:
        raise NotAnArray(f"a TEEP message is a CBOR array, got {type_name(obj)}")
    size = len(obj)
    if not size:
        raise MissingPositional("element 0 (type) is missing: the array is empty")
    mtype = obj[0]
    if type(mtype) is not int:
        raise WrongType(f"element 0 (type): expected unsigned integer, got {type_name(mtype)}")
    try:
        name, table, positional, cls, template = _TYPE_INFO[mtype]
    except KeyError:
        raise UnknownMessageType(
            f"message type {mtype if -1e9 < mtype < 1e9 else '<large>'} is unknown; known: {_TYPES_TEXT}"
        ) from None
    if size < 2:
        raise MissingPositional(f"{name}: element 1 (options map) is missing")
    options = obj[1]
    if type(options) is not dict:
        raise WrongType(f"{name} element 1 (options): expected map, got {type_name(options)}")
    fields: dict[str, Any] = {} if template is None else template.copy()
    extensions: dict[int, Any] = {}
    for label, value in options.items():
        spec = table.get(label) if type(label) is int else None
        if spec is not None:
            # inline checks of the simple kinds (values.FAST_CHECKS; the most frequent first); the
            # checker handles the rest
            attr, code, lo, hi, checker = spec
            t = type(value)
            if code == FAST_BYTES:
                if t is bytes and lo <= len(value) <= hi:
                    fields[attr] = value
                    continue
            elif code == FAST_INT:
                if t is int and lo <= value <= hi:
                    fields[attr] = value
                    continue
            elif code == FAST_ASCII:
                if t is str and lo <= len(value) <= hi and value.isascii():
                    fields[attr] = value
                    continue
            elif code == FAST_BSTRS:
                if t is list and value:
                    for item in value:
                        if type(item) is not bytes:
                            break
                    else:
                        fields[attr] = tuple(value)
                        continue
            elif code == FAST_UINTS:
                if t is list and value:
                    for item in value:
                        if type(item) is not int or not lo <= item <= hi:
                            break
                    else:
                        fields[attr] = tuple(value)
                        continue
            elif code == FAST_COMPIDS:
                if t is list and value:
                    compids = []
                    for compid in value:
                        if type(compid) is not list:
                            break
                        for item in compid:
                            if type(item) is not bytes:
                                break
                        else:
                            compids.append(tuple(compid))
                            continue
                        break
                    else:
                        fields[attr] = tuple(compids)
                        continue
            elif code == FAST_TEXT and t is str:
                fields[attr] = value
                continue
            try:
                fields[attr] = checker(value, 3, max_depth)
            except Invalid as exc:
                raise exc.cls(f"{name} options label {label_name(label)}: {exc.detail}") from None
            continue
        try:
            if type(label) is not int or not 0 <= label <= UINT64_MAX:  # a bignum is no uint
                raise WrongType(
                    f"{name} options: key {value_repr(label)} is a {type_name(label)}, "
                    f"expected an unsigned integer label"
                )
            check_any(value, 3, max_depth)
            extensions[label] = value
        except Invalid as exc:
            raise exc.cls(f"{name} options label {label_name(label)}: {exc.detail}") from None
    index = 2
    for attr, code, lo, hi, checker, cname in positional:
        if size <= index:
            raise MissingPositional(f"{name}: element {index} ({cname}) is missing")
        value = obj[index]
        if code == FAST_INT and type(value) is int and lo <= value <= hi:
            fields[attr] = value
        else:
            try:
                fields[attr] = checker(value, 2, max_depth)
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
        fields["extra_positional"] = tuple(extra)
    fields["extensions"] = extensions
    fields["label_order"] = tuple(options)
    if template is None:
        return cls(**fields)
    msg = _new(cls)  # `values.install`, inlined
    _set_dict(msg, "__dict__", fields)
    return msg


_new = object.__new__
_set_dict = object.__setattr__


def value_repr(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or -(10**18) < value < 10**18 else "<large integer>"
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------- encoding


def encode(msg: TeepMessage) -> bytes:
    """Encode a TEEP message model as deterministic CBOR (see the module docstring for the order).

    Raises `TeepEncodeError` if the model violates the CDDL (the message says which field and why).
    """
    return dumps(to_cbor_structure(msg))


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
        return wrap_floats(value)
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
