"""Typed errors of the encoding layer.

Every problem a decoder finds is a `TeepDecodeError` (also a `ValueError`, so generic callers can catch
that) whose message names what is wrong and where: the byte offset, or the path inside the message
(`options[20]`, `element 3`, ...). Callers that need to react differently (e.g. the CoAP transport
answering 4.13 for `TooLarge`) match on the subclass.
"""

from __future__ import annotations

from teep_coap.errors import TeepCoapError


class TeepDecodeError(TeepCoapError, ValueError):
    """Input bytes (or JSON) are not a valid TEEP message."""


class NotCbor(TeepDecodeError):
    """The bytes are not well-formed CBOR (truncated, reserved values, invalid UTF-8, ...)."""


class TrailingBytes(TeepDecodeError):
    """A complete CBOR item is followed by more bytes."""


class NotAnArray(TeepDecodeError):
    """The top-level item is not the TEEP message array."""


class UnknownMessageType(TeepDecodeError):
    """The first array element is not a TEEP message type this codec knows (1, 2, 3, 5, 6)."""


class MissingPositional(TeepDecodeError):
    """A positional member (options map, cipher suites, ..., err-code) is absent."""


class MissingMember(TeepDecodeError):
    """A mandatory map member is absent (e.g. component-id in requested-tc-info)."""


class WrongType(TeepDecodeError):
    """A value has the wrong CBOR type (e.g. label 20 is a text string, expected a byte string)."""


class SizeOutOfRange(TeepDecodeError):
    """A value's size or magnitude is outside the CDDL range (token 8..64 bytes, err-msg 1..128, ...)."""


class IndefiniteLength(TeepDecodeError):
    """An indefinite-length string, array or map: TEEP messages use definite lengths only."""


class NotDeterministic(TeepDecodeError):
    """Well-formed CBOR that is not in the deterministic (preferred) encoding this codec emits:
    a longer-than-needed integer/length, a duplicate map key, a float wider than needed, ..."""


class DuplicateKey(TeepDecodeError):
    """A map has the same key twice (cbor2 would silently keep the last one)."""


class UnsupportedValue(TeepDecodeError):
    """A CBOR value this codec cannot carry losslessly (e.g. tags that cbor2 turns into Python objects)."""


class TooDeep(TeepDecodeError):
    """Nesting deeper than the allowed maximum."""


class TooLarge(TeepDecodeError):
    """The input is larger than the allowed maximum size."""


class TeepEncodeError(TeepCoapError, ValueError):
    """A model given to the encoder violates the CDDL (wrong type, size out of range, ...)."""
