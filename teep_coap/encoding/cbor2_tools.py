"""How the codec drives cbor2: one kept encoder and decoder per thread, floats in their shortest exact
form, and the screen that sends input holding a costly tag to the scanner before cbor2 sees it.
Split out of `encoding.cbor_codec`, which is the only user.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable
from typing import Any

import cbor2
from cbor2 import CBORDecodeError, CBORTag, FrozenDict

from teep_coap.encoding.errors import NotCbor, TooDeep
from teep_coap.encoding.scanner import scan
from teep_coap.model.teep import QueryResponse, TeepMessage

# cbor2 interprets some tags at a cost we refuse to pay before checking (see scanner.REFUSED_TAGS):
# 28/29 (value sharing) and 25/256 (string references) can expand exponentially when re-encoded, at
# any input size; 4/5 around a bignum and 30 (rational) take quadratic time, 35/36 parse text, which
# only matters for large inputs (200 KB: 8 s; 16 KB: a few ms). Their heads, followed by what must
# come next, are the byte patterns below (tag heads longer than needed included: cbor2 accepts them).
# Only if one of them occurs anywhere in the input (heads or string contents alike) does the scanner
# run before cbor2. The checked way first asks whether any tag head byte that starts a pattern occurs
# at all (one memchr-fast `in` each, ~10 ns); only then are the patterns looked for. (The short way of
# `decode` needs none of this: `_plaincbor.plain` refuses every tag.)
COSTLY_ONLY_ABOVE = 16 * 1024
_ARRAY_HEADS = frozenset([0x82, 0x98, 0x99, 0x9A, 0x9B, 0x9F])  # what a tag 4/5 array can start with
_D8_LARGE = frozenset([*range(0x00, 0x18), 0x19, 0x1C, 0x1D, 0x1E, 0x23, 0x24])


def _costly_at(data: bytes, lead: int, i: int) -> bool:
    """Does the tag head candidate `lead` at offset i start one of the costly patterns of a large
    input?"""
    nxt = data[i + 1 : i + 7]
    if lead == 0xD8:
        return bool(nxt) and nxt[0] in _D8_LARGE
    if lead == 0xD9:
        return nxt[:1] == b"\x00" or nxt[:2] == b"\x01\x00"
    if lead == 0xDA:
        return nxt[:2] == b"\x00\x00"
    if lead == 0xDB:
        return nxt[:6] == b"\x00" * 6
    return bool(nxt) and nxt[0] in _ARRAY_HEADS  # 0xc4, 0xc5


_LEADS_LARGE = (b"\xc4", b"\xc5", b"\xd8", b"\xd9", b"\xda", b"\xdb")

# Up to COSTLY_ONLY_ABOVE the patterns are few and fixed. Each is a tag head byte 0xd8-0xdb followed
# by one of 0x00, 0x01, 0x19, 0x1c, 0x1d; one `translate` maps those two byte classes to 0xd8 and 0x00
# (everything else to 0x41), so a single literal search finds every candidate pair (sre's literal
# scan: ~1 ns per byte in all, where the alternation below costs ~3 ns per byte, 1.1 µs for the
# 360-byte Update example). Only a candidate pair brings the exact patterns out.
_PAIR_CLASSES = bytes(
    0xD8 if b in (0xD8, 0xD9, 0xDA, 0xDB) else 0x00 if b in (0x00, 0x01, 0x19, 0x1C, 0x1D) else 0x41
    for b in range(256)
)
_CANDIDATE_PAIR = re.compile(b"\xd8\x00").search
_SMALL_PATTERNS = re.compile(rb"\xd8[\x19\x1c\x1d]|\xd9(?:\x00|\x01\x00)|\xda\x00\x00|\xdb\x00{6}").search


def may_hold_costly_tag(data: bytes) -> bool:
    if len(data) <= COSTLY_ONLY_ABOVE:
        candidate = _CANDIDATE_PAIR(data.translate(_PAIR_CLASSES))
        return candidate is not None and _SMALL_PATTERNS(data) is not None
    find = data.find
    for lead in _LEADS_LARGE:
        i = find(lead)
        while i != -1:
            if _costly_at(data, lead[0], i):
                return True
            i = find(lead, i + 1)
    return False


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


class _Sink:
    """What the reused encoder writes to. cbor2's C encoder calls `write` once per head and string; a
    list's `append` is cheaper per call than `BytesIO.write`, and one `b"".join` gives the bytes."""

    __slots__ = ("write",)


class _Tools(threading.local):
    """One cbor2 encoder and one decoder per thread, reused: `cbor2.dumps` and `cbor2.loads` spend
    most of their time on small messages setting one up (a Success: 0.9 µs per `loads`, 0.3 µs per
    `decode_from_bytes` of a kept decoder). A kept decoder carries nothing from one call to the
    next: cbor2 resets its value-sharing table after each top-level decode, string-reference
    namespaces only exist inside their tag, and tags 25/256/28/29 never reach cbor2 here (the
    costly-tag search sends any input holding them to the scanner, which refuses them). After any
    failure the tool concerned is replaced anyway, so no half-done state is ever reused."""

    def __init__(self) -> None:
        self.reset_encoder()
        self.reset_decoder()

    def reset_encoder(self) -> None:
        parts: list[bytes] = []
        sink = _Sink()
        sink.write = parts.append  # type: ignore[attr-defined]  # slots attribute set once here
        self.parts = parts
        self.encoder = cbor2.CBOREncoder(sink, default=_default)  # type: ignore[arg-type]  # has write
        self.encode = self.encoder.encode

    def reset_decoder(self) -> None:
        self.decode_bytes: Callable[[bytes], Any] = cbor2.CBORDecoder(io.BytesIO(b"")).decode_from_bytes


TOOLS = _Tools()
_join = b"".join


def may_hold_float(data: bytes) -> bool:
    """False if no float head byte (0xf9-0xfb) occurs anywhere: then the message holds no float.
    (memchr through `in` is several times faster than a character-class regex here.)"""
    return 0xF9 in data or 0xFA in data or 0xFB in data


CBOR2_DEPTH = 399  # cbor2.loads refuses more than 400 levels, counting leaves as one
SHAPE_DEPTH = 6  # deepest container of a known field: tc-list -> claims -> component-id = level 5


def dumps(obj: Any) -> bytes:
    tools = TOOLS
    parts = tools.parts
    parts.clear()
    try:
        tools.encode(obj)
    except BaseException:
        tools.reset_encoder()  # a failed encode may leave the encoder's state dirty: start afresh
        raise
    out = _join(parts)
    parts.clear()  # keep no reference to the caller's strings
    return out


def wrap_floats(value: Any) -> Any:
    """Copy of a generic value with every float wrapped for shortest-form encoding."""
    t = type(value)
    if t is float:
        return _MinimalFloat(value)
    if t is list or t is tuple:
        return [wrap_floats(v) for v in value]
    if t is dict or t is FrozenDict:
        # keys holding floats are refused by `check_any` (a wrapped float is not hashable)
        return {k: wrap_floats(v) for k, v in value.items()}
    if t is CBORTag:
        return CBORTag(value.tag, wrap_floats(value.value))
    return value


def generic_parts(msg: TeepMessage) -> list[Any]:
    """The parts of a message that may hold arbitrary CBOR (hence floats); known fields cannot."""
    parts: list[Any] = [msg.extensions, msg.extra_positional]
    if isinstance(msg, QueryResponse):
        parts.append(msg.selected_teep_cipher_suite)
        parts.extend(claims.parameters for claims in msg.tc_list or ())
        parts.extend(info.extensions for info in msg.requested_tc_list or ())
    return parts


def contains_float(value: Any) -> bool:
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


def loads(data: bytes, max_depth: int) -> Any:
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
