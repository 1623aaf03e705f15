"""Typed SUIT errors; each carries the SUIT report reason (draft-ietf-suit-report-18) it maps to.

The processor turns any of these into a failed SUIT_Report with `reason` as result-reason, so the
class picked for a failure is the protocol answer, not just a message.
"""

from __future__ import annotations

from typing import Any, ClassVar

from teep_coap.errors import TeepCoapError
from teep_coap.security.suit.constants import ReportReason


class SuitError(TeepCoapError):
    """Base of all SUIT failures; `reason` is the suit-report-reason code."""

    reason: ClassVar[ReportReason] = ReportReason.OPERATION_FAILED

    def __init__(
        self,
        message: str,
        *,
        section: int | None = None,
        offset: int | None = None,
        component_index: int | None = None,
        command: int | None = None,
        properties: dict[int, Any] | None = None,
    ) -> None:
        super().__init__(message)
        # Where it happened (for the SUIT record): manifest section, byte offset, component index,
        # the command number, and the parameters that were compared.
        self.section = section
        self.offset = offset
        self.component_index = component_index
        self.command = command
        self.properties: dict[int, Any] = properties or {}


class SuitParseError(SuitError):
    """Not CBOR, truncated, or not the shape the SUIT CDDL requires."""

    reason = ReportReason.CBOR_PARSE


class UnsupportedCose(SuitError):
    """The authentication block is a COSE structure we do not handle (e.g. COSE_Mac0)."""

    reason = ReportReason.COSE_UNSUPPORTED


class UnsupportedAlgorithm(SuitError):
    """Digest or signature algorithm not supported."""

    reason = ReportReason.ALG_UNSUPPORTED


class Unauthorised(SuitError):
    """Signature invalid, signer not trusted, or the manifest does not match the signed digest."""

    reason = ReportReason.UNAUTHORISED


class ManifestDigestMismatch(Unauthorised):
    """The manifest bytes do not hash to the digest in the authentication wrapper."""


class UnsupportedCommand(SuitError):
    """A command (condition/directive) or manifest member this processor does not implement."""

    reason = ReportReason.COMMAND_UNSUPPORTED


class UnsupportedLayout(UnsupportedCommand):
    """A manifest in the pre-Nov-2024 layout (install at key 9, now invoke)."""


class ComponentUnsupported(SuitError):
    """Component index/id out of range or not acceptable on this device."""

    reason = ReportReason.COMPONENT_UNSUPPORTED


class ComponentUnauthorised(SuitError):
    reason = ReportReason.COMPONENT_UNAUTHORISED


class ParameterUnsupported(SuitError):
    """A parameter (e.g. 19 encryption info) this processor does not implement or of a wrong type."""

    reason = ReportReason.PARAMETER_UNSUPPORTED


class SeveringUnsupported(SuitError):
    """A severed member is missing from the envelope or does not match its digest."""

    reason = ReportReason.SEVERING_UNSUPPORTED


class ConditionFailed(SuitError):
    """A condition (vendor, class, device, image digest/size, anti-rollback) is false."""

    reason = ReportReason.CONDITION_FAILED


class RollbackRefused(ConditionFailed):
    """The manifest's sequence number is not greater than the installed one."""


class OperationFailed(SuitError):
    """A directive could not be carried out (fetch failed, payload over the limit, store error)."""

    reason = ReportReason.OPERATION_FAILED


class PayloadTooLarge(OperationFailed):
    """A payload is larger than the device's configured limit."""


class SuitReportError(SuitError):
    """A SUIT report is malformed, or signing it was refused (same key as the TEEP messages)."""

    reason = ReportReason.CBOR_PARSE
