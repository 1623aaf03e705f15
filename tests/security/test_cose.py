"""COSE_Sign1 / COSE_Sign: sign, verify, and one typed error for every way a message can be wrong."""

from __future__ import annotations

import cbor2
import pytest
from cwt import COSE

from teep_coap.security.cose import CoseInfo, Verified, inspect, sign, sign1, verify
from teep_coap.security.cwt_keys import cwt_key
from teep_coap.security.errors import (
    CoseDecodeError,
    CoseError,
    CriticalHeaderNotUnderstood,
    SignatureInvalid,
    UnknownKid,
    UnsupportedAlgorithm,
)
from teep_coap.security.keys import SigningKey, generate_key
from teep_coap.security.truststore import TrustStore
from tests.conftest import read_hex_vector

ESP = generate_key("esp256")
ED = generate_key("ed25519")
ESP_LEGACY = generate_key(-7)
ED_LEGACY = generate_key(-8)
ALL = (ESP, ED, ESP_LEGACY, ED_LEGACY)


@pytest.fixture(scope="module")
def query_request() -> bytes:
    return read_hex_vector("query_request")


def _resign(body: list[object], key: SigningKey, tag: int = 18) -> bytes:
    """Re-sign a modified Sign1 body so that only the property under test is wrong."""
    tbs = cbor2.dumps(["Signature1", body[0], b"", body[2]])
    body[3] = key.sign(tbs)
    return cbor2.dumps(cbor2.CBORTag(tag, body))


@pytest.mark.parametrize("key", ALL, ids=lambda k: str(k.alg))
def test_sign1_layout_and_verify(key: SigningKey, query_request: bytes) -> None:
    msg = sign1(query_request, key)
    item = cbor2.loads(msg)
    assert msg[0] == 0xD2 and item.tag == 18
    protected, unprotected, payload, signature = item.value
    assert cbor2.loads(protected) == {1: key.alg}
    assert unprotected == {4: key.kid}
    assert payload == query_request and len(signature) == 64
    result = verify(msg, key.public)
    assert isinstance(result, Verified)
    assert (result.payload, result.alg, result.kid, result.key) == (
        query_request,
        key.alg,
        key.kid,
        key.public,
    )
    assert result.structure == "COSE_Sign1"


@pytest.mark.parametrize("key", ALL, ids=lambda k: str(k.alg))
def test_cwt_verifies_ours_and_we_verify_cwt(key: SigningKey) -> None:
    cose = COSE.new()
    ours = sign1(b"payload", key, external_aad=b"aad")
    assert cose.decode(ours, cwt_key(key.public), external_aad=b"aad") == b"payload"
    theirs = cose.encode_and_sign(
        b"payload", cwt_key(key), protected={1: key.alg}, unprotected={4: key.kid}, external_aad=b"aad"
    )
    assert verify(theirs, key.public, external_aad=b"aad").payload == b"payload"


def test_fast_path_bytes_equal_cwt_bytes() -> None:
    # Ed25519 signatures are deterministic, so the hand-concatenated encoding must equal cwt's.
    for kwargs in (
        {},
        {"include_kid": False},
        {"tagged": False},
        {"external_aad": b"x" * 300},
    ):
        fast = sign1(b"p" * 70000, ED, **kwargs)  # type: ignore[arg-type]
        via_cwt = sign1(b"p" * 70000, ED, protected_extra={}, unprotected_extra={99: 1}, **kwargs)  # type: ignore[arg-type]
        reference = cbor2.loads(via_cwt)
        body = reference.value if isinstance(reference, cbor2.CBORTag) else reference
        del body[1][99]
        expected = cbor2.dumps(reference)
        assert fast == expected
    detached_fast = sign1(None, ED, detached_payload=b"manifest-digest")
    item = cbor2.loads(detached_fast)
    assert item.value[2] is None
    assert verify(detached_fast, ED.public, detached_payload=b"manifest-digest").payload == b"manifest-digest"


def test_detached_payload_rules() -> None:
    msg = sign1(None, ESP, detached_payload=b"digest")
    with pytest.raises(CoseDecodeError, match="detached"):
        verify(msg, ESP.public)
    with pytest.raises(SignatureInvalid):
        verify(msg, ESP.public, detached_payload=b"other")
    attached = sign1(b"digest", ESP)
    with pytest.raises(CoseDecodeError, match="also supplied"):
        verify(attached, ESP.public, detached_payload=b"digest")
    with pytest.raises(CoseError):
        sign1(b"a", ESP, detached_payload=b"b")


def test_external_aad_is_bound() -> None:
    msg = sign1(b"m", ED, external_aad=b"ctx")
    assert verify(msg, ED.public, external_aad=b"ctx").payload == b"m"
    with pytest.raises(SignatureInvalid):
        verify(msg, ED.public)


def test_untagged_only_with_flag() -> None:
    msg = sign1(b"m", ED, tagged=False)
    assert msg[0] == 0x84
    with pytest.raises(CoseDecodeError, match="untagged"):
        verify(msg, ED.public)
    assert verify(msg, ED.public, allow_untagged=True).payload == b"m"


def test_without_kid_tries_every_key_of_the_alg() -> None:
    msg = sign1(b"m", ESP, include_kid=False)
    store = TrustStore([generate_key("esp256").public, ED.public, ESP.public])
    result = verify(msg, store)
    assert result.kid is None and result.key == ESP.public
    with pytest.raises(UnknownKid):
        verify(msg, [ED.public])
    with pytest.raises(SignatureInvalid):
        verify(msg, [generate_key("esp256").public])


def test_cose_sign_multi_signer_agent_knows_one_alg(query_request: bytes) -> None:
    msg = sign(query_request, [ESP, ED])
    item = cbor2.loads(msg)
    assert item.tag == 98 and item.value[0] == b"" and item.value[1] == {}
    assert [cbor2.loads(s[0])[1] for s in item.value[3]] == [-9, -19]
    # an Agent that supports only Ed25519 (it trusts only the TAM's Ed25519 key)
    ed_only = verify(msg, TrustStore([ED.public]), allowed_algs={-19})
    assert ed_only.alg == -19 and ed_only.key == ED.public and ed_only.structure == "COSE_Sign"
    # an Agent that supports only ESP256, even if it also trusts the Ed25519 key
    esp_only = verify(msg, TrustStore([ED.public, ESP.public]), allowed_algs={-9})
    assert esp_only.alg == -9 and esp_only.payload == query_request
    # an Agent with neither algorithm
    with pytest.raises(UnsupportedAlgorithm):
        verify(msg, TrustStore([ED.public, ESP.public]), allowed_algs={-7})
    # cwt (independent Sig_structure for COSE_Sign) agrees
    assert COSE.new().decode(msg, cwt_key(ED.public)) == query_request


def test_cose_sign_one_bad_signature_one_good() -> None:
    msg = cbor2.loads(sign(b"m", [ESP, ED]))
    sig = bytearray(msg.value[3][0][2])
    sig[5] ^= 1
    msg.value[3][0][2] = bytes(sig)
    data = cbor2.dumps(msg)
    assert verify(data, TrustStore([ESP.public, ED.public])).alg == -19  # the good one passes
    with pytest.raises(SignatureInvalid):
        verify(data, ESP.public)


def test_wrong_key_and_unknown_kid() -> None:
    msg = sign1(b"m", ESP)
    other = generate_key("esp256")
    with pytest.raises(UnknownKid):
        verify(msg, other.public)
    # same kid, different key material: a trusted key was found and failed
    impostor = SigningKey(other.crypto_key, kid=ESP.kid)
    with pytest.raises(SignatureInvalid):
        verify(sign1(b"m", impostor), ESP.public)


def test_every_single_byte_change_is_refused() -> None:
    for key in (ESP, ED):
        msg = sign1(b"\x82\x05\xa1\x14\x48" + bytes(8), key)
        original = verify(msg, key.public)
        start = 1 + 1 + 1 + len(cbor2.loads(msg).value[0])  # tag, array head, bstr head, protected
        unprotected_span = range(start, start + len(cbor2.dumps({4: key.kid})))
        for i in range(len(msg)):
            for flip in (0x01, 0x80):
                tampered = bytearray(msg)
                tampered[i] ^= flip
                try:
                    result = verify(bytes(tampered), key.public)
                except CoseError:
                    continue
                # The unprotected bucket is not signed (RFC 9052): flipping kid (4) to IV (5) leaves a
                # message without kid that still verifies. Nothing signed may change, though.
                assert i in unprotected_span, f"byte {i} changed and still verified"
                assert result.payload == original.payload and result.protected == original.protected
        for cut in range(len(msg)):
            with pytest.raises(CoseDecodeError):
                verify(msg[:cut], key.public)
        with pytest.raises(CoseDecodeError, match="trailing"):
            verify(msg + b"\x00", key.public)


def test_unsupported_algorithm() -> None:
    body = cbor2.loads(sign1(b"m", ESP)).value
    body[0] = cbor2.dumps({1: -35})  # ES384
    with pytest.raises(UnsupportedAlgorithm):
        verify(_resign(body, ESP), ESP.public)
    body[0] = cbor2.dumps({1: "ES256"})
    with pytest.raises(UnsupportedAlgorithm):
        verify(_resign(body, ESP), ESP.public)
    # allowed_algs narrows what is accepted
    with pytest.raises(UnsupportedAlgorithm):
        verify(sign1(b"m", ESP_LEGACY), ESP_LEGACY.public, allowed_algs={-9, -19})
    assert verify(sign1(b"m", ESP_LEGACY), ESP.public.__class__(ESP_LEGACY.public.crypto_key)).alg == -7
    # an Ed25519 key never verifies an ECDSA-labelled signature
    body = cbor2.loads(sign1(b"m", ED)).value
    body[0] = cbor2.dumps({1: -9})
    with pytest.raises(UnknownKid):
        verify(_resign(body, ED), ED.public)


def test_critical_headers() -> None:
    # content type (3) is understood; cwt refuses to *emit* crit labels 0..7 (RFC 9052 "SHOULD be
    # omitted"), so this one is built by hand
    body = cbor2.loads(sign1(b"m", ED)).value
    body[0] = cbor2.dumps({1: -19, 2: [3], 3: 60})
    assert verify(_resign(body, ED), ED.public).protected[3] == 60
    bad = sign1(b"m", ED, protected_extra={2: [99], 99: True})
    with pytest.raises(CriticalHeaderNotUnderstood):
        verify(bad, ED.public)
    body = cbor2.loads(sign1(b"m", ED)).value
    body[0] = cbor2.dumps({1: -19, 2: []})
    with pytest.raises(CoseDecodeError, match="non-empty"):
        verify(_resign(body, ED), ED.public)
    body[0] = cbor2.dumps({1: -19, 2: [77]})
    with pytest.raises(CoseDecodeError, match="absent"):
        verify(_resign(body, ED), ED.public)
    body = cbor2.loads(sign1(b"m", ED)).value
    body[1] = {4: ED.kid, 2: [4]}
    with pytest.raises(CoseDecodeError, match="crit must be in the protected"):
        verify(cbor2.dumps(cbor2.CBORTag(18, body)), ED.public)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", CoseDecodeError, "empty"),
        (b"\x00", CoseDecodeError, "not a COSE"),
        (b"\xd2", CoseDecodeError, "CBOR"),
        (cbor2.dumps(cbor2.CBORTag(17, [b"", {}, b"", b""])), CoseDecodeError, "tag 17"),
        (cbor2.dumps(cbor2.CBORTag(61, [b"", {}, b"", b""])), CoseDecodeError, "tag 61"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b""])), CoseDecodeError, "4 items"),
        (cbor2.dumps(cbor2.CBORTag(18, {})), CoseDecodeError, "4 items"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"x", b"s"])), CoseDecodeError, "no alg"),
        (cbor2.dumps(cbor2.CBORTag(18, [{1: -9}, {}, b"x", b"s"])), CoseDecodeError, "byte string"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x28", [], b"x", b"s"])), CoseDecodeError, "map"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\x81\x01", {}, b"x", b"s"])), CoseDecodeError, "map"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01", {}, b"x", b"s"])), CoseDecodeError, "protected"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x28", {1: -9}, b"x", b"s"])), CoseDecodeError, "both"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {1: -9}, b"x", b"s"])), CoseDecodeError, "protected header"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x28", {4: "kid"}, b"x", b"s"])), CoseDecodeError, "kid"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x28", {}, 5, b"s"])), CoseDecodeError, "payload"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x28", {}, b"x", None])), CoseDecodeError, "signature"),
        (cbor2.dumps(cbor2.CBORTag(98, [b"", {}, b"x", []])), CoseDecodeError, "non-empty"),
        (cbor2.dumps(cbor2.CBORTag(98, [b"", {}, b"x", [[b"", {}]]])), CoseDecodeError, "3 items"),
        (cbor2.dumps(cbor2.CBORTag(98, [b"", {}, b"x", [[b"", {}, b"s"]]])), CoseDecodeError, "no alg"),
        (
            cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x28", {}, b"x", b"s" * 64])),
            SignatureInvalid,
            "any trusted",
        ),
        (
            cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x32", {}, b"x", b"s" * 64])),
            UnknownKid,
            "no trusted key",
        ),
        (
            cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x28", {4: ESP.kid}, b"x", b"s"])),
            SignatureInvalid,
            "64 bytes",
        ),
        (
            cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x28", {4: ESP.kid}, b"x", b"s" * 64])),
            SignatureInvalid,
            "verify",
        ),
        ("text", CoseDecodeError, "bytes"),
    ],
)
def test_malformed_inputs(data: bytes, error: type[CoseError], message: str) -> None:
    with pytest.raises(error, match=message):
        verify(data, TrustStore([ESP.public]))


def test_inspect_reports_headers_without_verifying(query_request: bytes) -> None:
    info = inspect(sign1(query_request, ESP))
    assert isinstance(info, CoseInfo)
    assert (info.structure, info.tagged, info.alg, info.kid, info.payload) == (
        "COSE_Sign1",
        True,
        -9,
        ESP.kid,
        query_request,
    )
    multi = inspect(sign(b"x", [ESP, ED]))
    assert multi.structure == "COSE_Sign" and [s.alg for s in multi.signatures] == [-9, -19]
    as_dict = multi.to_dict()
    assert as_dict["signatures"][1]["kid"] == ED.kid.hex() and as_dict["payload"] == "78"
    assert inspect(sign1(b"x", ED, tagged=False)).tagged is False
    detached = inspect(sign1(None, ED, detached_payload=b"d"))
    assert detached.detached and detached.payload is None
    with pytest.raises(CoseDecodeError):
        inspect(b"\xa0")


def _outcome(data: bytes, via_cwt: bool, **kwargs: object) -> object:
    try:
        result = verify(
            data, TrustStore([ESP.public, ED.public, ESP_LEGACY.public]), via_cwt=via_cwt, **kwargs
        )  # type: ignore[arg-type]
    except CoseError as exc:
        return type(exc)
    return (result.payload, result.alg, result.kid)


def test_direct_sign1_check_agrees_with_cwt() -> None:
    """The hand-concatenated Sig_structure check and cwt's decode give the same verdict."""
    cases: list[tuple[bytes, dict[str, object]]] = []
    for key in (ESP, ED, ESP_LEGACY):
        msg = sign1(b"\x82\x05\xa1\x14\x48" + bytes(8), key, external_aad=b"aad")
        cases.append((msg, {"external_aad": b"aad"}))
        cases.append((msg, {}))
        for i in range(len(msg)):
            tampered = bytearray(msg)
            tampered[i] ^= 0x01
            cases.append((bytes(tampered), {"external_aad": b"aad"}))
        detached = sign1(None, key, detached_payload=b"digest", via_cwt=True)
        cases.append((detached, {"detached_payload": b"digest"}))
        cases.append((detached, {"detached_payload": b"digesT"}))
    accepted = 0
    for data, kwargs in cases:
        fast, slow = _outcome(data, False, **kwargs), _outcome(data, True, **kwargs)
        assert fast == slow, (data.hex(), kwargs)
        accepted += isinstance(fast, tuple)
    assert accepted >= 6  # the untampered ones (and unprotected-only changes) really verified


@pytest.mark.parametrize("key", ALL, ids=lambda k: str(k.alg))
def test_cwt_sign_path_verifies(key: SigningKey) -> None:
    data = sign1(b"m", key, via_cwt=True)
    assert verify(data, key.public).payload == b"m"
    if key.key_type == "Ed25519":
        assert data == sign1(b"m", key)
