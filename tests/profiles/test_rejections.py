"""One mapping from engine errors to transport answers, for the TEEP and the OTrP TAM handler."""

from __future__ import annotations

import pytest

from teep_coap.errors import TeepCoapError
from teep_coap.otrp.model import OtrpDecodeError, OtrpIdentityMismatch, OtrpProtocolError, OtrpSecurityError
from teep_coap.profiles.rejections import rejection_for
from teep_coap.protocol.errors import IdentityMismatch, InvalidMessage, TamFailure
from teep_coap.transport.base import Rejection


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (InvalidMessage("x"), Rejection.BAD_REQUEST),
        (IdentityMismatch("x"), Rejection.FORBIDDEN),
        (TamFailure("x"), Rejection.SERVER_ERROR),
        (TeepCoapError("x"), Rejection.SERVER_ERROR),
        (OtrpDecodeError("a.b", "x"), Rejection.BAD_REQUEST),
        (OtrpSecurityError("x"), Rejection.BAD_REQUEST),
        (OtrpProtocolError("x"), Rejection.BAD_REQUEST),
        # a subclass of OtrpProtocolError: the more specific row must win
        (OtrpIdentityMismatch("x"), Rejection.FORBIDDEN),
        (ValueError("a bug, not an engine error"), None),
    ],
)
def test_rejection_for(exc: BaseException, expected: Rejection | None) -> None:
    assert rejection_for(exc) is expected
