"""Keys: RFC 9679 kid against published values, format round trips, typed errors on bad key files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import stat
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from teep_coap.security.errors import KeyFileError, SignatureInvalid
from teep_coap.security.keys import (
    ALG_ED25519,
    ALG_EDDSA,
    ALG_ES256,
    ALG_ESP256,
    SigningKey,
    VerifyingKey,
    generate_key,
    load_signing_key,
    load_verifying_key,
    thumbprint,
    write_key_files,
)
from teep_coap.security.truststore import TrustStore

# RFC 9679 §6 example key (EC2 P-256) and its SHA-256 thumbprint.
RFC9679_X = bytes.fromhex("65eda5a12577c2bae829437fe338701a10aaa375e1bb5b5de108de439c08551d")
RFC9679_Y = bytes.fromhex("1e52ed75701163f7f9e40ddf9f341b3dc9ba860af7e0ca7ca7e9eecd0084d19c")
RFC9679_THUMBPRINT = "496bd8afadf307e5b08c64b0421bf9dc01528a344a43bda88fadd1669da253ec"
RFC9679_POINT = b"\x04" + RFC9679_X + RFC9679_Y

# libteep's example TAM and Agent public keys (uncompressed points, examples/inc/*_es256_public_key.h)
# and the kid values its signed test messages carry (docs/protocol-facts.md §1.1).
LIBTEEP_TAM_POINT = bytes.fromhex(
    "040e908aa8f066db1f084e0c3652c63952bd99f2a5bdb22f9e01367aad03aba68b"
    "77da1bd8ac4f0cb490ba210648bf79ab164d49ad3551d71d314b2749ee42d29a"
)
LIBTEEP_AGENT_POINT = bytes.fromhex(
    "045886cd61dd875862e5aaa820e7a15274c968a9bc96048ddcace32f50c3651ba3"
    "9eed8125e932cd60c0ead3650d0a485cf726d378d1b016ed4298b2961e258f1b"
)


def _p256(point: bytes) -> VerifyingKey:
    return VerifyingKey(ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point))


def test_kid_is_rfc9679_thumbprint_of_the_rfc_example() -> None:
    cose_key = cbor2.dumps(
        {1: 2, -1: 1, -2: RFC9679_X, -3: RFC9679_Y, 2: b"meriadoc.brandybuck@buckland.example"}
    )
    key = load_verifying_key(cose_key)
    assert key.kid.hex() == RFC9679_THUMBPRINT


def test_kid_matches_libteep_tam_and_agent_kids() -> None:
    tam = _p256(LIBTEEP_TAM_POINT)
    agent = _p256(LIBTEEP_AGENT_POINT)
    assert tam.kid.hex().startswith("c770ec53") and tam.kid.hex().endswith("63beea")
    assert agent.kid.hex().startswith("e96788b1") and agent.kid.hex().endswith("a7b5af")
    assert len(tam.kid) == 32


def test_p256_thumbprint_matches_the_deterministic_cose_key_encoding() -> None:
    # thumbprint() lays a P-256 key's input out by hand; cbor2's deterministic encoding of the same
    # map is the reference (keys with leading zero bytes in x or y included, over 300 keys)
    for _ in range(300):
        pub = ec.generate_private_key(ec.SECP256R1()).public_key()
        numbers = pub.public_numbers()
        params = {1: 2, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}
        assert thumbprint(pub) == hashlib.sha256(cbor2.dumps(params, canonical=True)).digest()
    assert thumbprint(_p256(RFC9679_POINT).crypto_key).hex() == RFC9679_THUMBPRINT


def test_ed25519_thumbprint_covers_kty_crv_x_only() -> None:
    key = generate_key("ed25519")
    raw = key.public.crypto_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    expected = cbor2.dumps({1: 1, -1: 6, -2: raw})  # already in deterministic order

    assert key.kid == hashlib.sha256(expected).digest()
    # alg and kid in the COSE_Key do not change the thumbprint
    assert thumbprint(load_verifying_key(key.public.to_cose_key()).crypto_key) == key.kid


@pytest.mark.parametrize(
    ("name", "alg", "accepts", "refuses"),
    [
        ("esp256", ALG_ESP256, {-9, -7}, {-19, -8}),
        ("ed25519", ALG_ED25519, {-19, -8}, {-9, -7}),
        (-7, ALG_ES256, {-9, -7}, {-19}),
        (-8, ALG_EDDSA, {-19, -8}, {-9}),
    ],
)
def test_generate_and_alg_acceptance(name: str | int, alg: int, accepts: set[int], refuses: set[int]) -> None:
    key = generate_key(name)
    assert key.alg == alg == key.public.alg
    assert all(key.public.accepts_alg(a) for a in accepts)
    assert not any(key.public.accepts_alg(a) for a in refuses)


@pytest.mark.parametrize("alg", ["esp256", "ed25519"])
def test_sign_verify_raw(alg: str) -> None:
    key = generate_key(alg)
    sig = key.sign(b"data")
    assert len(sig) == 64  # raw r||s for ECDSA, 64 bytes for Ed25519
    key.public.verify(b"data", sig)
    with pytest.raises(SignatureInvalid):
        key.public.verify(b"datA", sig)
    with pytest.raises(SignatureInvalid):
        generate_key(alg).public.verify(b"data", sig)


@pytest.mark.parametrize("alg", ["esp256", "ed25519"])
def test_all_formats_round_trip(alg: str) -> None:
    key = generate_key(alg)
    private_blobs = [key.to_pem(), key.to_cose_key(), json.dumps(key.to_jwk()).encode()]
    public_blobs = [key.public.to_pem(), key.public.to_cose_key(), json.dumps(key.public.to_jwk()).encode()]
    for blob in private_blobs:
        again = load_signing_key(blob)
        assert again.kid == key.kid and again.alg == key.alg
        key.public.verify(b"m", again.sign(b"m"))  # same private scalar
        # a private key file also yields its public half
        assert load_verifying_key(blob) == key.public
    for blob in public_blobs:
        assert load_verifying_key(blob) == key.public
        with pytest.raises(KeyFileError, match="public key"):
            load_signing_key(blob)
    cose = cbor2.loads(key.public.to_cose_key())
    assert cose[2] == key.kid and cose[3] == key.alg and -4 not in cose
    assert -4 in cbor2.loads(key.to_cose_key())
    jwk = key.public.to_jwk()
    assert "d" not in jwk and jwk["kid"]


def test_legacy_alg_survives_cose_key_round_trip() -> None:
    key = generate_key(-7)
    assert load_signing_key(key.to_cose_key()).alg == ALG_ES256
    # PEM has no alg: the default (fully specified) id applies
    assert load_signing_key(key.to_pem()).alg == ALG_ESP256


def test_write_key_files(tmp_path: Path) -> None:
    key = generate_key("ed25519")
    paths = write_key_files(key, tmp_path / "k")
    assert set(paths) == {
        "private_pem",
        "public_pem",
        "private_cose",
        "public_cose",
        "private_jwk",
        "public_jwk",
    }
    for kind, path in paths.items():
        mode = stat.S_IMODE(path.stat().st_mode)
        if kind.startswith("private"):
            assert mode == 0o600
            assert load_signing_key(path).kid == key.kid
        else:
            assert load_verifying_key(path).kid == key.kid
    with pytest.raises(KeyFileError, match="exists"):
        write_key_files(key, tmp_path / "k")


def _cert_for(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tam.example")])
    import datetime

    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_certificate_gives_its_public_key() -> None:
    priv = ec.generate_private_key(ec.SECP256R1())
    key = load_verifying_key(_cert_for(priv))
    assert key == SigningKey(priv).public


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "neither PEM"),
        (b"\xff\xff\xff", "neither PEM|CBOR map"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "cannot read PEM"),
        (b"{not json", "invalid JSON"),
        (b'{"kty": "RSA", "n": "AQAB", "e": "AQAB"}', "unsupported JWK"),
        (b'{"kty": "EC", "crv": "P-256", "x": 5, "y": "AA"}', "base64url"),
        (cbor2.dumps([1, 2]), "must be a CBOR map"),
        (cbor2.dumps({1: 2, -1: 1, -2: b"\x01" * 32, -3: b"\x02" * 32}), "invalid key material"),
        (cbor2.dumps({1: 2, -1: 2, -2: b"\x01" * 48, -3: b"\x02" * 48}), "unsupported key"),
        (cbor2.dumps({1: 1, -1: 6, -2: "text"}), "byte string"),
        (cbor2.dumps({1: 1, -1: 6, -2: b"\x00" * 32, 3: -9}), "does not fit"),
        (cbor2.dumps({1: 1, -1: 6, -2: b"\x00" * 32, 3: -257}), "not a signature algorithm"),
    ],
)
def test_bad_key_blobs_raise_key_file_error(blob: bytes, message: str) -> None:
    with pytest.raises(KeyFileError, match=message):
        load_verifying_key(blob)


def test_unsupported_key_types_refused() -> None:
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFileError, match="unsupported key type"):
        load_signing_key(rsa_pem)
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFileError, match="P-256"):
        load_signing_key(p384)
    with pytest.raises(KeyFileError):
        generate_key("rs256")
    with pytest.raises(KeyFileError):
        VerifyingKey(ed25519.Ed25519PrivateKey.generate().public_key(), alg=-9)


def test_missing_file_is_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        load_signing_key(tmp_path / "nope.pem")


def test_trust_store_from_dir(tmp_path: Path) -> None:
    a, b = generate_key("esp256"), generate_key("ed25519")
    folder = tmp_path / "trust"
    folder.mkdir()
    (folder / "tam.pem").write_bytes(a.public.to_pem())
    (folder / "tam.cose_key").write_bytes(a.public.to_cose_key())  # same key twice: one entry
    (folder / "agent.jwk").write_text(json.dumps(b.public.to_jwk()))
    priv = ec.generate_private_key(ec.SECP256R1())
    (folder / "verifier.crt").write_bytes(_cert_for(priv))
    (folder / "README.md").write_text("not a key")
    store = TrustStore.from_dir(folder)
    assert len(store) == 3
    assert store.resolve(a.kid, -9) == [a.public]
    assert store.resolve(a.kid, -7) == [a.public]  # legacy id accepted by a P-256 key
    assert store.resolve(a.kid, -19) == []
    assert store.resolve(b.kid, -19) == [b.public]
    assert {k.kid for k in store.resolve(None, -9)} == {a.kid, SigningKey(priv).kid}
    assert store.resolve(b"\x00" * 32, -9) == []
    (folder / "junk.bin").write_bytes(b"\x00\x01")
    with pytest.raises(KeyFileError):
        TrustStore.from_dir(folder)
    assert len(TrustStore.from_dir(folder, strict=False)) == 3
    with pytest.raises(KeyFileError, match="not a folder"):
        TrustStore.from_dir(tmp_path / "missing")


_KEY_SEEDS = [
    generate_key("esp256").to_cose_key(),
    generate_key("ed25519").public.to_cose_key(),
    json.dumps(generate_key("esp256").to_jwk()).encode(),
    generate_key("ed25519").to_pem(),
]


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.binary(max_size=200), st.sampled_from(_KEY_SEEDS)),
    st.integers(min_value=0),
    st.integers(0, 255),
)
def test_key_loading_fuzz_only_raises_key_file_error(blob: bytes, pos: int, value: int) -> None:
    if blob:
        mutated = bytearray(blob)
        mutated[pos % len(blob)] = value
        blob = bytes(mutated)
    with contextlib.suppress(KeyFileError):
        load_verifying_key(blob)


def test_der_keys_and_certificates() -> None:
    priv = ec.generate_private_key(ec.SECP256R1())
    expected = SigningKey(priv).kid
    der_pub = priv.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der_priv = priv.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der_cert = x509.load_pem_x509_certificate(_cert_for(priv)).public_bytes(serialization.Encoding.DER)
    assert load_verifying_key(der_pub).kid == expected
    assert load_verifying_key(der_cert).kid == expected
    assert load_signing_key(der_priv).kid == expected
    with pytest.raises(KeyFileError, match="DER"):
        load_verifying_key(b"\x30\x03\x02\x01\x00")
