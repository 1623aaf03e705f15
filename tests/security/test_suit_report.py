"""SUIT reports: layout of draft-ietf-suit-report-18 (checked with the CDDL), signing, parsing."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest

from teep_coap.security.keys import generate_key
from teep_coap.security.suit import (
    ReportResult,
    SuitDigest,
    SuitRecord,
    SuitReportError,
    build_report,
    parse_report,
    process_envelope,
    sign_report,
    system_property_claims,
)
from teep_coap.store.components import ComponentStore
from tests.security.test_suit_support import CID, DEVICE, PAYLOAD, TAM_SUIT_KEY, cddl_valid, envelope

AGENT_TEEP_KEY = generate_key("esp256")
AGENT_REPORT_KEY = generate_key("esp256")
TOKEN = bytes(range(0xA0, 0xB0))


def reports(tmp_path: Path) -> tuple[bytes, bytes]:
    store = ComponentStore(tmp_path / "s")
    ok = process_envelope(
        envelope(3), trust=TAM_SUIT_KEY.public, store=store, device=DEVICE, report_nonce=TOKEN
    )
    bad = process_envelope(
        envelope(2), trust=TAM_SUIT_KEY.public, store=store, device=DEVICE, report_nonce=TOKEN
    )
    assert ok.success and not bad.success
    return ok.report.encode(), bad.report.encode()


def test_layout(tmp_path: Path) -> None:
    ok, bad = (cbor2.loads(r) for r in reports(tmp_path))
    assert set(ok) == {2, 3, 4, 99}
    assert ok[2] == TOKEN and ok[4] is True
    assert ok[99][0] == "" and ok[99][1][0] == -16
    assert all(isinstance(rec, list) and len(rec) == 5 for rec in ok[3])
    assert bad[4][7] == 10 and bad[4][6][1] == 0  # condition-failed, before any command section


@pytest.mark.parametrize("which", [0, 1], ids=["success", "failure"])
def test_report_validates_against_the_suit_report_cddl(which: int, tmp_path: Path) -> None:
    data = reports(tmp_path)[which]
    ok, out = cddl_valid(data, "SUIT_Report", tmp_path)
    assert ok, out


def test_signed_report_validates_as_suit_report_protected(tmp_path: Path) -> None:
    signed = sign_report(reports(tmp_path)[0], AGENT_REPORT_KEY, teep_key=AGENT_TEEP_KEY)
    ok, out = cddl_valid(signed, "SUIT_Report_Protected", tmp_path)
    assert ok, out
    # The rule checks the COSE profile (alg) but not the payload, so check the payload on its own too.
    assert cddl_valid(cbor2.loads(signed).value[2], "SUIT_Report", tmp_path)[0]
    broken = cbor2.loads(signed)
    broken.value[0] = cbor2.dumps({1: -7})  # ES256 is in no SUIT COSE profile
    assert not cddl_valid(cbor2.dumps(broken), "SUIT_Report_Protected", tmp_path)[0]


def test_sign_and_parse_round_trip() -> None:
    rec = SuitRecord(20, 10, 0, {3: SuitDigest.of(b"x"), 14: 1})
    rep = build_report(
        manifest_uri="coap://tam/tc.suit",
        manifest_digest=SuitDigest.of(b"m"),
        nonce=TOKEN,
        records=[rec, system_property_claims(_Entry())],
        failure=ReportResult(3, rec, 10),
    )
    signed = sign_report(rep, AGENT_REPORT_KEY, teep_key=AGENT_TEEP_KEY.kid)
    back = parse_report(signed, AGENT_REPORT_KEY.public)
    assert back.verified and back.signer_kid == AGENT_REPORT_KEY.kid
    assert back.nonce == TOKEN and back.manifest_uri == "coap://tam/tc.suit"
    assert not back.success and back.reason == 10 and back.result is not None
    assert back.result.record.offset == 10
    unchecked = parse_report(signed)
    assert not unchecked.verified and unchecked.to_cbor() == back.to_cbor()
    assert parse_report(rep.encode()).to_cbor() == rep.to_cbor()


class _Entry:
    component_id = CID
    image_digest = SuitDigest.of(PAYLOAD).value
    image_size = len(PAYLOAD)


def test_system_property_claims_match_the_teep_example_shape() -> None:
    claims = system_property_claims(_Entry())
    assert claims[0] == list(CID)
    assert cbor2.loads(claims[3]) == [-16, SuitDigest.of(PAYLOAD).value]
    assert claims[14] == 20


def test_report_key_must_differ_from_the_teep_key() -> None:
    rep = build_report(manifest_uri="", manifest_digest=SuitDigest.of(b"m"))
    with pytest.raises(SuitReportError, match="differ"):
        sign_report(rep, AGENT_TEEP_KEY, teep_key=AGENT_TEEP_KEY)
    with pytest.raises(SuitReportError):
        sign_report(rep, AGENT_TEEP_KEY, teep_key=AGENT_TEEP_KEY.kid)


def test_parse_refuses_wrong_signer_and_bad_shapes() -> None:
    rep = build_report(manifest_uri="", manifest_digest=SuitDigest.of(b"m"))
    signed = sign_report(rep, AGENT_REPORT_KEY)
    with pytest.raises(SuitReportError):
        parse_report(signed, AGENT_TEEP_KEY.public)
    with pytest.raises(SuitReportError):
        parse_report(rep.encode(), AGENT_REPORT_KEY.public)  # unsigned, but a signature was required
    for bad in (
        b"",
        b"\xff",
        cbor2.dumps([1, 2]),
        cbor2.dumps({99: "x"}),
        cbor2.dumps({99: ["", [-16, b""]], 3: []}),
    ):
        with pytest.raises(SuitReportError):
            parse_report(bad)
    weird = {99: ["", [-16, b""]], 3: [], 4: {5: 0, 6: [[], 0, 0, 0, {}], 7: 99}}
    with pytest.raises(SuitReportError, match="reason"):
        parse_report(cbor2.dumps(weird))
