"""The TEEP rule on SUIT reports: with a token, every report's suit-report-nonce must equal it.

A suit-reports element is a bstr holding SUIT_Report_Protected (COSE_Sign1 / COSE_Mac0, tagged or not)
or a bare SUIT_Report map (docs/protocol-facts.md §6.4, §1.11). Only the nonce is read here, so the walk
is a few lines of cbor2 (the SUIT layer parses reports fully when a caller needs more).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cbor2

from teep_coap.errors import TeepCoapError

SUIT_REPORT_NONCE = 2


class ReportError(TeepCoapError):
    """A SUIT report is unreadable or its nonce does not match the token."""


def report_nonce(report: bytes) -> bytes | None:
    """The suit-report-nonce of one report element, or None when the report has none."""
    try:
        obj: Any = cbor2.loads(report)
        if isinstance(obj, cbor2.CBORTag) and obj.tag in (17, 18):
            obj = obj.value
        if isinstance(obj, list) and len(obj) == 4:
            obj = cbor2.loads(obj[2]) if isinstance(obj[2], bytes) else None
    except Exception as exc:  # attacker-controlled bytes: any cbor2 failure means "unreadable"
        raise ReportError(f"unreadable SUIT report: {exc}") from None
    if not isinstance(obj, dict):
        raise ReportError("SUIT report is not a map (nor a signed map)")
    nonce = obj.get(SUIT_REPORT_NONCE)
    return bytes(nonce) if isinstance(nonce, bytes) else None


def check_report_nonces(reports: Sequence[bytes], token: bytes) -> None:
    """Raise `ReportError` unless every report carries `token` as its nonce."""
    for i, report in enumerate(reports):
        nonce = report_nonce(report)
        if nonce != token:
            raise ReportError(
                f"suit-reports[{i}]: suit-report-nonce {nonce.hex() if nonce else 'absent'} is not the token"
            )
