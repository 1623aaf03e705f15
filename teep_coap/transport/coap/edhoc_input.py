"""EDHOC message_1 and message_3 as they must look before lakers sees them (RFC 9528 §5.2, §5.4).

lakers-python 0.6.2, which aiocoap runs EDHOC with, panics (a Rust panic, raised in Python as
pyo3's PanicException, a BaseException) on inputs anyone can send: a message_1 whose G_X is no
point of P-256 (when message_2 is prepared: half of all 32-byte strings), and a message_3 whose
ciphertext is shorter than its 8-byte tag. Each panic wrote a Rust backtrace to stderr, left the
request unanswered, and a message_3 that fails in any way leaves the handshake's state unusable.
These checks refuse such input first, in Python, cheaply; what they let through lakers handles
with ordinary errors (fuzzed: `tests/transport/test_edhoc_input.py`).
"""

from __future__ import annotations

import io

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

METHOD_STATIC_DH = 3  # RFC 9528 §3.2: the only method this TAM answers (transport.coap.credentials)
SUITE = 2  # RFC 9528 §3.6: AES-CCM-16-64-128, SHA-256, P-256 (what lakers speaks)
TAG_LENGTH = 8  # AES-CCM-16-64-128's tag: the shortest possible CIPHERTEXT_3
MAX_ITEMS = 16  # CBOR items in a message_1: 4, and EAD_1 items (label and value) after them


def _sequence(data: bytes, limit: int) -> list[object] | None:
    """The items of a CBOR sequence, or None if it is not one (or has more than `limit` items)."""
    stream = io.BytesIO(data)
    items: list[object] = []
    try:
        while stream.tell() < len(data):
            if len(items) == limit:
                return None
            items.append(cbor2.CBORDecoder(stream).decode())
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, MemoryError):
        return None
    return items


def message_1_problem(message_1: bytes) -> str | None:
    """Why `message_1` (without the CoAP payload's leading `true`) is refused; None if it may go on."""
    items = _sequence(message_1, MAX_ITEMS)
    if items is None or len(items) < 4:
        return "not a CBOR sequence of METHOD, SUITES_I, G_X, C_I"
    method, suites, g_x, c_i = items[:4]
    if method != METHOD_STATIC_DH or isinstance(method, bool):
        return f"METHOD must be {METHOD_STATIC_DH}"
    offered = suites if isinstance(suites, list) else [suites]
    if not offered or not all(isinstance(s, int) and not isinstance(s, bool) for s in offered):
        return "SUITES_I is not an integer or a list of them"
    if offered[-1] != SUITE:
        return f"the selected cipher suite (last of SUITES_I) must be {SUITE}"
    if not isinstance(g_x, bytes) or len(g_x) != 32:
        return "G_X is not a 32-byte string"
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x02" + g_x)
    except ValueError:
        return "G_X is not the x-coordinate of a point of P-256"
    if not (
        isinstance(c_i, bytes) or (isinstance(c_i, int) and not isinstance(c_i, bool) and -24 <= c_i <= 23)
    ):
        return "C_I is neither a byte string nor an integer from -24 to 23"
    return None


def message_3_problem(message_3: bytes) -> str | None:
    """Why `message_3` is refused; None if it may go on."""
    items = _sequence(message_3, 1)
    if items is None or len(items) != 1 or not isinstance(items[0], bytes):
        return "not one CBOR byte string (CIPHERTEXT_3)"
    if len(items[0]) < TAG_LENGTH:
        return f"CIPHERTEXT_3 shorter than its {TAG_LENGTH}-byte tag"
    return None


__all__ = ["message_1_problem", "message_3_problem"]
