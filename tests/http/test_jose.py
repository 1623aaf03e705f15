"""JWS (flattened JSON) for the TEEP JSON twin: round trips, cross-check with raw `cryptography`, refusals."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from teep_coap.security.errors import SecurityError, SignatureInvalid, UnknownKid, UnsupportedAlgorithm
from teep_coap.security.jose import JoseDecodeError, sign_json, verify_json
from teep_coap.security.keys import SigningKey, generate_key
from teep_coap.security.truststore import TrustStore

P256 = generate_key("esp256")
ED = generate_key("ed25519")


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize("key", [P256, ED], ids=["ES256", "EdDSA"])
def test_round_trip_and_layout(key: SigningKey) -> None:
    payload = b'{"type":1,"token":"AAECAwQFBgc"}'
    data = sign_json(payload, key)
    obj = json.loads(data)
    assert list(obj) == ["protected", "header", "payload", "signature"]
    assert json.loads(unb64u(obj["protected"])) == {"alg": "ES256" if key is P256 else "EdDSA"}
    assert unb64u(obj["header"]["kid"]) == key.kid  # RFC 9679 thumbprint, as in COSE
    assert len(unb64u(obj["signature"])) == 64
    assert b" " not in data
    got = verify_json(data, TrustStore([P256.public, ED.public]))
    assert got.payload == payload and got.key == key.public and got.kid == key.kid


def test_es256_signature_checks_with_raw_cryptography() -> None:
    """Independent of jwcrypto: RFC 7515 §5.2 signing input = protected '.' payload, r||s signature."""
    data = json.loads(sign_json(b"hello", P256))
    signing_input = f"{data['protected']}.{data['payload']}".encode()
    sig = unb64u(data["signature"])
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub = P256.crypto_key.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    ed = json.loads(sign_json(b"hello", ED))
    ED.public.crypto_key.verify(unb64u(ed["signature"]), f"{ed['protected']}.{ed['payload']}".encode())  # type: ignore[call-arg]


def test_tampered_payload_and_wrong_key() -> None:
    data = json.loads(sign_json(b'{"a":1}', P256))
    data["payload"] = b64u(b'{"a":2}')
    with pytest.raises(SignatureInvalid):
        verify_json(json.dumps(data).encode(), P256.public)
    with pytest.raises(UnknownKid):
        verify_json(sign_json(b"x", P256), generate_key("esp256").public)


def forge(protected: dict[str, object], header: dict[str, object] | None = None) -> bytes:
    obj: dict[str, object] = {"protected": b64u(json.dumps(protected).encode())}
    if header is not None:
        obj["header"] = header
    obj["payload"] = b64u(b"x")
    obj["signature"] = b64u(b"\0" * 64)
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"not json", JoseDecodeError),
        (b"[1,2]", JoseDecodeError),
        (b'{"payload":"eA","signature":"AA"}', JoseDecodeError),
        (forge({"alg": "none"}), UnsupportedAlgorithm),
        (forge({"alg": "HS256"}), UnsupportedAlgorithm),
        (forge({"alg": "ES256", "crit": ["x"], "x": 1}), JoseDecodeError),
        (forge({}, {"alg": "ES256"}), JoseDecodeError),
        (forge({"alg": "ES256"}, {"kid": "+++"}), JoseDecodeError),
        (forge({"alg": "ES256", "kid": "AA"}, {"kid": "AA"}), JoseDecodeError),
        (b'{"signatures":[]}', JoseDecodeError),
    ],
)
def test_refusals_are_typed(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        verify_json(data, P256.public)


def test_algorithm_must_fit_the_key() -> None:
    """An EdDSA-labelled JWS never verifies with a P-256 key of the same kid (no alg confusion)."""
    data = json.loads(sign_json(b"x", P256))
    data["protected"] = b64u(b'{"alg":"EdDSA"}')
    with pytest.raises(UnknownKid):
        verify_json(json.dumps(data).encode(), P256.public)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_escape_as_raw_exceptions(data: bytes) -> None:
    with contextlib.suppress(SecurityError):
        verify_json(data, P256.public)


def test_several_signers_use_general_serialization() -> None:
    data = sign_json(b"q", [P256, ED])
    obj = json.loads(data)
    assert list(obj) == ["payload", "signatures"] and len(obj["signatures"]) == 2
    assert verify_json(data, ED.public).key == ED.public  # an Ed25519-only peer takes its signature
    assert verify_json(data, P256.public).key == P256.public
    with pytest.raises(UnknownKid):  # the EdDSA entry is allowed but its signer is not trusted
        verify_json(data, P256.public, allowed_algs=["EdDSA"])
    with pytest.raises(UnsupportedAlgorithm):
        verify_json(data, P256.public, allowed_algs=["RS256"])
