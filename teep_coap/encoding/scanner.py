"""A well-formedness scanner of CBOR head bytes, with the precise errors of this codec.

Hand-written because cbor2 has no switch for what TEEP needs: it accepts indefinite lengths, longer
than necessary integers and duplicate map keys without telling, and it interprets some tags (rational
numbers, value sharing, string references, ...) in ways that cost quadratic time or expand a small
input into a huge object. The scanner walks the heads only (string contents are skipped in O(1)), keeps
an explicit stack (no recursion), and refuses any length that could not fit in the remaining bytes, so
it is bounded in time and memory by the input size.

It runs before cbor2 when the input may hold one of the dangerous tags, and after a failure to name
what exactly is wrong and at which byte offset.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from teep_coap.encoding.errors import (
    DuplicateKey,
    IndefiniteLength,
    NotCbor,
    NotDeterministic,
    TooDeep,
    TrailingBytes,
    UnsupportedValue,
)

# Tags that cbor2 turns into Python objects in ways we refuse: costly (4, 5, 30 big rationals, 35
# regular expressions, 36 MIME), or sharing/referencing (25, 28, 29, 256) which breaks the tree shape
# and can expand exponentially when re-encoded.
REFUSED_TAGS: dict[int, str] = {
    4: "decimal fraction",
    5: "bigfloat",
    25: "string reference",
    28: "shareable value",
    29: "shared-value reference",
    30: "rational number",
    35: "regular expression",
    36: "MIME message",
    256: "string-reference namespace",
}

_MAJOR_NAMES = (
    "unsigned integer",
    "negative integer",
    "byte string",
    "text string",
    "array",
    "map",
    "tag",
    "simple/float",
)
_SHORTEST_LIMIT = {24: 24, 25: 0x100, 26: 0x10000, 27: 0x100000000}


def _float_is_shortest(ai: int, raw: bytes) -> bool:
    """True if the float in `raw` (2, 4 or 8 bytes) could not be written in fewer bytes."""
    if ai == 25:
        return True
    value = struct.unpack(">f" if ai == 26 else ">d", raw)[0]
    if math.isnan(value):
        return False  # the preferred NaN is the half-precision f97e00
    candidates = (("e", 2),) if ai == 26 else (("e", 2), ("f", 4))
    for fmt, _size in candidates:
        try:
            if struct.unpack(">" + fmt, struct.pack(">" + fmt, value))[0] == value:
                return False
        except (OverflowError, struct.error):
            continue
    return True


def scan(data: bytes, max_depth: int) -> None:
    """Check that `data` is exactly one well-formed, definite-length, deterministically encoded CBOR
    item nested at most `max_depth` containers deep (arrays, maps and tags count; the top array is 1).

    Raises the precise `TeepDecodeError` subclass; returns None if nothing is wrong.
    """
    n = len(data)
    i = 0
    # Each open container: [items left, is_map, items seen, start offset of the current key, set of keys]
    stack: list[list[Any]] = []
    while True:
        if i >= n:
            raise NotCbor(f"truncated CBOR: input ends at offset {n} inside an unfinished item")
        start = i
        ib = data[i]
        i += 1
        major = ib >> 5
        ai = ib & 31
        at_key = bool(stack) and stack[-1][1] and stack[-1][2] % 2 == 0
        if at_key:
            stack[-1][3] = start
        if ai < 24:
            arg = ai
        elif ai < 28:
            size = 1 << (ai - 24)
            if i + size > n:
                raise NotCbor(f"truncated CBOR: the head at offset {start} needs {size} more bytes")
            raw = data[i : i + size]
            arg = int.from_bytes(raw, "big")
            i += size
            if major == 7:
                if ai == 24 and arg < 32:
                    raise NotCbor(
                        f"simple value {arg} at offset {start} uses a two-byte form (not well-formed)"
                    )
                if ai > 24 and not _float_is_shortest(ai, raw):
                    raise NotDeterministic(
                        f"float at offset {start} is {size} bytes wide but fits in fewer (preferred form)"
                    )
            elif arg < _SHORTEST_LIMIT[ai]:
                raise NotDeterministic(
                    f"{_MAJOR_NAMES[major]} head at offset {start} uses {size + 1} bytes where fewer suffice"
                )
        elif ai < 31:
            raise NotCbor(f"reserved additional information {ai} at offset {start} (not well-formed)")
        else:
            if major in (2, 3, 4, 5):
                raise IndefiniteLength(
                    f"indefinite-length {_MAJOR_NAMES[major]} at offset {start}: TEEP uses definite lengths"
                )
            if major == 7:
                raise NotCbor(f"unexpected break byte 0xff at offset {start}")
            raise NotCbor(
                f"{_MAJOR_NAMES[major]} with additional information 31 at offset {start} (not well-formed)"
            )

        is_leaf = True
        if major in (2, 3):
            if arg > n - i:
                raise NotCbor(
                    f"truncated CBOR: {_MAJOR_NAMES[major]} at offset {start} claims {arg} bytes, "
                    f"only {n - i} remain"
                )
            if major == 3:
                try:
                    data[i : i + arg].decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise NotCbor(
                        f"text string at offset {start} is not valid UTF-8 ({exc.reason})"
                    ) from None
            i += arg
        elif major in (4, 5):
            count = arg * 2 if major == 5 else arg
            if count > n - i:
                raise NotCbor(
                    f"truncated CBOR: {_MAJOR_NAMES[major]} at offset {start} claims {arg} entries, "
                    f"only {n - i} bytes remain"
                )
            if count:
                is_leaf = False
                if len(stack) + 1 > max_depth:
                    raise TooDeep(f"nesting deeper than {max_depth} levels at offset {start}")
                stack.append([count, major == 5, 0, 0, set() if major == 5 else None])
            elif len(stack) + 1 > max_depth:
                raise TooDeep(f"nesting deeper than {max_depth} levels at offset {start}")
        elif major == 6:
            if arg in REFUSED_TAGS:
                raise UnsupportedValue(
                    f"CBOR tag {arg} ({REFUSED_TAGS[arg]}) at offset {start} is not supported"
                )
            is_leaf = False
            if len(stack) + 1 > max_depth:
                raise TooDeep(f"nesting deeper than {max_depth} levels at offset {start}")
            stack.append([1, False, 0, 0, None])

        if not is_leaf:
            continue
        # an item is complete: account for it in the enclosing containers
        while stack:
            top = stack[-1]
            if top[1] and top[2] % 2 == 0:  # a map key just ended
                key = data[top[3] : i]
                if key in top[4]:
                    raise DuplicateKey(f"duplicate map key at offset {top[3]}")
                top[4].add(key)
            top[2] += 1
            top[0] -= 1
            if top[0]:
                break
            stack.pop()
        if not stack:
            if i != n:
                raise TrailingBytes(f"{n - i} bytes follow the end of the CBOR item at offset {i}")
            return
