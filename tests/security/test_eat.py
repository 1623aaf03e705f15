"""EAT evidence (background-check) and attestation results (passport): fresh, stale, missing nonce."""

from __future__ import annotations

import cbor2
import pytest

from teep_coap.model.codes import EAT_PROFILE_TEEP
from teep_coap.security import eat
from teep_coap.security.cose import inspect, sign1
from teep_coap.security.errors import (
    AttestationFailed,
    ClaimInvalid,
    ClaimMissing,
    EvidenceError,
    MissingNonce,
    SignatureInvalid,
    StaleNonce,
    UnknownKid,
)
from teep_coap.security.keys import SigningKey, generate_key
from teep_coap.security.truststore import TrustStore

AGENT = generate_key("esp256")
VERIFIER = generate_key("ed25519")
NOW = 1_790_000_000.0
CHALLENGE = bytes.fromhex("948f8860d13a463e8e")  # the draft's example eat_nonce (9 bytes)
TOKEN = bytes(range(0xA0, 0xB0))
DIGEST = bytes.fromhex("a7fd6593eac32eb4be578278e6540c5c09cfd7d4d234973054833b2b93030609")
DEVICE = {
    "ueid": bytes.fromhex("0198f50a4ff6c05861c8860d13a638ea"),
    "oemid": bytes.fromhex("894823"),
    "hwmodel": bytes.fromhex("549dcecc8b987c737b44e40f7c635ce8"),
    "hwversion": "1.3.4",
    "manifests": [("https://example.com/manifest.cbor", [-16, DIGEST])],
}


def _evidence(key: SigningKey = AGENT, nonce: bytes | None = CHALLENGE, **changes: object) -> bytes:
    args = {**DEVICE, **changes}
    return eat.build_evidence(key, nonce=nonce, now=NOW, **args)  # type: ignore[arg-type]


def _claims(data: bytes) -> dict[int, object]:
    payload = inspect(data).payload
    assert payload is not None
    result = cbor2.loads(payload)
    assert isinstance(result, dict)
    return result


def _resigned(claims: dict[int, object], key: SigningKey = AGENT) -> bytes:
    return sign1(cbor2.dumps(claims), key)


def test_evidence_claims_follow_the_teep_profile() -> None:
    data = _evidence()
    assert data[0] == 0xD2  # COSE_Sign1_Tagged, no CWT tag
    claims = _claims(data)
    assert claims[8] == {3: AGENT.kid}
    assert claims[10] == CHALLENGE
    assert (
        claims[256] == DEVICE["ueid"] and claims[258] == DEVICE["oemid"] and claims[259] == DEVICE["hwmodel"]
    )
    assert claims[260] == ["1.3.4", 1]
    assert claims[265] == EAT_PROFILE_TEEP
    # manifests is 272 (RFC 9711), not the example's 273; entry = [60, SUIT_Reference]
    assert 273 not in claims
    assert claims[272] == [[60, {1: "https://example.com/manifest.cbor", 0: [-16, DIGEST]}]]
    assert claims[6] == int(NOW)


def test_background_check_fresh_nonce() -> None:
    result = eat.verify_evidence(_evidence(), AGENT.public, expected_nonce=CHALLENGE, now=NOW + 5, max_age=60)
    assert result.nonce == CHALLENGE and result.cnf_kid == AGENT.kid and result.signer_kid == AGENT.kid
    assert result.hwversion == ("1.3.4", 1) and result.alg == -9
    assert result.manifests[0][1][0] == [-16, DIGEST]


def test_stale_and_missing_nonce_refused() -> None:
    with pytest.raises(StaleNonce):
        eat.verify_evidence(_evidence(), AGENT.public, expected_nonce=b"another-challenge", now=NOW)
    with pytest.raises(MissingNonce):
        eat.verify_evidence(_evidence(nonce=None), AGENT.public, expected_nonce=CHALLENGE, now=NOW)
    # right nonce, but too old
    with pytest.raises(StaleNonce, match="old"):
        eat.verify_evidence(_evidence(), AGENT.public, expected_nonce=CHALLENGE, now=NOW + 3600, max_age=300)
    # iat in the future beyond the allowed skew
    with pytest.raises(ClaimInvalid, match="future"):
        eat.verify_evidence(_evidence(), AGENT.public, expected_nonce=CHALLENGE, now=NOW - 3600, max_age=300)


def test_timestamp_freshness_without_nonce() -> None:
    data = eat.build_evidence(AGENT, nonce=None, now=NOW, lifetime=120, **DEVICE)  # type: ignore[arg-type]
    assert eat.verify_evidence(data, AGENT.public, expected_nonce=None, now=NOW + 60).exp == NOW + 120
    with pytest.raises(StaleNonce, match="expired"):
        eat.verify_evidence(data, AGENT.public, expected_nonce=None, now=NOW + 121)
    no_time = eat.build_evidence(AGENT, nonce=None, **DEVICE)  # type: ignore[arg-type]
    with pytest.raises(MissingNonce):
        eat.verify_evidence(no_time, AGENT.public, expected_nonce=None, now=NOW, max_age=60)
    with pytest.raises(MissingNonce):
        eat.verify_evidence(_evidence(nonce=None), AGENT.public, expected_nonce=None, now=None)


@pytest.mark.parametrize("claim", [256, 258, 259, 260, 272, 8])
def test_each_required_claim(claim: int) -> None:
    claims = _claims(_evidence())
    del claims[claim]
    with pytest.raises(ClaimMissing, match=str(claim)):
        eat.verify_evidence(_resigned(claims), AGENT.public, expected_nonce=CHALLENGE, now=NOW)


@pytest.mark.parametrize(
    ("claim", "value", "match"),
    [
        (256, "text", "ueid"),
        (256, b"\x01\x02", "7..33"),
        (258, 1.5, "oemid"),
        (260, [], "hwversion"),
        (260, [1, 2], "hwversion"),
        (260, ["1.0", "x"], "hwversion"),
        (272, {}, "manifests"),
        (272, [[60]], "manifests"),
        (8, {2: b"x"}, "cnf"),
        (8, {3: b"not-the-signer"}, "cnf kid"),
        (10, "nonce", "eat_nonce"),
        (265, "urn:other", "eat_profile"),
        (6, "yesterday", "iat"),
    ],
)
def test_bad_claim_values(claim: int, value: object, match: str) -> None:
    claims = _claims(_evidence())
    claims[claim] = value
    with pytest.raises(ClaimInvalid, match=match):
        eat.verify_evidence(_resigned(claims), AGENT.public, expected_nonce=CHALLENGE, now=NOW)


def test_payload_not_a_claims_set() -> None:
    with pytest.raises(ClaimInvalid):
        eat.verify_evidence(sign1(b"\xff\x00", AGENT), AGENT.public, expected_nonce=CHALLENGE, now=NOW)
    with pytest.raises(ClaimInvalid):
        eat.verify_evidence(sign1(cbor2.dumps([1]), AGENT), AGENT.public, expected_nonce=CHALLENGE, now=NOW)
    with pytest.raises(ClaimInvalid, match="integer"):
        eat.verify_evidence(sign1(cbor2.dumps({"ueid": 1}), AGENT), AGENT.public, expected_nonce=None)


def test_evidence_signature_and_trust() -> None:
    data = bytearray(_evidence())
    data[-1] ^= 1
    with pytest.raises(SignatureInvalid):
        eat.verify_evidence(bytes(data), AGENT.public, expected_nonce=CHALLENGE, now=NOW)
    with pytest.raises(UnknownKid):
        eat.verify_evidence(_evidence(), generate_key("esp256").public, expected_nonce=CHALLENGE, now=NOW)
    # evidence signed by an attestation key with cnf naming the separate TEEP key
    attestation_key = generate_key("ed25519")
    data2 = eat.build_evidence(
        attestation_key,
        nonce=CHALLENGE,
        teep_kid=AGENT.kid,
        now=NOW,
        **DEVICE,  # type: ignore[arg-type]
    )
    with pytest.raises(ClaimInvalid, match="cnf"):
        eat.verify_evidence(data2, attestation_key.public, expected_nonce=CHALLENGE, now=NOW)
    ok = eat.verify_evidence(
        data2, attestation_key.public, expected_nonce=CHALLENGE, now=NOW, expected_kid=AGENT.kid
    )
    assert ok.cnf_kid == AGENT.kid and ok.signer_kid == attestation_key.kid
    # a CWT tag (61) around it is accepted
    assert eat.verify_evidence(b"\xd8\x3d" + _evidence(), AGENT.public, expected_nonce=CHALLENGE, now=NOW)


def test_build_refuses_bad_inputs() -> None:
    with pytest.raises(ClaimInvalid):
        _evidence(nonce=b"short")
    with pytest.raises(ClaimInvalid):
        _evidence(manifests=[object()])
    with pytest.raises(ClaimInvalid):
        _evidence(hwversion=[])
    assert _claims(_evidence(hwversion="v1-beta"))[260] == ["v1-beta"]
    assert _claims(_evidence(hwversion=("2.0", 16384)))[260] == ["2.0", 16384]
    assert _claims(_evidence(manifests=[[60, {1: "u", 0: [-16, DIGEST]}]]))[272] == [
        [60, {1: "u", 0: [-16, DIGEST]}]
    ]


# ------------------------------------------------------------------------------------------- passport


def test_passport_round_trip() -> None:
    ar = eat.build_attestation_result(VERIFIER, subject_kid=AGENT.kid, nonce=TOKEN, now=NOW, lifetime=600)
    result = eat.verify_attestation_result(
        ar, TrustStore([VERIFIER.public]), expected_kid=AGENT.kid, expected_nonce=TOKEN, now=NOW + 10
    )
    assert result.status == "affirming" and result.subject_kid == AGENT.kid and result.nonce == TOKEN
    assert result.verifier_kid == VERIFIER.kid


def test_passport_refusals() -> None:
    trust = [VERIFIER.public]
    ar = eat.build_attestation_result(VERIFIER, subject_kid=AGENT.kid, nonce=TOKEN, now=NOW, lifetime=600)
    with pytest.raises(StaleNonce):
        eat.verify_attestation_result(ar, trust, expected_kid=AGENT.kid, expected_nonce=bytes(16), now=NOW)
    with pytest.raises(StaleNonce, match="expired"):
        eat.verify_attestation_result(ar, trust, expected_kid=AGENT.kid, expected_nonce=TOKEN, now=NOW + 601)
    no_nonce = eat.build_attestation_result(VERIFIER, subject_kid=AGENT.kid, nonce=None, now=NOW)
    with pytest.raises(MissingNonce):
        eat.verify_attestation_result(no_nonce, trust, expected_kid=AGENT.kid, expected_nonce=TOKEN, now=NOW)
    with pytest.raises(AttestationFailed, match="about key"):
        eat.verify_attestation_result(ar, trust, expected_kid=bytes(32), expected_nonce=TOKEN, now=NOW)
    bad = eat.build_attestation_result(VERIFIER, subject_kid=AGENT.kid, nonce=TOKEN, status="contraindicated")
    with pytest.raises(AttestationFailed, match="contraindicated"):
        eat.verify_attestation_result(bad, trust, expected_kid=AGENT.kid, expected_nonce=TOKEN, now=NOW)
    # signed by a key the TAM does not trust as a Verifier (e.g. the Agent itself)
    forged = eat.build_attestation_result(AGENT, subject_kid=AGENT.kid, nonce=TOKEN, now=NOW)
    with pytest.raises(UnknownKid):
        eat.verify_attestation_result(forged, trust, expected_kid=AGENT.kid, expected_nonce=TOKEN, now=NOW)
    with pytest.raises(ClaimInvalid):
        eat.build_attestation_result(VERIFIER, subject_kid=AGENT.kid, nonce=TOKEN, status="great")
    # evidence is not an attestation result
    with pytest.raises(ClaimMissing):
        eat.verify_attestation_result(
            _evidence(), AGENT.public, expected_kid=AGENT.kid, expected_nonce=CHALLENGE
        )


def test_verifier_appraises_against_reference_values() -> None:
    reference = eat.ReferenceValues(
        oemids={DEVICE["oemid"]},  # type: ignore[arg-type]
        hwmodels={DEVICE["hwmodel"]},  # type: ignore[arg-type]
        hwversions={"1.3.4"},
        manifest_digests={DIGEST},
    )
    verifier = eat.Verifier(VERIFIER, TrustStore([AGENT.public]), reference, max_age=60)
    # passport model: the Agent's evidence carries the TEEP token as its nonce
    evidence = _evidence(nonce=TOKEN)
    claims = verifier.appraise(evidence, nonce=TOKEN, now=NOW)
    assert claims.cnf_kid == AGENT.kid
    ar = verifier.issue(evidence, nonce=TOKEN, now=NOW)
    result = eat.verify_attestation_result(
        ar, verifier.public, expected_kid=AGENT.kid, expected_nonce=TOKEN, now=NOW + 1
    )
    assert result.status == "affirming" and result.ueid == DEVICE["ueid"]
    # a device with an unknown hardware version gets a contraindicated result...
    odd = _evidence(nonce=TOKEN, hwversion="9.9")
    with pytest.raises(ClaimInvalid, match="hwversion"):
        verifier.appraise(odd, nonce=TOKEN, now=NOW)
    with pytest.raises(AttestationFailed, match="contraindicated"):
        eat.verify_attestation_result(
            verifier.issue(odd, nonce=TOKEN, now=NOW),
            verifier.public,
            expected_kid=AGENT.kid,
            expected_nonce=TOKEN,
        )
    # ...an unknown manifest too
    other = _evidence(nonce=TOKEN, manifests=[("https://x/y.suit", [-16, bytes(32)])])
    with pytest.raises(ClaimInvalid, match="manifest"):
        verifier.appraise(other, nonce=TOKEN, now=NOW)
    # ...but evidence that is stale or from an unknown attester gets no result at all
    with pytest.raises(StaleNonce):
        verifier.issue(evidence, nonce=bytes(16), now=NOW)
    with pytest.raises(EvidenceError):
        verifier.issue(evidence, nonce=TOKEN, now=NOW + 3600)
    with pytest.raises(UnknownKid):
        verifier.issue(_evidence(key=generate_key("esp256"), nonce=TOKEN), nonce=TOKEN, now=NOW)
