"""SUIT reports (draft-ietf-suit-report-18): build, sign (COSE_Sign1), parse; TEEP tc-list claims.

Layout: {99: [manifest-uri, SUIT_Digest], ?2: nonce (= TEEP token), 3: [records],
4: true / {5: result-code, 6: result-record, 7: result-reason}}; a record is
[manifest-id [*uint], manifest-section, section-offset, component-index, {parameters}].
result-code is processor-defined in -18: we put the number of the command that failed (0 when the
failure came before any command ran, e.g. parsing or authentication).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2

from teep_coap.security import cose
from teep_coap.security import errors as sec_errors
from teep_coap.security.suit.codec import decode_digest, loads_exact
from teep_coap.security.suit.constants import Parameter, ReportKey, ReportReason
from teep_coap.security.suit.errors import SuitReportError
from teep_coap.security.suit.model import SuitDigest

SYSTEM_COMPONENT_ID = 0


def _encode_params(props: Mapping[int, Any]) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for k, v in props.items():
        out[int(k)] = v.encode() if isinstance(v, SuitDigest) else v
    return out


@dataclass(frozen=True)
class SuitRecord:
    """SUIT_Record: where in which manifest something happened, with the parameters in force."""

    section: int
    offset: int
    component_index: int
    properties: Mapping[int, Any] = field(default_factory=dict)
    manifest_id: tuple[int, ...] = ()

    def to_cbor(self) -> list[Any]:
        return [
            list(self.manifest_id),
            int(self.section),
            int(self.offset),
            int(self.component_index),
            _encode_params(self.properties),
        ]

    @classmethod
    def from_cbor(cls, obj: Any) -> SuitRecord:
        if not isinstance(obj, list) or len(obj) < 5:
            raise SuitReportError(
                "SUIT_Record must be [manifest-id, section, offset, component-index, properties]"
            )
        mid, section, offset, idx, props = obj[:5]
        ok = (
            isinstance(mid, list)
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in mid)
            and isinstance(section, int)
            and isinstance(offset, int)
            and offset >= 0
            and isinstance(idx, int)
            and idx >= 0
            and isinstance(props, dict)
        )
        if not ok:
            raise SuitReportError("SUIT_Record has members of the wrong type")
        return cls(section, offset, idx, props, tuple(mid))


@dataclass(frozen=True)
class ReportResult:
    """A failure result: {5: result-code, 6: result-record, 7: result-reason}."""

    code: int
    record: SuitRecord
    reason: int

    def to_cbor(self) -> dict[int, Any]:
        return {
            int(ReportKey.RESULT_CODE): int(self.code),
            int(ReportKey.RESULT_RECORD): self.record.to_cbor(),
            int(ReportKey.RESULT_REASON): int(self.reason),
        }


@dataclass(frozen=True)
class SuitReport:
    manifest_uri: str
    manifest_digest: SuitDigest
    records: tuple[SuitRecord | Mapping[int, Any], ...] = ()
    result: ReportResult | None = None  # None = success (`true` on the wire)
    nonce: bytes | None = None
    capability_report: Mapping[int, Any] | None = None
    # Filled by parse_report: the kid that signed it, and whether the signature was checked.
    signer_kid: bytes | None = None
    verified: bool = False

    @property
    def success(self) -> bool:
        return self.result is None

    @property
    def reason(self) -> ReportReason:
        return ReportReason.OK if self.result is None else ReportReason(self.result.reason)

    def to_cbor(self) -> dict[int, Any]:
        out: dict[int, Any] = {}
        if self.nonce is not None:
            out[ReportKey.NONCE] = self.nonce
        out[ReportKey.RECORDS] = [
            r.to_cbor() if isinstance(r, SuitRecord) else _encode_params(r) for r in self.records
        ]
        out[ReportKey.RESULT] = True if self.result is None else self.result.to_cbor()
        if self.capability_report is not None:
            out[ReportKey.CAPABILITY_REPORT] = dict(self.capability_report)
        out[ReportKey.REFERENCE] = [self.manifest_uri, self.manifest_digest.to_cbor()]
        return {int(k): v for k, v in out.items()}

    def encode(self) -> bytes:
        return cbor2.dumps(self.to_cbor())


def build_report(
    *,
    manifest_uri: str,
    manifest_digest: SuitDigest,
    nonce: bytes | None = None,
    records: Sequence[SuitRecord | Mapping[int, Any]] = (),
    failure: ReportResult | None = None,
    capability_report: Mapping[int, Any] | None = None,
) -> SuitReport:
    """A SUIT_Report; `failure=None` means success (suit-report-result = true)."""
    if not isinstance(manifest_uri, str):
        raise SuitReportError("manifest-uri must be a text string")
    if nonce is not None and not isinstance(nonce, bytes):
        raise SuitReportError("the report nonce (TEEP token) must be bytes")
    return SuitReport(manifest_uri, manifest_digest, tuple(records), failure, nonce, capability_report)


def _kid_of(key: Any) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, bytes):
        return key
    return getattr(key, "kid", None)


def sign_report(report: SuitReport | bytes, key: Any, *, teep_key: Any = None, tagged: bool = True) -> bytes:
    """SUIT_Report_Protected as COSE_Sign1 with the report in the payload.

    `teep_key` is the key (or kid) that signs the TEEP messages; the report key MUST differ from it
    (NOTES §6.4), so the same kid is refused.
    """

    teep_kid = _kid_of(teep_key)
    if teep_kid is not None and teep_kid == key.kid:
        raise SuitReportError("the SUIT report key must differ from the TEEP message key (same kid)")
    payload = report.encode() if isinstance(report, SuitReport) else bytes(report)
    try:
        return cose.sign1(payload, key, include_kid=True, tagged=tagged)
    except sec_errors.SecurityError as exc:
        raise SuitReportError(f"cannot sign the SUIT report: {exc}") from None


def _report_from_map(obj: Any) -> SuitReport:
    if not isinstance(obj, dict):
        raise SuitReportError("SUIT_Report must be a map")
    ref = obj.get(ReportKey.REFERENCE)
    if not isinstance(ref, list) or len(ref) != 2 or not isinstance(ref[0], str):
        raise SuitReportError("SUIT_Report: suit-reference (99) must be [manifest-uri, SUIT_Digest]")
    try:
        digest = decode_digest(ref[1], "suit-reference digest")
    except Exception as exc:
        raise SuitReportError(f"SUIT_Report: {exc}") from None
    nonce = obj.get(ReportKey.NONCE)
    if nonce is not None and not isinstance(nonce, bytes):
        raise SuitReportError("SUIT_Report: nonce (2) must be a byte string")
    recs = obj.get(ReportKey.RECORDS)
    if not isinstance(recs, list):
        raise SuitReportError("SUIT_Report: records (3) missing or not an array")
    records: list[SuitRecord | Mapping[int, Any]] = []
    for r in recs:
        if isinstance(r, dict):
            if SYSTEM_COMPONENT_ID not in r:
                raise SuitReportError("SUIT_Report: system-property-claims without component id (0)")
            records.append(r)
        else:
            records.append(SuitRecord.from_cbor(r))
    if ReportKey.RESULT not in obj:
        raise SuitReportError("SUIT_Report: result (4) missing")
    res = obj[ReportKey.RESULT]
    result: ReportResult | None
    if res is True:
        result = None
    elif isinstance(res, dict):
        code, rec, reason = (
            res.get(k) for k in (ReportKey.RESULT_CODE, ReportKey.RESULT_RECORD, ReportKey.RESULT_REASON)
        )
        if not isinstance(code, int) or not isinstance(reason, int) or isinstance(reason, bool):
            raise SuitReportError("SUIT_Report: result needs integer code (5) and reason (7)")
        if reason not in {int(r) for r in ReportReason}:
            raise SuitReportError(f"SUIT_Report: unknown result reason {reason}")
        result = ReportResult(code, SuitRecord.from_cbor(rec), reason)
    else:
        raise SuitReportError("SUIT_Report: result (4) must be true or a map")
    cap = obj.get(ReportKey.CAPABILITY_REPORT)
    if cap is not None and not isinstance(cap, dict):
        raise SuitReportError("SUIT_Report: capability report (8) must be a map")
    return SuitReport(ref[0], digest, tuple(records), result, nonce, cap)


def parse_report(data: bytes, trust: Any = None) -> SuitReport:
    """Decode a SUIT report: bare (SUIT_Report_Unprotected) or COSE_Sign1 (tagged or not).

    With `trust`, a signed report must verify with one of those keys; without, it is decoded
    unchecked (`verified=False`). A bare report given with `trust` is refused.
    """
    try:
        obj = loads_exact(data, "SUIT report")
    except Exception as exc:
        raise SuitReportError(str(exc)) from None
    if isinstance(obj, dict):
        if trust is not None:
            raise SuitReportError("SUIT report is not signed, but a signed one was required")
        return _report_from_map(obj)
    body = obj.value if isinstance(obj, cbor2.CBORTag) and obj.tag == 18 else obj
    if isinstance(obj, cbor2.CBORTag) and obj.tag != 18:
        raise SuitReportError(f"SUIT report: CBOR tag {obj.tag} not supported (COSE_Sign1 = 18)")
    if not isinstance(body, list) or len(body) != 4 or not isinstance(body[2], bytes):
        raise SuitReportError("SUIT report: neither a SUIT_Report map nor a COSE_Sign1 with payload")
    kid: bytes | None = None
    verified = False
    if trust is not None:
        try:
            v = cose.verify(data, trust, allow_untagged=True)
        except sec_errors.SecurityError as exc:
            raise SuitReportError(f"SUIT report signature: {exc}") from None
        payload, kid, verified = v.payload, v.kid, True
    else:
        payload = body[2]
        unprot = body[1] if isinstance(body[1], dict) else {}
        k = unprot.get(4)
        kid = k if isinstance(k, bytes) else None
    try:
        inner = loads_exact(payload, "SUIT report payload")
    except Exception as exc:
        raise SuitReportError(str(exc)) from None
    if isinstance(inner, cbor2.CBORTag | list):
        raise SuitReportError("encrypted SUIT reports (COSE_Encrypt0 payload) are not supported")
    rep = _report_from_map(inner)
    return SuitReport(
        rep.manifest_uri,
        rep.manifest_digest,
        rep.records,
        rep.result,
        rep.nonce,
        rep.capability_report,
        kid,
        verified,
    )


def system_property_claims(entry: Any) -> dict[int, Any]:
    """TEEP tc-list entry for an installed component (a `StoreEntry` or anything with
    component_id, image_digest (SHA-256) and image_size): {0: id, 3: bstr .cbor SUIT_Digest, 14: size}."""
    return {
        SYSTEM_COMPONENT_ID: list(entry.component_id),
        int(Parameter.IMAGE_DIGEST): SuitDigest(-16, bytes(entry.image_digest)).encode(),
        int(Parameter.IMAGE_SIZE): int(entry.image_size),
    }
