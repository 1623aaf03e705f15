"""SUIT authenticates before it interprets: `verify_envelope` reads only the envelope's top-level
members, checks the manifest digest and the signature, and the manifest is decoded afterwards."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teep_coap.security.suit import (
    ManifestDigestMismatch,
    SuitParseError,
    Unauthorised,
    UnsupportedCose,
    parse_envelope,
    process_envelope,
    verify_envelope,
)
from teep_coap.security.suit.codec import (
    _auth_digest,
    _bstr_array,
    decode_digest,
    loads_exact,
    parse_envelope_header,
)
from teep_coap.security.suit.constants import ReportReason
from teep_coap.security.suit.model import Envelope, bstr_header
from teep_coap.store.components import ComponentStore
from tests.security.test_suit_support import CID, DEVICE, STRANGER, TAM_SUIT_KEY, envelope, resign

TRUST = TAM_SUIT_KEY.public
# A manifest that is well-formed CBOR but not a SUIT_Manifest (version 7, no common).
BAD_MANIFEST = cbor2.dumps({1: 7, 2: 1})


def test_verify_does_not_decode_the_manifest_until_it_is_read() -> None:
    env = verify_envelope(envelope(4), TRUST)
    assert env.verified and not env.manifest_decoded
    assert env.manifest.sequence_number == 4  # decoded on first access, then cached
    assert env.manifest_decoded and env.manifest is env.manifest
    assert env.manifest.common.components == (CID,)


def test_parse_envelope_still_decodes_at_once_and_verify_keeps_that_manifest() -> None:
    parsed = parse_envelope(envelope(2))
    assert parsed.manifest_decoded
    verified = verify_envelope(parsed, TRUST)
    assert verified.verified and verified.manifest is parsed.manifest
    assert not parsed.verified  # the caller's envelope is not changed


def test_authentic_but_malformed_manifest_fails_only_when_read() -> None:
    data = resign(BAD_MANIFEST)
    env = verify_envelope(data, TRUST)
    assert env.verified
    with pytest.raises(SuitParseError, match="missing required member common") as info:
        env.manifest  # noqa: B018
    assert info.value.reason == ReportReason.CBOR_PARSE
    with pytest.raises(SuitParseError):
        parse_envelope(data)


def test_malformed_manifest_from_an_untrusted_signer_is_unauthorised_not_parsed() -> None:
    # The manifest is never interpreted: the answer is "not authentic", not "bad CBOR shape".
    with pytest.raises(Unauthorised) as info:
        verify_envelope(resign(BAD_MANIFEST, key=STRANGER), TRUST)
    assert info.value.reason == ReportReason.UNAUTHORISED


def test_process_reports_a_signed_malformed_manifest_as_parse_error(tmp_path: Path) -> None:
    store = ComponentStore(tmp_path / "store")
    r = process_envelope(resign(BAD_MANIFEST), trust=TRUST, store=store, device=DEVICE)
    assert not r.success and isinstance(r.error, SuitParseError)
    assert r.report.result is not None and r.report.result.reason == ReportReason.CBOR_PARSE
    assert store.list() == []
    r = process_envelope(resign(BAD_MANIFEST, key=STRANGER), trust=TRUST, store=store, device=DEVICE)
    assert isinstance(r.error, Unauthorised) and r.reason == ReportReason.UNAUTHORISED
    assert store.list() == []


def test_tampered_digest_is_refused_before_the_signature_is_checked() -> None:
    env = cbor2.loads(envelope(3))
    env[3] = env[3][:-1] + bytes([env[3][-1] ^ 1])
    with pytest.raises(ManifestDigestMismatch):
        verify_envelope(cbor2.dumps(env), TRUST)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (cbor2.dumps(cbor2.CBORTag(17, [b"", {}, None, b""])), "COSE_Mac0"),
        (cbor2.dumps(cbor2.CBORTag(99, [])), "tag 99"),
        (cbor2.dumps([b"", {}, None, b""]), "tagged COSE"),
        (cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7}), {}, b"attached", bytes(64)])), "detached"),
    ],
)
def test_unusable_blocks_keep_their_cose_unsupported_reason(block: bytes, message: str) -> None:
    env = cbor2.loads(envelope(1))
    wrapper = cbor2.loads(env[2])
    env[2] = cbor2.dumps([wrapper[0], block])
    with pytest.raises(UnsupportedCose, match=message) as info:
        verify_envelope(cbor2.dumps(env), TRUST)
    assert info.value.reason == ReportReason.COSE_UNSUPPORTED


def test_header_parse_keeps_the_exact_manifest_bstr_and_digest() -> None:
    data = envelope(5)
    head = parse_envelope_header(data)
    assert head.manifest_bstr == cbor2.dumps(cbor2.loads(data)[3])
    assert head.digest.matches(head.manifest_bstr)
    assert cbor2.dumps(head.digest.to_cbor()) == head.digest_raw
    assert head.raw == data and not head.manifest_decoded


@pytest.mark.parametrize("n", [0, 1, 23, 24, 255, 256, 65535, 65536])
def test_bstr_header_is_cbor2s_preferred_encoding(n: int) -> None:
    content = bytes(n)
    assert bstr_header(n) + content == cbor2.dumps(content)


@pytest.mark.parametrize("alg", [-16, -43, -44, -18, 1])
def test_digest_fast_path_agrees_with_the_generic_decoder(alg: int) -> None:
    for size in (32, 48, 64, 31):
        raw = cbor2.dumps([alg, bytes(range(size))])
        assert _auth_digest(raw) == decode_digest(cbor2.loads(raw), "x")


def test_assembled_envelope_equals_the_dataclass_constructor() -> None:
    head = parse_envelope_header(envelope(7, tagged=True))
    built = Envelope(**{f.name: getattr(head, f.name) for f in dataclasses.fields(Envelope)})
    assert head == built and head.tagged
    assert set(head.__dict__) == {f.name for f in dataclasses.fields(Envelope)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        head.verified = True  # type: ignore[misc]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_wrapper_fast_path_reads_what_cbor2_writes(items: list[bytes]) -> None:
    assert _bstr_array(cbor2.dumps(items)) == items


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=40), min_size=1, max_size=3),
    st.integers(min_value=0),
    st.binary(max_size=3),
    st.integers(min_value=0, max_value=3),
)
def test_wrapper_fast_path_accepts_only_exact_bstr_arrays(
    items: list[bytes], pos: int, patch: bytes, cut: int
) -> None:
    good = cbor2.dumps(items)
    i = pos % len(good)
    raw = (good[:i] + patch + good[i + len(patch) :])[: len(good) + len(patch) - cut]
    found = _bstr_array(raw)
    if found is not None:  # whatever it accepts, cbor2 decodes to the same list with no trailing bytes
        assert loads_exact(raw, "wrapper") == found


def _generic_digest(raw: bytes) -> object:
    try:
        return decode_digest(loads_exact(raw, "d"), "d")
    except SuitParseError:
        return SuitParseError


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([-16, -43, -44, -18, -45, 1, 23, 24, 88, -24, -25]),
    st.sampled_from([32, 48, 64]),
    st.integers(min_value=0, max_value=5),
    st.binary(min_size=1, max_size=2),
)
def test_digest_fast_path_never_accepts_what_cbor2_refuses(
    alg: int, size: int, pos: int, patch: bytes
) -> None:
    good = cbor2.dumps([alg, bytes(size)])
    raw = good[:pos] + patch + good[pos + len(patch) :]
    try:
        fast: object = _auth_digest(raw)
    except SuitParseError:
        fast = SuitParseError
    assert fast == _generic_digest(raw)
    assert _auth_digest(good) == _generic_digest(good)


def test_digest_fast_path_does_not_misread_a_two_byte_alg() -> None:
    # 0x18 0x58 is uint 88, then 0x20 (-1) is an extra item: not a SUIT_Digest.
    raw = b"\x82\x18\x58\x20" + bytes(32)
    with pytest.raises(SuitParseError):
        _auth_digest(raw)
