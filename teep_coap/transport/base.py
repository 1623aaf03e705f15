"""The contract between transports and whatever sits above them.

Transports move opaque message bytes; they never parse them. A server calls a `MessageHandler` with
the request payload and what the transport knows of the peer; a client posts bytes and gets bytes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from teep_coap.errors import TeepCoapError


@dataclass(frozen=True)
class PeerInfo:
    """What the transport knows about the other side of one request."""

    transport: str  # "coap", "coaps", "coap+oscore", "http", "https"
    address: str  # "host:port" as the socket saw it
    identity: str | None = None  # DTLS PSK identity or OSCORE sender id (hex), if authenticated
    authenticated: bool = False  # True when the transport itself authenticated the peer


class Rejection(enum.Enum):
    """Why a handler refuses a request; each transport maps it to its own status code."""

    BAD_REQUEST = "bad-request"  # CoAP 4.00 / HTTP 400
    FORBIDDEN = "forbidden"  # CoAP 4.03 / HTTP 403 (transport and message identities disagree)
    UNSUPPORTED_MEDIA = "unsupported-media"  # CoAP 4.15 / HTTP 415
    TOO_LARGE = "too-large"  # CoAP 4.13 / HTTP 413
    SERVER_ERROR = "server-error"  # CoAP 5.00 / HTTP 500
    OVERLOADED = "overloaded"  # CoAP 5.03 + Max-Age / HTTP 503 + Retry-After
    BAD_GATEWAY = "bad-gateway"  # CoAP 5.02 / HTTP 502 (a gateway's upstream failed or refused)
    GATEWAY_TIMEOUT = "gateway-timeout"  # CoAP 5.04 / HTTP 504 (a gateway's upstream did not answer)


class RequestRejected(TeepCoapError):
    """Raised by a `MessageHandler` to make the transport answer with an error status."""

    def __init__(self, rejection: Rejection, reason: str, retry_after: float | None = None) -> None:
        super().__init__(f"{rejection.value}: {reason}")
        self.rejection = rejection
        self.reason = reason
        self.retry_after = retry_after


class TransportError(TeepCoapError):
    """A client-side transport failure: timeout, refused, error status, security failure."""


class TransportTimeout(TransportError):
    """No answer within the configured time (a wrong DTLS PSK shows up as this)."""


class PeerRejected(TransportError):
    """The server answered with an error status; `status` is its code as text (e.g. "4.00", "415")."""

    def __init__(self, status: str, detail: str = "") -> None:
        super().__init__(f"server answered {status}" + (f": {detail}" if detail else ""))
        self.status = status
        self.detail = detail


class MessageHandler(Protocol):
    """Server side: payload of one request in, payload of the answer out (None = no content)."""

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None: ...


class MessageClient(Protocol):
    """Client side of one binding: POST bytes to the TAM, get its answer (None = nothing more)."""

    async def post(self, payload: bytes) -> bytes | None: ...

    async def close(self) -> None: ...
