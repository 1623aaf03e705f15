"""SUIT envelopes for TEEP: build, parse, verify, process into the Agent's store, and report.

Public API (see docs/suit.md):
  parse_envelope(data) -> Envelope                      envelope + manifest decoded, no crypto
  verify_envelope(data, trust) -> Envelope              manifest digest + COSE_Sign1 + severed members,
                                                        before the manifest is decoded (lazily, on
                                                        first access of Envelope.manifest)
  build_envelope(payload, *, key, component_id, ...) -> bytes
  process_envelope(data, *, trust, store, fetcher, device, report_nonce) -> ProcessResult
  unlink(component_id, *, store) -> ProcessResult
  build_report / sign_report / parse_report / system_property_claims
Errors: SuitError and subclasses, each with `.reason` = SUIT report reason code.
"""

from teep_coap.security.suit.build import (
    build_envelope,
    build_manifest,
    default_manifest_component_id,
    teep_component_id,
)
from teep_coap.security.suit.codec import parse_envelope
from teep_coap.security.suit.constants import ReportReason
from teep_coap.security.suit.errors import (
    ComponentUnauthorised,
    ComponentUnsupported,
    ConditionFailed,
    ManifestDigestMismatch,
    OperationFailed,
    ParameterUnsupported,
    PayloadTooLarge,
    RollbackRefused,
    SeveringUnsupported,
    SuitError,
    SuitParseError,
    SuitReportError,
    Unauthorised,
    UnsupportedAlgorithm,
    UnsupportedCommand,
    UnsupportedCose,
    UnsupportedLayout,
)
from teep_coap.security.suit.model import (
    CommandSequence,
    Common,
    ComponentId,
    Envelope,
    Manifest,
    SuitCommand,
    SuitDigest,
)
from teep_coap.security.suit.processor import (
    DEFAULT_MAX_PAYLOAD_SIZE,
    DeviceIdentity,
    ProcessResult,
    process_envelope,
    unlink,
    unsupported_features,
)
from teep_coap.security.suit.report import (
    ReportResult,
    SuitRecord,
    SuitReport,
    build_report,
    parse_report,
    sign_report,
    system_property_claims,
)
from teep_coap.security.suit.verify import verify_envelope

__all__ = [
    "DEFAULT_MAX_PAYLOAD_SIZE",
    "CommandSequence",
    "Common",
    "ComponentId",
    "ComponentUnauthorised",
    "ComponentUnsupported",
    "ConditionFailed",
    "DeviceIdentity",
    "Envelope",
    "Manifest",
    "ManifestDigestMismatch",
    "OperationFailed",
    "ParameterUnsupported",
    "PayloadTooLarge",
    "ProcessResult",
    "ReportReason",
    "ReportResult",
    "RollbackRefused",
    "SeveringUnsupported",
    "SuitCommand",
    "SuitDigest",
    "SuitError",
    "SuitParseError",
    "SuitRecord",
    "SuitReport",
    "SuitReportError",
    "Unauthorised",
    "UnsupportedAlgorithm",
    "UnsupportedCommand",
    "UnsupportedCose",
    "UnsupportedLayout",
    "build_envelope",
    "build_manifest",
    "build_report",
    "default_manifest_component_id",
    "parse_envelope",
    "parse_report",
    "process_envelope",
    "sign_report",
    "system_property_claims",
    "teep_component_id",
    "unlink",
    "unsupported_features",
    "verify_envelope",
]
