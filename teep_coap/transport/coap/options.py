"""What the CoAP binding needs to know of a stack, as its own small dataclasses.

The transport sits below `profiles`: it must not import the profile schema. `CoapOptions.adopt(x)` is
the one place a profile becomes CoAP options: it copies any object of the profile's shape (the
attribute paths are the profile's: `options.transport.block_size`, `options.limits.request_timeout`,
...); `profiles.stack.coap_options(profile)` calls it, and tests and scripts may hand a profile directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COAP_SCHEMES = ("coap", "coaps", "coap+oscore")


def block_szx(block_size: int) -> int:
    """The RFC 7959 SZX exponent of a block size: size = 2 ** (szx + 4)."""
    return block_size.bit_length() - 5


@dataclass(frozen=True)
class CoapLink:
    """Where the messages go: scheme, resource path, Content-Format, block size."""

    scheme: str
    path: str = "/teep"
    content_format: int = 65000  # experimental range (RFC 7252 §12.3), see docs/coap-binding.md
    block_size: int = 1024  # RFC 7959 block size in bytes (16..1024)
    echo: bool = True  # plain CoAP server: RFC 9175 Echo before serving an unproven address (echo.py)
    pad_connect_to: int = 0  # plain CoAP client: bytes its empty connect POST is padded to (echo.py)

    @property
    def is_coap(self) -> bool:
        return self.scheme in COAP_SCHEMES

    @property
    def block_szx(self) -> int:
        return block_szx(self.block_size)


@dataclass(frozen=True)
class CoapSecurity:
    """Transport security mode: none | dtls-psk | oscore | edhoc (OSCORE keyed by EDHOC)."""

    mode: str = "none"


@dataclass(frozen=True)
class CoapLimits:
    """Bounds of one server or client (same meaning as the profile's [limits])."""

    max_message_size: int = 1_048_576
    request_timeout: float = 20.0
    max_concurrent_requests: int = 64
    overload_max_age: int = 2
    idle_timeout: float = 60.0  # seconds: the server frees a silent peer's DTLS session / Echo proof
    handshake_timeout: float = 60.0  # seconds: a client's budget for its first DTLS handshake


@dataclass(frozen=True)
class CoapRetransmission:
    """RFC 7252 §4.8 transmission parameters."""

    ack_timeout: float = 2.0
    ack_random_factor: float = 1.5
    max_retransmit: int = 4


@dataclass(frozen=True)
class CoapOptions:
    """Everything `CoapServer`, `CoapClient` and `tuning_for` read."""

    name: str
    transport: CoapLink
    security: CoapSecurity = field(default_factory=CoapSecurity)
    limits: CoapLimits = field(default_factory=CoapLimits)
    retransmission: CoapRetransmission = field(default_factory=CoapRetransmission)

    @classmethod
    def adopt(cls, obj: Any) -> CoapOptions:
        """`obj` itself if it is CoapOptions, else a copy of the same-named attributes of `obj`."""
        if isinstance(obj, cls):
            return obj
        t, lim, r = obj.transport, obj.limits, obj.retransmission
        return cls(
            name=str(obj.name),
            transport=CoapLink(
                t.scheme,
                t.path,
                t.content_format,
                t.block_size,
                getattr(t, "echo", True),
                int(getattr(t, "pad_connect_to", 0)),
            ),
            security=CoapSecurity(obj.security.mode),
            limits=CoapLimits(
                lim.max_message_size,
                lim.request_timeout,
                lim.max_concurrent_requests,
                lim.overload_max_age,
                float(getattr(lim, "idle_timeout", 60.0)),
                float(getattr(lim, "handshake_timeout", 60.0)),
            ),
            retransmission=CoapRetransmission(r.ack_timeout, r.ack_random_factor, r.max_retransmit),
        )
