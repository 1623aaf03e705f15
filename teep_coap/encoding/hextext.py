"""Read CBOR input given either as raw bytes or as hex text with `#` comments (the vector files).

Auto-detection: input that is valid UTF-8 and consists, after removing `#` comments, only of hex
digits, whitespace and `0x`/`:`/`,` separators, is hex text; anything else is raw CBOR. A raw CBOR
TEEP message cannot be mistaken for hex text: it starts with an array head (0x80-0x9f), which cannot
start UTF-8 text. Used by the CLI of every area.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from teep_coap.encoding.errors import NotCbor, TeepDecodeError

_HEX_ONLY = re.compile(rb"[0-9A-Fa-f\s]*")
# Hex dumps sometimes write bytes as 0x41 or separate them with ':' or ','; accept those too.
_NOISE = re.compile(rb"0x|[:,]")


class InputError(TeepDecodeError):
    """The input file cannot be read or is hex text with an odd number of digits."""


def looks_like_hex(data: bytes) -> bool:
    """True if `data` is hex text (possibly with `#` comments, which may hold any UTF-8), not raw CBOR."""
    if not data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False  # raw TEEP messages start with 0x82..0x85, never valid UTF-8 there
    body = _strip_comments(data)
    return bool(body.strip()) and _HEX_ONLY.fullmatch(body) is not None


def _strip_comments(data: bytes) -> bytes:
    return b"\n".join(_NOISE.sub(b"", line.split(b"#", 1)[0]) for line in data.splitlines())


def parse_hex_text(text: bytes | str) -> bytes:
    """Bytes written as hex text; everything after `#` on a line is a comment."""
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else text
    body = b"".join(_strip_comments(raw).split())
    if _HEX_ONLY.fullmatch(body) is None:
        bad = next(chr(c) for c in body if chr(c) not in "0123456789abcdefABCDEF")
        raise NotCbor(f"hex text contains the non-hex character {bad!r}")
    if len(body) % 2:
        raise InputError(f"hex text has an odd number of digits ({len(body)})")
    return bytes.fromhex(body.decode("ascii"))


def read_cbor_input(data: bytes) -> bytes:
    """The CBOR bytes of an input that is raw CBOR or hex text (auto-detected)."""
    return parse_hex_text(data) if looks_like_hex(data) else data


def read_source(source: str) -> bytes:
    """Bytes of a file name, or of stdin for `-`; a missing file is an `InputError`, not a traceback."""
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror or exc}") from None


def read_cbor_source(source: str) -> bytes:
    """`read_source` then `read_cbor_input`."""
    return read_cbor_input(read_source(source))
