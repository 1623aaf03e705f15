"""Errors of the protocol engines, one class per way a transport must answer.

The transports map them to status codes: `InvalidMessage` → CoAP 4.00 / HTTP 400, `IdentityMismatch`
→ 4.03 / 403, `TamFailure` → 5.00 / 500. A duplicate after the first valid answer is not an error: the
engine returns None and logs it.
"""

from __future__ import annotations

from teep_coap.errors import TeepCoapError


class ProtocolError(TeepCoapError):
    """Base of the engine errors."""


class InvalidMessage(ProtocolError):
    """Undecodable, unverifiable, unexpected or stale input; the message names what is wrong."""


class IdentityMismatch(ProtocolError):
    """The transport identity (DTLS PSK identity, OSCORE id) is not the device of the COSE kid."""


class TamFailure(ProtocolError):
    """The TAM could not produce an answer (store or internal failure); not the peer's fault."""


class AgentStateError(ProtocolError):
    """The Agent's state folder is missing, incomplete or unreadable."""


class ConfigError(ProtocolError):
    """A TAM/Agent configuration or policy file is invalid; the message names the file and field."""
