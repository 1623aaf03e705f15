"""CBOR diagnostic notation (RFC 8949 §8, with the EDN comments of RFC 8610 App. G) for TEEP messages.

The printing and parsing of diagnostic notation is the `cbor-diag` package's (it comes with aiocoap);
this module only lays a TEEP message (or the COSE_Sign1/COSE_Sign around it) out one member per line
with the CDDL names as `/ comments /`. Every element is printed from its own original bytes, and the
result is read back with `cbor-diag` before it is returned: when it would not give the input bytes
back exactly (e.g. a non-shortest head), the plain `cbor-diag` rendering without names is returned
instead, so `diag_to_cbor(cbor_to_diag(x)) == x` always holds.
"""

from __future__ import annotations

from collections.abc import Callable

import cbor_diag

from teep_coap.encoding.errors import NotCbor, TeepDecodeError
from teep_coap.model.codes import Label, MessageType

# Positional members after `type` and `options`, by message type (the draft's CDDL).
_POSITIONAL: dict[int, tuple[str, ...]] = {
    int(MessageType.QUERY_REQUEST): (
        "supported-teep-cipher-suites",
        "supported-suit-cose-profiles",
        "data-item-requested",
    ),
    int(MessageType.ERROR): ("err-code",),
}
_TYPE_NAMES: dict[int, str] = {
    int(MessageType.QUERY_REQUEST): "query-request",
    int(MessageType.QUERY_RESPONSE): "query-response",
    int(MessageType.UPDATE): "update",
    int(MessageType.SUCCESS): "teep-success",
    int(MessageType.ERROR): "teep-error",
}
_COSE_TAGS = {18: ("COSE_Sign1", ("protected", "unprotected", "payload", "signature"))}
_COSE_TAGS[98] = ("COSE_Sign", ("protected", "unprotected", "payload", "signatures"))
_COSE_LABELS = {1: "alg", 2: "crit", 3: "content type", 4: "kid", 5: "IV", 6: "Partial IV", 33: "x5chain"}


class DiagError(TeepDecodeError):
    """Diagnostic notation that cbor-diag cannot read (the message says where)."""


def _head(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """(major type, additional info, argument, position after the head); argument -1 = indefinite."""
    if pos >= len(data):
        raise NotCbor(f"truncated at byte {pos}")
    first = data[pos]
    major, ai = first >> 5, first & 0x1F
    if ai < 24:
        return major, ai, ai, pos + 1
    if ai in (24, 25, 26, 27):
        size = 1 << (ai - 24)
        if pos + 1 + size > len(data):
            raise NotCbor(f"truncated head at byte {pos}")
        return major, ai, int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size
    if ai == 31:
        return major, ai, -1, pos + 1
    raise NotCbor(f"reserved additional information {ai} at byte {pos}")


def _skip(data: bytes, pos: int) -> int:
    """Position after the data item starting at `pos` (an explicit stack: no recursion)."""
    pending = 1
    stack: list[int] = []  # remaining items of enclosing containers (-1 = indefinite)
    while True:
        if pending == 0:
            if not stack:
                return pos
            pending = stack.pop()
            continue
        if pending < 0 and pos < len(data) and data[pos] == 0xFF:
            pos += 1
            pending = stack.pop()
            continue
        major, _, arg, pos = _head(data, pos)
        if pending > 0:
            pending -= 1
        if major in (2, 3):
            if arg < 0:
                stack.append(pending)
                pending = -1
            else:
                if pos + arg > len(data):
                    raise NotCbor(f"string runs past the end at byte {pos}")
                pos += arg
        elif major in (4, 5):
            count = arg * (2 if major == 5 else 1) if arg >= 0 else -1
            if count != 0:
                stack.append(pending)
                pending = count
        elif major == 6:
            stack.append(pending)
            pending = 1


def _children(data: bytes) -> tuple[int, int, list[bytes]] | None:
    """(major, argument, raw bytes of each child) of a definite, shortest-head array or map."""
    major, ai, arg, pos = _head(data, 0)
    if major not in (4, 5) or arg < 0 or (ai >= 24 and arg < (24 if ai == 24 else 1 << (4 << (ai - 24)))):
        return None
    items: list[bytes] = []
    for _ in range(arg * (2 if major == 5 else 1)):
        end = _skip(data, pos)
        items.append(data[pos:end])
        pos = end
    if pos != len(data):
        return None
    return major, arg, items


def _plain(data: bytes) -> str:
    return str(cbor_diag.cbor2diag(data))


def _embedded(data: bytes, render: Callable[[bytes], str]) -> str:
    """`<< … >>` around a byte string that holds CBOR, else its h'…' form."""
    major, ai, arg, pos = _head(data, 0)
    if major != 2 or arg <= 0 or len(data) - pos != arg or ai == 31:
        return _plain(data)
    inner = data[pos:]
    try:
        if _skip(inner, 0) != len(inner):
            return _plain(data)
        text = render(inner)
    except (NotCbor, ValueError):
        return _plain(data)
    return f"<< {text} >>"


def _indent(text: str, by: str) -> str:
    return text.replace("\n", "\n" + by)


def _map(data: bytes, names: dict[int, str], pad: str) -> str:
    parts = _children(data)
    if parts is None or parts[0] != 5 or not parts[2]:
        return _plain(data)
    items = parts[2]
    lines = []
    for key_raw, value_raw in zip(items[::2], items[1::2], strict=True):
        key = _plain(key_raw)
        name = names.get(int(key)) if key.lstrip("-").isdigit() else None
        comment = f"/ {name} / " if name else ""
        lines.append(f"{pad}  {comment}{key}: {_indent(_plain(value_raw), pad + '  ')}")
    return "{\n" + ",\n".join(lines) + f"\n{pad}}}"


def _teep(data: bytes) -> str:
    parts = _children(data)
    if parts is None or parts[0] != 4 or len(parts[2]) < 2:
        return _plain(data)
    items = parts[2]
    mtype = _plain(items[0])
    type_no = int(mtype) if mtype.isdigit() else -1
    type_name = _TYPE_NAMES.get(type_no, "unknown type")
    labels = {int(lab): lab.cddl_name for lab in Label}
    lines = [f"  / type: {type_name} / {mtype}", f"  / options / {_map(items[1], labels, '  ')}"]
    names = _POSITIONAL.get(type_no, ())
    for i, raw in enumerate(items[2:]):
        name = names[i] if i < len(names) else None
        lines.append(f"  {'/ ' + name + ' / ' if name else ''}{_indent(_plain(raw), '  ')}")
    return "[\n" + ",\n".join(lines) + "\n]"


def _cose(data: bytes, tag: int, body: bytes) -> str:
    kind, names = _COSE_TAGS[tag]
    parts = _children(body)
    if parts is None or parts[0] != 4 or len(parts[2]) != 4:
        return _plain(data)
    protected, unprotected, payload, last = parts[2]
    lines = [
        f"  / {names[0]} / {_embedded(protected, lambda b: _map(b, _COSE_LABELS, '  '))}",
        f"  / {names[1]} / {_map(unprotected, _COSE_LABELS, '  ')}",
        f"  / {names[2]}: TEEP message / {_indent(_embedded(payload, _teep), '  ')}",
        f"  / {names[3]} / {_plain(last)}",
    ]
    return f"/ {kind} / {tag}([\n" + ",\n".join(lines) + "\n])"


def _annotated(data: bytes) -> str:
    major, ai, arg, pos = _head(data, 0)
    if major == 6 and arg in _COSE_TAGS and ai == (24 if arg >= 24 else arg):
        return _cose(data, arg, data[pos:])
    if major == 4:
        return _teep(data)
    return _plain(data)


def cbor_to_diag(data: bytes) -> str:
    """Diagnostic notation of one CBOR item, with CDDL names as comments when it is a TEEP message
    (bare or in COSE_Sign1/COSE_Sign). Reading the text back gives exactly `data`."""
    try:
        plain = _plain(data)
    except ValueError as exc:
        raise NotCbor(f"not a single well-formed CBOR item: {exc}") from None
    try:
        text = _annotated(data)
    except (NotCbor, ValueError, RecursionError):
        return plain
    try:
        if bytes(cbor_diag.diag2cbor(text)) == data:
            return text
    except ValueError:
        pass
    return plain


def diag_to_cbor(text: str) -> bytes:
    """The CBOR bytes of diagnostic notation (EDN comments and encoding indicators honoured)."""
    try:
        return bytes(cbor_diag.diag2cbor(text))
    except ValueError as exc:
        first = str(exc).splitlines()[0].split(". Expected")[0] if str(exc) else "unreadable"
        raise DiagError(f"not CBOR diagnostic notation: {first}") from None
