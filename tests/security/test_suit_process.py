"""Processing envelopes into the component store: install, update, uninstall, and every refusal.

Each bad input must be refused with the SUIT report reason the draft defines, a typed error, and an
unchanged store (same entries, same bytes on disk).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cbor2
import pytest

from teep_coap.security.suit import (
    ComponentUnsupported,
    ConditionFailed,
    DeviceIdentity,
    ManifestDigestMismatch,
    OperationFailed,
    ParameterUnsupported,
    PayloadTooLarge,
    ProcessResult,
    RollbackRefused,
    SuitError,
    SuitParseError,
    Unauthorised,
    UnsupportedCommand,
    parse_envelope,
    process_envelope,
    unlink,
)
from teep_coap.security.suit.build import build_manifest
from teep_coap.security.suit.constants import ReportReason
from teep_coap.security.suit.model import SuitDigest
from teep_coap.store.components import ComponentStore, Install
from tests.security.test_suit_support import (
    CID,
    CLASS,
    DEVICE,
    PAYLOAD,
    STRANGER,
    TAM_SUIT_KEY,
    VENDOR,
    envelope,
    resign,
)

TRUST = TAM_SUIT_KEY.public


def snapshot(store: ComponentStore) -> dict[str, bytes]:
    """Every file of the store (index and blobs) with its bytes."""
    return {
        str(p.relative_to(store.root)): p.read_bytes() for p in sorted(store.root.rglob("*")) if p.is_file()
    }


def run(store: ComponentStore, data: bytes, **kw: object) -> ProcessResult:
    kw.setdefault("trust", TRUST)
    kw.setdefault("device", DEVICE)
    return process_envelope(data, store=store, **kw)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> ComponentStore:
    return ComponentStore(tmp_path / "agent")


@pytest.fixture
def installed(store: ComponentStore) -> ComponentStore:
    """A store with the TC at sequence number 5."""
    assert run(store, envelope(5)).success
    return store


def manifest_with(install_seq: list[object], *, seq: int = 9, payload: bytes = PAYLOAD) -> bytes:
    """Our standard manifest with its install sequence replaced."""
    m = cbor2.loads(
        build_manifest(
            component_id=CID,
            sequence_number=seq,
            vendor_id=VENDOR,
            class_id=CLASS,
            image_digest=SuitDigest.of(payload),
            image_size=len(payload),
            uri="#tc",
        )
    )
    m[20] = cbor2.dumps(install_seq)
    return cbor2.dumps(m)


# -- the happy paths ---------------------------------------------------------------------------


def test_install_then_update_then_uninstall(store: ComponentStore) -> None:
    r = run(store, envelope(1), report_nonce=b"T" * 16)
    assert r.success and r.installed == (CID,) and r.error is None
    assert store.image(CID) == PAYLOAD and store.sequence_number(CID) == 1
    assert r.report.success and r.report.nonce == b"T" * 16
    # records: vendor, class (shared), fetch, image-match (install) — policy 15 records successes
    assert [(rec.section, rec.offset) for rec in r.records] == [(3, 80), (3, 82), (20, 8), (20, 10)]
    entry = store.get(CID)
    assert entry is not None and entry.manifest_component_id == (*CID[:3], b"suit")
    assert store.manifest(CID) == envelope_bytes_of(store)

    r2 = run(store, envelope(2, b"version two"))
    assert r2.success
    assert store.image(CID) == b"version two" and store.sequence_number(CID) == 2

    r3 = unlink((*CID[:3], b"suit"), store=store)  # by manifest component id, as TEEP does
    assert r3.success and r3.removed == (CID,)
    assert store.list() == []


def envelope_bytes_of(store: ComponentStore) -> bytes:
    return store.manifest(CID)


def test_unlink_by_component_id_and_unknown(installed: ComponentStore) -> None:
    assert unlink(CID, store=installed).success
    r = unlink(CID, store=installed)
    assert not r.success and isinstance(r.error, ComponentUnsupported)
    assert r.report.reason == ReportReason.COMPONENT_UNSUPPORTED


def test_uri_payload_is_fetched(store: ComponentStore) -> None:
    data = envelope(1, b"fetched bytes", uri="coap://[::1]/tc.ta", integrated=False)
    assert parse_envelope(data).integrated == {}
    r = run(store, data, fetcher=lambda uri: b"fetched bytes")
    assert r.success and store.image(CID) == b"fetched bytes"


def test_uninstall_directive_in_install_removes(installed: ComponentStore) -> None:
    data = resign(manifest_with([33, 15]))
    r = run(installed, data)
    assert r.success and r.removed == (CID,) and installed.list() == []


def test_try_each_takes_the_first_alternative_that_passes(store: ComponentStore) -> None:
    wrong = cbor2.dumps([20, {1: b"\x01" * 16}, 1, 15])
    right = cbor2.dumps([20, {1: VENDOR}, 1, 15])
    data = resign(manifest_with([15, [wrong, right], 20, {21: "#tc"}, 21, 15, 3, 15]), extra={"#tc": PAYLOAD})
    r = run(store, data)
    assert r.success, r.error


# -- bad input: reason code, typed error, store unchanged ---------------------------------------


def refused(
    store: ComponentStore, data: bytes, error: type[SuitError], reason: int, **kw: object
) -> SuitError:
    before = snapshot(store)
    r = run(store, data, **kw)
    assert not r.success
    assert isinstance(r.error, error), repr(r.error)
    assert r.error.reason == reason
    assert r.report.result is not None and r.report.result.reason == reason
    assert r.reason == reason
    assert snapshot(store) == before
    with pytest.raises(error):
        r.raise_for_error()
    return r.error


def test_tampered_manifest_digest(installed: ComponentStore) -> None:
    env = cbor2.loads(envelope(6))
    wrapper = cbor2.loads(env[2])
    digest = cbor2.loads(wrapper[0])
    digest[1] = bytes(32)
    wrapper[0] = cbor2.dumps(digest)
    env[2] = cbor2.dumps(wrapper)
    refused(installed, cbor2.dumps(env), ManifestDigestMismatch, 4)


def test_tampered_manifest_body(installed: ComponentStore) -> None:
    env = cbor2.loads(envelope(6))
    env[3] = env[3].replace(b"\x02\x06", b"\x02\x07", 1)  # sequence number 6 -> 7
    refused(installed, cbor2.dumps(env), ManifestDigestMismatch, 4)


def test_wrong_signer(installed: ComponentStore) -> None:
    err = refused(installed, envelope(6, key=STRANGER), Unauthorised, 4)
    assert "signer not trusted" in str(err) or "does not verify" in str(err)


def test_rolled_back_sequence_number(installed: ComponentStore) -> None:
    refused(installed, envelope(4, b"old"), RollbackRefused, 10)
    refused(installed, envelope(5, b"same"), RollbackRefused, 10)
    assert installed.image(CID) == PAYLOAD


def test_the_same_manifest_again_is_already_installed(installed: ComponentStore) -> None:
    """Sequence number and digest equal to the installed ones: success without running or writing
    anything (a repeated Update after a lost Success), not a rollback."""
    index_before = (installed.root / "index.json").read_bytes()
    r = run(installed, envelope(5), report_nonce=b"N" * 16)
    assert r.success and r.already_installed and r.installed == () and r.records == ()
    assert r.report.success and r.report.nonce == b"N" * 16
    assert (installed.root / "index.json").read_bytes() == index_before
    # the same manifest under an untrusted signature: authentication comes first, so it is refused
    other = run(installed, envelope(5, key=STRANGER))
    assert not other.success and not other.already_installed


def test_oversize_payload(installed: ComponentStore) -> None:
    refused(installed, envelope(6, b"x" * 5000), PayloadTooLarge, 11, max_payload_size=4096)


def test_oversize_payload_from_fetcher_lying_about_size(installed: ComponentStore) -> None:
    data = envelope(6, b"small", uri="coap://[::1]/tc", integrated=False)
    refused(installed, data, PayloadTooLarge, 11, max_payload_size=1000, fetcher=lambda u: b"y" * 2000)


def test_unknown_critical_command(installed: ComponentStore) -> None:
    data = resign(manifest_with([20, {21: "#tc"}, 21, 15, 99, 15, 3, 15]), extra={"#tc": PAYLOAD})
    err = refused(installed, data, UnsupportedCommand, 5)
    assert "command 99" in str(err)
    assert (err.section, err.offset) == (20, 10)  # 86 | 14 a1 15 63 23 74 63 | 15 0f | 18 63 ...


def test_unknown_custom_command(installed: ComponentStore) -> None:
    data = resign(manifest_with([-3, 0, 20, {21: "#tc"}, 21, 15]), extra={"#tc": PAYLOAD})
    refused(installed, data, UnsupportedCommand, 5)


@pytest.mark.parametrize("cut", [1, 17, 120, -40, -1])
def test_truncated_envelope(installed: ComponentStore, cut: int) -> None:
    data = envelope(6)
    refused(installed, data[:cut], SuitParseError, 1)


def test_image_digest_mismatch(installed: ComponentStore) -> None:
    # manifest promises PAYLOAD; the envelope carries other bytes under "#tc"
    data = resign(manifest_with([20, {21: "#tc"}, 21, 15, 3, 15]), extra={"#tc": b"Hello, Evil World!!!"})
    err = refused(installed, data, ConditionFailed, 10)
    assert "image-match" in str(err)


def test_wrong_vendor_and_class(installed: ComponentStore) -> None:
    other = DeviceIdentity(bytes(16), CLASS)
    refused(installed, envelope(6), ConditionFailed, 10, device=other)
    other = DeviceIdentity(VENDOR, bytes(16))
    refused(installed, envelope(6), ConditionFailed, 10, device=other)


def test_encryption_info_parameter(installed: ComponentStore) -> None:
    data = resign(manifest_with([20, {18: b"ct", 19: b"\xa0"}, 18, 15]))
    refused(installed, data, ParameterUnsupported, 8)


def test_fetch_without_fetcher(installed: ComponentStore) -> None:
    refused(installed, envelope(6, uri="coap://[::1]/tc", integrated=False), OperationFailed, 11)


def test_fetcher_failure(installed: ComponentStore) -> None:
    def boom(uri: str) -> bytes:
        raise ConnectionError("unreachable")

    err = refused(
        installed, envelope(6, uri="coap://[::1]/tc", integrated=False), OperationFailed, 11, fetcher=boom
    )
    assert "unreachable" in str(err)


def test_component_index_out_of_range(installed: ComponentStore) -> None:
    data = resign(manifest_with([12, 3, 20, {21: "#tc"}, 21, 15]), extra={"#tc": PAYLOAD})
    refused(installed, data, ComponentUnsupported, 6)


def test_failure_report_locates_the_failing_command(installed: ComponentStore) -> None:
    data = resign(manifest_with([20, {21: "#tc"}, 21, 15, 3, 15]), extra={"#tc": b"tampered payload...."})
    r = run(installed, data)
    assert r.report.result is not None
    rec = r.report.result.record
    assert (rec.section, rec.offset, rec.component_index) == (20, 10, 0)
    assert r.report.result.code == 3  # condition-image-match
    assert (
        rec.properties[14] == 20
        and rec.properties[3].value == hashlib.sha256(b"tampered payload....").digest()
    )


def test_unsigned_envelope_is_refused(installed: ComponentStore) -> None:
    env = cbor2.loads(envelope(6))
    wrapper = cbor2.loads(env[2])
    env[2] = cbor2.dumps(wrapper[:1])
    refused(installed, cbor2.dumps(env), Unauthorised, 4)


# -- severable members and several components ---------------------------------------------------


def severed_envelope(*, tamper: bool = False, drop: bool = False) -> bytes:
    """Our envelope with install severed: the manifest holds its digest, the envelope the bstr."""
    m = cbor2.loads(manifest_with([20, {21: "#tc"}, 21, 15, 3, 15]))
    install = m[20]
    m[20] = SuitDigest.of(cbor2.dumps(install)).to_cbor()
    extra: dict[object, bytes] = {"#tc": PAYLOAD}
    if not drop:
        extra[20] = install.replace(b"\x03\x0f", b"\x03\x0e") if tamper else install
    return resign(cbor2.dumps(m), extra=extra)


def test_severed_install_is_checked_and_used(store: ComponentStore) -> None:
    env = parse_envelope(severed_envelope())
    assert 20 in env.manifest.severed and env.manifest.install is not None
    assert run(store, severed_envelope()).success
    assert store.image(CID) == PAYLOAD


def test_severed_member_tampered_or_missing(installed: ComponentStore) -> None:
    refused(installed, severed_envelope(tamper=True), Unauthorised, 4)
    from teep_coap.security.suit import SeveringUnsupported

    refused(installed, severed_envelope(drop=True), SeveringUnsupported, 9)


def test_two_components_install_together(store: ComponentStore) -> None:
    second = (*CID[:3], b"config")
    m = cbor2.loads(manifest_with([12, 1, 20, {18: b"cfg"}, 18, 15, 12, 0, 20, {21: "#tc"}, 21, 15, 3, 15]))
    common = cbor2.loads(m[3])
    common[2] = [list(CID), list(second)]
    m[3] = cbor2.dumps(common)
    r = run(store, resign(cbor2.dumps(m), extra={"#tc": PAYLOAD}))
    assert r.success, r.error
    assert set(r.installed) == {CID, second}
    assert store.image(second) == b"cfg" and store.image(CID) == PAYLOAD


def test_two_components_one_fails_installs_neither(store: ComponentStore) -> None:
    second = (*CID[:3], b"config")
    m = cbor2.loads(manifest_with([12, 1, 20, {18: b"cfg"}, 18, 15, 12, 0, 20, {21: "#tc"}, 21, 15, 3, 15]))
    common = cbor2.loads(m[3])
    common[2] = [list(CID), list(second)]
    m[3] = cbor2.dumps(common)
    refused(store, resign(cbor2.dumps(m), extra={"#tc": b"not the promised bytes"}), ConditionFailed, 10)
    assert store.list() == []


def test_damaged_store_fails_the_operation_and_is_left_alone(installed: ComponentStore) -> None:
    index = installed.root / "index.json"
    index.write_text("{damaged")
    r = run(installed, envelope(6))
    assert isinstance(r.error, OperationFailed) and r.reason == 11
    assert "not valid JSON" in str(r.error)
    assert index.read_text() == "{damaged"


def test_no_trust_anchors_is_unauthorised(store: ComponentStore) -> None:
    refused(store, envelope(1), Unauthorised, 4, trust=None)


def two_component_manifest(uninstall: list[object] | None, seq: int = 1) -> bytes:
    second = (*CID[:3], b"config")
    m = cbor2.loads(
        manifest_with([12, 1, 20, {18: b"cfg"}, 18, 15, 12, 0, 20, {21: "#tc"}, 21, 15, 3, 15], seq=seq)
    )
    common = cbor2.loads(m[3])
    common[2] = [list(CID), list(second)]
    m[3] = cbor2.dumps(common)
    if uninstall is None:
        del m[24]
    else:
        m[24] = cbor2.dumps(uninstall)
    return resign(cbor2.dumps(m), extra={"#tc": PAYLOAD})


MCID = (*CID[:3], b"suit")
SECOND = (*CID[:3], b"config")


def test_unlink_runs_the_stored_uninstall_section(store: ComponentStore) -> None:
    assert run(store, two_component_manifest([12, 1, 33, 15])).success
    r = unlink(MCID, store=store)
    assert r.success and r.removed == (SECOND,)
    assert [e.component_id for e in store.list()] == [CID]


def test_unlink_without_uninstall_section_removes_everything_the_manifest_installed(
    store: ComponentStore,
) -> None:
    assert run(store, two_component_manifest(None)).success
    r = unlink(MCID, store=store)
    assert r.success and set(r.removed) == {CID, SECOND} and store.list() == []


def test_a_manifest_whose_uninstall_we_cannot_run_is_refused_at_install(store: ComponentStore) -> None:
    refused(store, two_component_manifest([33, 15, 31, 15]), UnsupportedCommand, 5)  # 31 = swap


def test_unlink_with_an_unsupported_uninstall_command_removes_nothing(store: ComponentStore) -> None:
    # stored directly (as if an older processor had accepted it): unlink must refuse, not half-remove
    data = two_component_manifest([33, 15, 31, 15])
    store.commit([Install(CID, PAYLOAD, data, 1, MCID), Install(SECOND, b"cfg", data, 1, MCID)])
    before = snapshot(store)
    r = unlink(MCID, store=store)
    assert not r.success and isinstance(r.error, UnsupportedCommand) and r.reason == 5
    assert r.report.result is not None and r.report.result.record.section == 24
    assert snapshot(store) == before
