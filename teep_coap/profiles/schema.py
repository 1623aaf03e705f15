"""The profile schema: one TOML file names protocol, encoding, transport, security and limits.

A profile is data only (a frozen dataclass); `teep_coap.profiles.loader` reads and checks the TOML and
`teep_coap.profiles.stack` turns a profile into running transports. Every unknown key or bad value is a
`ProfileError` that names the file, the key and what is allowed, so a typo never passes silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from teep_coap.errors import TeepCoapError
from teep_coap.transport.coap.options import COAP_SCHEMES, block_szx

PROTOCOLS = ("teep", "otrp")
ENCODINGS = ("cbor", "json")
SCHEMES = ("coap", "coaps", "coap+oscore", "http", "https")
SECURITY_MODES = ("none", "dtls-psk", "oscore", "edhoc", "tls")
# Which security mode each scheme needs by default (a coaps profile without DTLS would be a lie).
SCHEME_SECURITY = {
    "coap": "none",
    "coaps": "dtls-psk",
    "coap+oscore": "oscore",
    "http": "none",
    "https": "tls",
}
# The modes a scheme allows: OSCORE's context comes pre-shared ("oscore") or from an EDHOC handshake
# (RFC 9528, "edhoc"); on the wire both are OSCORE-protected CoAP.
SCHEME_SECURITY_ALLOWED = {scheme: (mode,) for scheme, mode in SCHEME_SECURITY.items()} | {
    "coap+oscore": ("oscore", "edhoc")
}
# tinydtls (aiocoap's DTLS) speaks only this PSK suite, the RFC 7925 mandatory one.
DTLS_CIPHER_SUITES = ("TLS_PSK_WITH_AES_128_CCM_8",)
# RFC 7959 §2.2: SZX 0..6 gives block sizes 16..1024.
BLOCK_SIZES = (16, 32, 64, 128, 256, 512, 1024)
# Content-Format 65000 is in the experimental range (RFC 7252 §12.3): no number is registered for
# application/teep+cbor (docs/protocol-facts.md §1.1).
DEFAULT_CONTENT_FORMAT = 65000
# The media type draft-15-era peers of draft-ietf-teep-otrp-over-http used (profile compat "draft-15").
MEDIA_TYPE_TEEP_COSE_DRAFT15 = "application/teep+cose"


class ProfileError(TeepCoapError):
    """A profile file is missing, unreadable, has an unknown key or a value out of range."""


@dataclass(frozen=True)
class TransportSettings:
    """Where and how message bytes travel."""

    scheme: str
    path: str = "/teep"
    content_format: int = DEFAULT_CONTENT_FORMAT  # CoAP Content-Format number
    media_type: str = ""  # HTTP Content-Type; "" = derived from protocol and encoding
    block_size: int = 1024  # CoAP block-wise (RFC 7959) size in bytes
    echo: bool = True  # plain CoAP TAM: RFC 9175 Echo before serving an address not yet proven
    # plain CoAP client: pad the empty connect POST to this many bytes (0: not), so a TAM with Echo
    # can answer it within 3x before the address is proven, without a 4.01 round trip
    pad_connect_to: int = 0

    @property
    def is_coap(self) -> bool:
        return self.scheme in COAP_SCHEMES

    @property
    def block_szx(self) -> int:
        return block_szx(self.block_size)


@dataclass(frozen=True)
class SecuritySettings:
    """Transport security; the messages carry their own COSE/JOSE protection in every mode."""

    mode: str = "none"
    dtls_cipher_suite: str = "TLS_PSK_WITH_AES_128_CCM_8"  # the one tinydtls speaks (RFC 7925)


@dataclass(frozen=True)
class Limits:
    """Bounds that keep both ends from hanging or swelling."""

    max_message_size: int = 1_048_576  # bytes of one TEEP message (also the block-wise total, Size1)
    request_timeout: float = 20.0  # seconds; every network wait of a client
    max_concurrent_requests: int = 64  # server: more in flight than this => 5.03 / 503
    overload_max_age: int = 2  # seconds the server asks an overloaded client to wait (Max-Age)
    max_session_rounds: int = 16  # Broker: POSTs in one session before it gives up
    idle_timeout: float = 60.0  # seconds: a server frees a silent peer's DTLS session / Echo proof
    # seconds a client keeps (re)starting its first DTLS handshake; request_timeout counts from then
    handshake_timeout: float = 60.0


@dataclass(frozen=True)
class Retransmission:
    """RFC 7252 §4.8 transmission parameters (CoAP only)."""

    ack_timeout: float = 2.0
    ack_random_factor: float = 1.5
    max_retransmit: int = 4

    @property
    def max_transmit_wait(self) -> float:
        """RFC 7252 §4.8.2: the longest a confirmable sender waits for an ACK, in seconds."""
        return self.ack_timeout * (2 ** (self.max_retransmit + 1) - 1) * self.ack_random_factor


@dataclass(frozen=True)
class Profile:
    """One binding: protocol × encoding × transport × security, with its limits."""

    name: str
    description: str
    protocol: str
    encoding: str
    transport: TransportSettings
    security: SecuritySettings = field(default_factory=SecuritySettings)
    limits: Limits = field(default_factory=Limits)
    retransmission: Retransmission = field(default_factory=Retransmission)
    source: str = ""  # the file it came from
    # "" = strict; "draft-15" also accepts that era's peers (docs/interop.md): the HTTP media type
    # application/teep+cose and two-element SUIT COSE profiles
    compat: str = ""

    @property
    def also_accepted_media_types(self) -> tuple[str, ...]:
        """HTTP media types accepted besides `media_type` (the compatibility setting's)."""
        if self.compat == "draft-15" and self.media_type == "application/teep+cbor":
            return (MEDIA_TYPE_TEEP_COSE_DRAFT15,)
        return ()

    @property
    def media_type(self) -> str:
        """Content type of the message bytes (HTTP header; informative for CoAP)."""
        if self.transport.media_type:
            return self.transport.media_type
        if self.protocol == "otrp":
            return "application/otrp+json" if self.encoding == "json" else "application/otrp+cbor"
        return "application/teep+json" if self.encoding == "json" else "application/teep+cbor"


# Allowed keys per table, with the type each value must have (bool is refused where int is wanted).
TOP_KEYS: dict[str, Any] = {
    "name": str,
    "description": str,
    "protocol": str,
    "encoding": str,
    "transport": dict,
    "security": dict,
    "limits": dict,
    "retransmission": dict,
    "compat": str,
}
TABLE_KEYS: dict[str, dict[str, Any]] = {
    "transport": {
        "scheme": str,
        "path": str,
        "content_format": int,
        "media_type": str,
        "block_size": int,
        "echo": bool,
        "pad_connect_to": int,
    },
    "security": {"mode": str, "dtls_cipher_suite": str},
    "limits": {
        "max_message_size": int,
        "request_timeout": (int, float),
        "max_concurrent_requests": int,
        "overload_max_age": int,
        "max_session_rounds": int,
        "idle_timeout": (int, float),
        "handshake_timeout": (int, float),
    },
    "retransmission": {"ack_timeout": (int, float), "ack_random_factor": (int, float), "max_retransmit": int},
}
