"""A structural gate for CBOR (and JSON) not authenticated yet, run before any general decoder.

cbor2 turns some inputs into very costly work: a rational (tag 30) of two 511 KiB bignums took
15 s of CPU in its `Fraction` normalisation, bignums (tags 2 and 3) and decimal fractions grow
quadratically, and value sharing or string references can expand a small input into a huge object.
A signed TEEP (or OTrP) message never needs any of that around its payload: the COSE envelope is
arrays, maps, byte and text strings, 64-bit integers and true/false/null, under the COSE tags.
So everything a peer sends is first walked here, head by head (string contents skipped in O(1), an
explicit stack, no recursion, every length checked against the bytes left), and anything else is
refused before cbor2 sees it: any tag not in `allowed_tags` (bignums included), floats, simple values
other than false/true/null, indefinite lengths, nesting deeper than `max_depth`, trailing bytes.
The cost is linear in the input (a few hundred ns per CBOR item), far below the target of 10 ms of
TAM CPU per KiB received.

Hand-written because cbor2 has no option to refuse tags or floats before building them, and the
determinism scanner (`scanner.py`) is stricter than we may be about a peer's COSE envelope (shortest
heads, key order), which RFC 9052 does not demand of the envelope.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from teep_coap.encoding.errors import IndefiniteLength, NotCbor, TooDeep, TrailingBytes, UnsupportedValue
from teep_coap.encoding.json_codec import TeepJsonError

COSE_TAGS = frozenset({16, 17, 18, 96, 97, 98})  # Encrypt0, Mac0, Sign1, Encrypt, Mac, Sign (RFC 9052)
DEFAULT_MAX_DEPTH = 16  # a COSE_Sign: tag, array, signatures, signature, header map, value: 6
_SIMPLE_ALLOWED = (20, 21, 22)  # false, true, null
_MAJOR_NAMES = ("unsigned integer", "negative integer", "byte string", "text string", "array", "map")

_untrusted_ok: Callable[[bytes, frozenset[int], int], bool] | None
try:  # the same walk in C (`_plaincbor.c`); it only says yes, this walker says what is wrong
    from teep_coap.encoding._plaincbor import untrusted_ok as _untrusted_ok
except ImportError:  # not compiled (a source tree without `pip install`): the walk below does it all
    _untrusted_ok = None


def check_untrusted_cbor(
    data: bytes, *, allowed_tags: frozenset[int] = COSE_TAGS, max_depth: int = DEFAULT_MAX_DEPTH
) -> None:
    """Raise a `TeepDecodeError` subclass unless `data` is exactly one definite-length CBOR item made
    of integers, strings, arrays, maps, false/true/null and tags from `allowed_tags`, nested at most
    `max_depth` containers deep (tags count as one level). Returns None when the bytes may go to cbor2.
    """
    if _untrusted_ok is not None and _untrusted_ok(data, allowed_tags, max_depth):
        return
    n = len(data)
    if not n:
        raise NotCbor("empty input")
    i = 0
    remaining: list[int] = []  # items still expected by each open container (maps count 2 per entry)
    while True:
        if i >= n:
            raise NotCbor(f"truncated CBOR: input ends at offset {n} inside an unfinished item")
        start = i
        ib = data[i]
        i += 1
        major = ib >> 5
        ai = ib & 31
        if ai < 24:
            arg = ai
        elif ai < 28:
            size = 1 << (ai - 24)
            if i + size > n:
                raise NotCbor(f"truncated CBOR: the head at offset {start} needs {size} more bytes")
            arg = int.from_bytes(data[i : i + size], "big")
            i += size
        elif ai == 31 and major in (2, 3, 4, 5):
            raise IndefiniteLength(f"indefinite-length {_MAJOR_NAMES[major]} at offset {start}")
        else:
            raise NotCbor(f"byte 0x{ib:02x} at offset {start} is not a well-formed CBOR head here")

        if major == 7:
            if ai >= 25:
                raise UnsupportedValue(f"float at offset {start}: not allowed before authentication")
            if arg not in _SIMPLE_ALLOWED:
                raise UnsupportedValue(f"simple value {arg} at offset {start} is not false, true or null")
        elif major == 6:
            if arg not in allowed_tags:
                raise UnsupportedValue(f"CBOR tag {arg} at offset {start} is not allowed here")
            if len(remaining) >= max_depth:
                raise TooDeep(f"nesting deeper than {max_depth} levels at offset {start}")
            remaining.append(1)
            continue
        elif major in (2, 3):
            if arg > n - i:
                raise NotCbor(
                    f"truncated CBOR: {_MAJOR_NAMES[major]} at offset {start} claims {arg} bytes, "
                    f"only {n - i} remain"
                )
            i += arg
        elif major in (4, 5):
            count = arg * 2 if major == 5 else arg
            if count > n - i:  # every item takes at least one byte
                raise NotCbor(
                    f"truncated CBOR: {_MAJOR_NAMES[major]} at offset {start} claims {arg} entries, "
                    f"only {n - i} bytes remain"
                )
            if len(remaining) >= max_depth:
                raise TooDeep(f"nesting deeper than {max_depth} levels at offset {start}")
            if count:
                remaining.append(count)
                continue
        # an item is complete: account for it in the enclosing containers
        while remaining:
            remaining[-1] -= 1
            if remaining[-1]:
                break
            remaining.pop()
        if not remaining:
            if i != n:
                raise TrailingBytes(f"{n - i} trailing bytes after the CBOR item that ends at offset {i}")
            return


MAX_JSON_INT_DIGITS = 20  # a JWS header needs no integer beyond 64 bits


def _refuse_float(text: str) -> float:
    raise UnsupportedValue(f"JSON number {text[:20]!r}: no fractions or exponents before authentication")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise UnsupportedValue(f"JSON integer of {len(text)} digits: at most {MAX_JSON_INT_DIGITS}")
    return int(text)


def _refuse_constant(text: str) -> float:
    raise UnsupportedValue(f"JSON constant {text} is not JSON (RFC 8259)")


def loads_untrusted_json(data: bytes | str) -> Any:
    """`json.loads` for bytes not yet authenticated: floats, NaN/Infinity and integers longer than
    MAX_JSON_INT_DIGITS are refused while parsing, nesting beyond the interpreter's recursion limit is
    `TooDeep`, anything else malformed is `TeepJsonError`. Python's parser is linear
    in the input otherwise, so this bounds the CPU per byte as `check_untrusted_cbor` does."""
    try:
        return json.loads(
            data, parse_float=_refuse_float, parse_int=_bounded_int, parse_constant=_refuse_constant
        )
    except RecursionError:
        raise TooDeep("JSON nested too deeply") from None
    except UnsupportedValue:
        raise
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise TeepJsonError(f"not JSON: {exc}") from None
