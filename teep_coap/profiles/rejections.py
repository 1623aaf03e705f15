"""The one mapping from engine errors to transport rejections, shared by the TEEP and OTrP TAM handlers.

A message the engine cannot accept (undecodable, unverifiable, out of place) is the peer's fault:
4.00 / HTTP 400. A sender whose transport identity belongs to another device: 4.03 / 403. The TAM's
own failure (database, internal): 5.00 / 500. The first matching row wins, so subclasses come first.
"""

from __future__ import annotations

from teep_coap.errors import TeepCoapError
from teep_coap.otrp.model import OtrpDecodeError, OtrpIdentityMismatch, OtrpProtocolError, OtrpSecurityError
from teep_coap.protocol.errors import IdentityMismatch, InvalidMessage, TamFailure
from teep_coap.transport.base import Rejection

REJECTIONS: tuple[tuple[tuple[type[BaseException], ...], Rejection], ...] = (
    ((IdentityMismatch, OtrpIdentityMismatch), Rejection.FORBIDDEN),
    ((InvalidMessage, OtrpDecodeError, OtrpSecurityError, OtrpProtocolError), Rejection.BAD_REQUEST),
    ((TamFailure, TeepCoapError), Rejection.SERVER_ERROR),
)


def rejection_for(exc: BaseException) -> Rejection | None:
    """The rejection a TAM handler answers `exc` with; None for an error that is no engine's (a bug:
    the transport answers it with its generic server error and logs the traceback)."""
    for types, rejection in REJECTIONS:
        if isinstance(exc, types):
            return rejection
    return None
