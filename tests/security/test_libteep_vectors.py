"""Messages signed by another implementation (libteep / t_cose, SECOM) verify here.

Byte values come from libteep's published test files (kentakayama/libteep `testfiles/*.md`, CBOR
diagnostic of COSE-signed messages; example public keys from `examples/inc/`). The COSE bytes are
re-assembled from the diagnostic notation; the signatures are libteep's, untouched.
"""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from teep_coap.encoding.cbor_codec import decode
from teep_coap.model.teep import QueryRequest, Success
from teep_coap.security.cose import verify
from teep_coap.security.errors import SignatureInvalid, UnknownKid, UnsupportedAlgorithm
from teep_coap.security.keys import VerifyingKey
from teep_coap.security.truststore import TrustStore

TAM_ES256 = VerifyingKey(
    ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(),
        bytes.fromhex(
            "040e908aa8f066db1f084e0c3652c63952bd99f2a5bdb22f9e01367aad03aba68b"
            "77da1bd8ac4f0cb490ba210648bf79ab164d49ad3551d71d314b2749ee42d29a"
        ),
    )
)
# libteep's TAM EdDSA key is the RFC 8032 test 1 public key.
TAM_ED25519 = VerifyingKey(
    ed25519.Ed25519PublicKey.from_public_bytes(
        bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    )
)
AGENT_ES256 = VerifyingKey(
    ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(),
        bytes.fromhex(
            "045886cd61dd875862e5aaa820e7a15274c968a9bc96048ddcace32f50c3651ba3"
            "9eed8125e932cd60c0ead3650d0a485cf726d378d1b016ed4298b2961e258f1b"
        ),
    )
)
TOKEN = bytes(range(0xA0, 0xB0))

# testfiles/query_request.md: COSE_Sign_Tagged, body protected << {} >> (h'a0'), two signers.
QUERY_REQUEST_PAYLOAD = bytes.fromhex(
    "8501a21450a0a1a2a3a4a5a6a7a8a9aaabacadaeaf03810082818212268182122782842f26381839fffd842f27381839fffd03"
)
QR_SIG_ES256 = bytes.fromhex(
    "112E08A40567B08A1D4669DB9F0149A1DEA6D16B8FC1A3254654D6D40E2DC08B"
    "FB6F00DE2033A237454B537E2C55D55929E97A972FE807A930379BB1500473A6"
)
QR_SIG_EDDSA = bytes.fromhex(
    "28CED0F30B7A0D1D797BD2CC10BE54D3E26126BE8C74E47EA868C5D96516A25A"
    "D28651C7F8B6A19704274E2258AA44E874BCA2D5D09C78A0019A4A15783B000F"
)
# testfiles/teep_success.md: COSE_Sign1_Tagged by the Agent's ES256 key.
SUCCESS_PAYLOAD = bytes.fromhex("8205a11450a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
SUCCESS_SIG = bytes.fromhex(
    "F12ED1E1699DDB77AC94266E1093FCF70BA8A11020FBAC1146F6B36AE3A1D484"
    "DCD5E4A008CC5DEA42F41DC022BAD549CC2320BDC6321ADFA2DA9C3709DA32E7"
)


def _query_request() -> bytes:
    signatures = [
        [b"\xa1\x01\x26", {4: TAM_ES256.kid}, QR_SIG_ES256],
        [b"\xa1\x01\x27", {4: TAM_ED25519.kid}, QR_SIG_EDDSA],
    ]
    return cbor2.dumps(cbor2.CBORTag(98, [b"\xa0", {}, QUERY_REQUEST_PAYLOAD, signatures]))


def test_libteep_kids_are_rfc9679_thumbprints() -> None:
    assert TAM_ES256.kid.hex() == "c770ec535d8c949586324adaf2ddffb76b1a852dfa52e19c80f7440ec163beea"
    assert TAM_ED25519.kid.hex() == "866eefbd6718c8846cd7ddfe43fc74ab1daac4538ff8514ea2ec2d410a415743"
    assert AGENT_ES256.kid.hex() == "e96788b10b1610abe478f9ce8dcfe2304c0911dd8cfeadde25ec30ccb5a7b5af"


@pytest.mark.parametrize(("key", "alg"), [(TAM_ES256, -7), (TAM_ED25519, -8)])
def test_libteep_cose_sign_query_request(key: VerifyingKey, alg: int) -> None:
    """An Agent that trusts (or supports) only one of the TAM's two algorithms."""
    result = verify(_query_request(), TrustStore([key]))
    assert result.structure == "COSE_Sign" and result.alg == alg and result.kid == key.kid
    message = decode(result.payload)
    assert isinstance(message, QueryRequest) and message.token == TOKEN
    assert message.data_item_requested == 3


def test_cwt_reads_the_empty_body_header_differently() -> None:
    """cwt substitutes h'' for a body protected header sent as h'a0'; libteep signed the bytes as
    sent. This is why signatures are checked by `_check_direct` (documented in docs/security.md)."""
    with pytest.raises(SignatureInvalid):
        verify(_query_request(), TAM_ED25519, via_cwt=True)


def test_libteep_query_request_tampered_or_untrusted() -> None:
    data = bytearray(_query_request())
    data[30] ^= 1  # inside the payload
    with pytest.raises(SignatureInvalid):
        verify(bytes(data), TrustStore([TAM_ES256, TAM_ED25519]))
    with pytest.raises(UnknownKid):
        verify(_query_request(), AGENT_ES256)


def test_libteep_sign1_success() -> None:
    data = cbor2.dumps(
        cbor2.CBORTag(18, [b"\xa1\x01\x26", {4: AGENT_ES256.kid}, SUCCESS_PAYLOAD, SUCCESS_SIG])
    )
    for via_cwt in (False, True):
        result = verify(data, AGENT_ES256, via_cwt=via_cwt)
        assert result.alg == -7 and result.kid == AGENT_ES256.kid
    message = decode(result.payload)
    assert isinstance(message, Success) and message.token == TOKEN
    # legacy ES256 refused when the caller allows only the current ids
    with pytest.raises(UnsupportedAlgorithm):
        verify(data, AGENT_ES256, allowed_algs={-9, -19})


# An EAT (RFC 9711 constrained-device profile, not TEEP's) from the same author's Veraison notes:
# COSE_Sign1 ES256 without kid, by an attestation key; cnf carries the Agent's COSE_Key and its kid.
THIRD_PARTY_EAT_CLAIMS = bytes.fromhex(
    "a708a201a4010220012158205886cd61dd875862e5aaa820e7a15274c968a9bc96048ddcace32f50c3651ba3225820"
    "9eed8125e932cd60c0ead3650d0a485cf726d378d1b016ed4298b2961e258f1b035820e96788b10b1610abe478f9ce"
    "8dcfe2304c0911dd8cfeadde25ec30ccb5a7b5af0a49948f8860d13a463e8e190100500198f50a4ff6c05861c8860d"
    "13a638ea1901024389482319010350549dcecc8b987c737b44e40f7c635ce81901048265312e332e34011901097475"
    "726e3a696574663a7266633a72666339373131"
)
THIRD_PARTY_EAT_SIG = bytes.fromhex(
    "316C3C092BEDF27520CBAD7791E13C6F5F5D94CDB997C3EA3A90F1FBAABA8FE3"
    "B930D8D4B6B4434AF577A75A128806FAC94F0054D9AB6F5629E261F6A75CEF6F"
)
ATTESTATION_KEY_PEM = (
    b"-----BEGIN PUBLIC KEY-----\n"
    b"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMKBCTNIcKUSDii11ySs3526iDZ8A\n"
    b"iTo7Tu6KPAqv7D7gS2XpJFbZiItSs3m9+9Ue6GnvHw/GW2ZZaVtszggXIw==\n"
    b"-----END PUBLIC KEY-----\n"
)


def test_third_party_eat_signature_verifies_but_lacks_teep_claims() -> None:
    from teep_coap.security import eat
    from teep_coap.security.errors import ClaimMissing
    from teep_coap.security.keys import load_verifying_key

    attestation_key = load_verifying_key(ATTESTATION_KEY_PEM)
    data = cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x26", {}, THIRD_PARTY_EAT_CLAIMS, THIRD_PARTY_EAT_SIG]))
    result = verify(data, TrustStore([attestation_key, TAM_ES256]))  # no kid: every ES256 key is tried
    assert result.key == attestation_key and result.kid is None
    with pytest.raises(ClaimMissing, match="manifests"):
        eat.verify_evidence(
            data,
            attestation_key,
            expected_nonce=bytes.fromhex("948f8860d13a463e8e"),
            expected_kid=AGENT_ES256.kid,
            eat_profile=None,
        )
