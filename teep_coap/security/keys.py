"""Signing keys of TAMs, Agents and Verifiers: P-256 (ESP256, -9) and Ed25519 (-19).

A key's `kid` is its RFC 9679 COSE Key Thumbprint: SHA-256 over the deterministic CBOR encoding of the
required public parameters of its COSE_Key. TEEP puts exactly that value in the unprotected `kid`
header (docs/protocol-facts.md §1.1), so a peer can find our key without any registry.

Keys load from PEM or DER (PKCS#8 / SubjectPublicKeyInfo / X.509 certificate), COSE_Key (CBOR) or JWK
(JSON), detected from the bytes. The `cryptography` key objects stay reachable as `.crypto_key` so the
SUIT and JOSE code can reuse them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from teep_coap.model.codes import CoseAlg
from teep_coap.security.errors import KeyFileError, SignatureInvalid

# COSE algorithm ids (RFC 9053, RFC 9864 fully specified algorithms).
ALG_ESP256 = int(CoseAlg.ESP256)  # -9
ALG_ED25519 = int(CoseAlg.ED25519)  # -19
ALG_ES256 = int(CoseAlg.ES256)  # -7, legacy (<= draft-20)
ALG_EDDSA = int(CoseAlg.EDDSA)  # -8, legacy (<= draft-20)

P256_ALGS = frozenset({ALG_ESP256, ALG_ES256})
ED25519_ALGS = frozenset({ALG_ED25519, ALG_EDDSA})
SIGNATURE_ALGS = P256_ALGS | ED25519_ALGS

ALG_NAMES: Mapping[int, str] = {
    ALG_ESP256: "ESP256",
    ALG_ED25519: "Ed25519",
    ALG_ES256: "ES256",
    ALG_EDDSA: "EdDSA",
}
_ALG_BY_NAME = {name.lower(): alg for alg, name in ALG_NAMES.items()}

# COSE_Key labels (RFC 9052 §7, RFC 9053 §7).
_KTY, _KID, _ALG = 1, 2, 3
_CRV, _X, _Y, _D = -1, -2, -3, -4
_KTY_OKP, _KTY_EC2 = 1, 2
_CRV_P256, _CRV_ED25519 = 1, 6

# One ECDSA signature algorithm object for every call (it is immutable; building it costs ~1 us).
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())

PublicCryptoKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateCryptoKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
KeySource = str | os.PathLike[str] | bytes


def alg_id(alg: str | int) -> int:
    """COSE alg id from a name ("esp256", "ed25519", "es256", "eddsa") or a number; others refused."""
    if isinstance(alg, str):
        try:
            return _ALG_BY_NAME[alg.strip().lower()]
        except KeyError:
            raise KeyFileError(f"unknown algorithm {alg!r}; use esp256 or ed25519") from None
    if alg not in SIGNATURE_ALGS:
        raise KeyFileError(f"unsupported COSE algorithm {alg}; use -9 (ESP256) or -19 (Ed25519)")
    return int(alg)


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64u_decode(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise KeyFileError(f"JWK member {what!r} must be a base64url string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as exc:
        raise KeyFileError(f"JWK member {what!r} is not base64url: {exc}") from None


def _public_params(pub: PublicCryptoKey) -> dict[int, Any]:
    """The required public COSE_Key parameters (RFC 9679 §4), in deterministic order."""
    if isinstance(pub, ed25519.Ed25519PublicKey):
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {_KTY: _KTY_OKP, _CRV: _CRV_ED25519, _X: raw}
    numbers = pub.public_numbers()
    return {
        _KTY: _KTY_EC2,
        _CRV: _CRV_P256,
        _X: numbers.x.to_bytes(32, "big"),
        _Y: numbers.y.to_bytes(32, "big"),
    }


# The deterministic encoding of a P-256 key's thumbprint input, {1: 2, -1: 1, -2: x, -3: y} (RFC 9679
# §3), around the 64 bytes of the uncompressed point: its layout never varies, so it is put together
# by hand; through cbor2 (a map built and sorted) it took 7.4 µs a key, and a TAM parses the public
# key of every device it has not seen lately once per session.
_EC2_THUMBPRINT_HEAD = bytes.fromhex("a401022001215820")
_EC2_THUMBPRINT_Y = bytes.fromhex("225820")


def thumbprint(pub: PublicCryptoKey) -> bytes:
    """RFC 9679 COSE Key Thumbprint with SHA-256."""
    if isinstance(pub, ec.EllipticCurvePublicKey) and isinstance(pub.curve, ec.SECP256R1):
        point = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return hashlib.sha256(
            b"".join((_EC2_THUMBPRINT_HEAD, point[1:33], _EC2_THUMBPRINT_Y, point[33:]))
        ).digest()
    return hashlib.sha256(cbor2.dumps(_public_params(pub), canonical=True)).digest()


def _check_supported(key: object) -> None:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyFileError(f"unsupported elliptic curve {key.curve.name}; only P-256 is used")
        return
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return
    raise KeyFileError(f"unsupported key type {type(key).__name__}; only P-256 and Ed25519 are used")


def _default_alg(key: object) -> int:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return ALG_ESP256
    return ALG_ED25519


def _accepted(key: object) -> frozenset[int]:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return P256_ALGS
    return ED25519_ALGS


class VerifyingKey:
    """A public key that checks COSE signatures (raw r||s for ECDSA, RFC 9053 §2.1)."""

    __slots__ = ("_accepts", "alg", "crypto_key", "cwt_cache", "kid")

    def __init__(self, crypto_key: PublicCryptoKey, *, alg: int | None = None, kid: bytes | None = None):
        _check_supported(crypto_key)
        self.crypto_key: PublicCryptoKey = crypto_key
        self._accepts = _accepted(crypto_key)
        self.alg: int = _default_alg(crypto_key) if alg is None else alg
        if self.alg not in self._accepts:
            raise KeyFileError(f"algorithm {self.alg} does not fit a {self.key_type} key")
        self.kid: bytes = thumbprint(crypto_key) if kid is None else bytes(kid)
        self.cwt_cache: Any = None  # security.cwt_keys.cwt_key keeps the cwt view here

    @property
    def key_type(self) -> str:
        """ "P-256" or "Ed25519"."""
        return "P-256" if isinstance(self.crypto_key, ec.EllipticCurvePublicKey) else "Ed25519"

    def accepts_alg(self, alg: int) -> bool:
        """A P-256 key verifies ESP256 (-9) and legacy ES256 (-7); Ed25519 verifies -19 and legacy -8."""
        return alg in self._accepts

    def verify(self, data: bytes, signature: bytes) -> None:
        """Check a raw COSE signature over `data`; raises `SignatureInvalid`."""
        key = self.crypto_key
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, data)
            else:
                if len(signature) != 64:
                    raise SignatureInvalid(f"ECDSA P-256 signature must be 64 bytes, got {len(signature)}")
                der = encode_dss_signature(
                    int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                )
                key.verify(der, data, _ECDSA_SHA256)
        except InvalidSignature:
            raise SignatureInvalid(f"signature does not verify with key {self.kid.hex()}") from None

    def cose_params(self) -> dict[int, Any]:
        """COSE_Key map of the public key with kid and alg."""
        params = _public_params(self.crypto_key)
        params[_KID] = self.kid
        params[_ALG] = self.alg
        return params

    def to_cose_key(self) -> bytes:
        """COSE_Key (CBOR) of the public key, with kid (2) and alg (3)."""
        return cbor2.dumps(self.cose_params(), canonical=True)

    def to_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM."""
        return self.crypto_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def to_jwk(self) -> dict[str, str]:
        """RFC 7517/8037 JWK of the public key; `kid` is the base64url thumbprint."""
        params = _public_params(self.crypto_key)
        if params[_KTY] == _KTY_OKP:
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64u(params[_X]), "alg": "EdDSA"}
        else:
            jwk = {
                "kty": "EC",
                "crv": "P-256",
                "x": _b64u(params[_X]),
                "y": _b64u(params[_Y]),
                "alg": "ES256",
            }
        jwk["kid"] = _b64u(self.kid)
        return jwk

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyingKey) and other.kid == self.kid and other.alg == self.alg

    def __hash__(self) -> int:
        return hash((self.kid, self.alg))

    def __repr__(self) -> str:
        return f"VerifyingKey({self.key_type}, alg={self.alg}, kid={self.kid.hex()})"


class SigningKey:
    """A private key that signs COSE objects with `.alg`; `.public` is its `VerifyingKey`."""

    __slots__ = ("alg", "crypto_key", "cwt_cache", "kid", "public")

    def __init__(self, crypto_key: PrivateCryptoKey, *, alg: int | None = None, kid: bytes | None = None):
        _check_supported(crypto_key)
        self.crypto_key: PrivateCryptoKey = crypto_key
        self.public = VerifyingKey(crypto_key.public_key(), alg=alg, kid=kid)
        self.alg: int = self.public.alg
        self.kid: bytes = self.public.kid
        self.cwt_cache: Any = None  # security.cwt_keys.cwt_key keeps the cwt view here

    @property
    def key_type(self) -> str:
        return self.public.key_type

    def accepts_alg(self, alg: int) -> bool:
        return self.public.accepts_alg(alg)

    def sign(self, data: bytes) -> bytes:
        """Raw COSE signature over `data` (r||s, 64 bytes, for ECDSA P-256)."""
        key = self.crypto_key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        r, s = decode_dss_signature(key.sign(data, _ECDSA_SHA256))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def cose_params(self) -> dict[int, Any]:
        params = self.public.cose_params()
        key = self.crypto_key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            params[_D] = key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
        else:
            params[_D] = key.private_numbers().private_value.to_bytes(32, "big")
        return params

    def to_cose_key(self) -> bytes:
        """COSE_Key (CBOR) of the private key (includes d = -4), with kid and alg."""
        return cbor2.dumps(self.cose_params(), canonical=True)

    def to_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM (protect the file, not the bytes: files are written 0600)."""
        return self.crypto_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def to_jwk(self) -> dict[str, str]:
        params = self.cose_params()
        jwk = self.public.to_jwk()
        jwk["d"] = _b64u(params[_D])
        return jwk

    def __repr__(self) -> str:
        return f"SigningKey({self.key_type}, alg={self.alg}, kid={self.kid.hex()})"


def generate_key(alg: str | int = ALG_ESP256) -> SigningKey:
    """A fresh key for "esp256" | "ed25519" | -9 | -19 (legacy -7/-8 give keys that emit those ids)."""
    a = alg_id(alg)
    if a in P256_ALGS:
        return SigningKey(ec.generate_private_key(ec.SECP256R1()), alg=a)
    return SigningKey(ed25519.Ed25519PrivateKey.generate(), alg=a)


# ---------------------------------------------------------------------------------------------- loading


def _read(source: KeySource) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), "key bytes"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None


def _detect(data: bytes) -> str:
    head = data.lstrip()[:16]
    if head.startswith(b"-----BEGIN"):
        return "pem"
    if head.startswith(b"{"):
        return "jwk"
    if data[:1] == b"\x30":  # ASN.1 SEQUENCE; never the start of a COSE_Key (a CBOR map)
        return "der"
    return "cose"


def _load_pem(data: bytes, name: str) -> PrivateCryptoKey | PublicCryptoKey:
    text = data.decode("ascii", errors="replace")
    try:
        if "BEGIN CERTIFICATE" in text:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        elif "PRIVATE KEY" in text:
            key = serialization.load_pem_private_key(data, password=None)
        elif "PUBLIC KEY" in text:
            key = serialization.load_pem_public_key(data)
        else:
            raise KeyFileError(f"{name}: PEM holds no key or certificate")
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{name}: cannot read PEM: {exc}") from None
    _check_supported(key)
    return key


def _load_der(data: bytes, name: str) -> PrivateCryptoKey | PublicCryptoKey:
    """DER SubjectPublicKeyInfo, PKCS#8 or X.509 certificate (tried in that order)."""
    loaders = (
        serialization.load_der_public_key,
        lambda d: serialization.load_der_private_key(d, password=None),
        lambda d: x509.load_der_x509_certificate(d).public_key(),
    )
    for loader in loaders:
        try:
            key: Any = loader(data)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        _check_supported(key)
        return key
    raise KeyFileError(f"{name}: DER data is not a public key, private key or certificate")


def _from_params(
    params: Mapping[Any, Any], name: str
) -> tuple[PrivateCryptoKey | PublicCryptoKey, int | None]:
    """Key object and COSE alg from COSE_Key parameters (labels as ints)."""
    kty, crv = params.get(_KTY), params.get(_CRV)
    alg = params.get(_ALG)
    if alg is not None and alg not in SIGNATURE_ALGS:
        raise KeyFileError(f"{name}: COSE_Key alg {alg!r} is not a signature algorithm we use")
    x, y, d = params.get(_X), params.get(_Y), params.get(_D)
    for label, value in ((_X, x), (_Y, y), (_D, d)):
        if value is not None and not isinstance(value, bytes):
            raise KeyFileError(f"{name}: COSE_Key parameter {label} must be a byte string")
    try:
        if kty == _KTY_OKP and crv == _CRV_ED25519:
            if alg is not None and alg not in ED25519_ALGS:
                raise KeyFileError(f"{name}: alg {alg} does not fit an Ed25519 key")
            if d is not None:
                key: Any = ed25519.Ed25519PrivateKey.from_private_bytes(d)
                if (
                    x is not None
                    and key.public_key().public_bytes(
                        serialization.Encoding.Raw, serialization.PublicFormat.Raw
                    )
                    != x
                ):
                    raise KeyFileError(f"{name}: private and public parts of the Ed25519 key differ")
                return key, alg
            if x is None:
                raise KeyFileError(f"{name}: Ed25519 COSE_Key without x")
            return ed25519.Ed25519PublicKey.from_public_bytes(x), alg
        if kty == _KTY_EC2 and crv == _CRV_P256:
            if alg is not None and alg not in P256_ALGS:
                raise KeyFileError(f"{name}: alg {alg} does not fit a P-256 key")
            if d is not None:
                priv = ec.derive_private_key(int.from_bytes(d, "big"), ec.SECP256R1())
                if x is not None and priv.public_key().public_numbers().x != int.from_bytes(x, "big"):
                    raise KeyFileError(f"{name}: private and public parts of the P-256 key differ")
                return priv, alg
            if x is None or y is None:
                raise KeyFileError(f"{name}: P-256 COSE_Key needs x and y")
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            )
            return numbers.public_key(), alg
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{name}: invalid key material: {exc}") from None
    raise KeyFileError(f"{name}: unsupported key (kty={kty!r}, crv={crv!r}); only P-256 and Ed25519 are used")


def _load_cose(data: bytes, name: str) -> tuple[PrivateCryptoKey | PublicCryptoKey, int | None]:
    try:
        params = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises many types on garbage
        raise KeyFileError(f"{name}: neither PEM, JWK nor CBOR COSE_Key ({exc})") from None
    if not isinstance(params, dict):
        raise KeyFileError(f"{name}: COSE_Key must be a CBOR map")
    return _from_params(params, name)


_JWK_ALGS = {"ES256": None, "EdDSA": None, "Ed25519": ALG_ED25519, "ESP256": ALG_ESP256}


def _load_jwk(data: bytes, name: str) -> tuple[PrivateCryptoKey | PublicCryptoKey, int | None]:
    try:
        jwk = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{name}: invalid JSON: {exc}") from None
    if not isinstance(jwk, dict):
        raise KeyFileError(f"{name}: JWK must be a JSON object")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    params: dict[int, Any] = {}
    if kty == "OKP" and crv == "Ed25519":
        params = {_KTY: _KTY_OKP, _CRV: _CRV_ED25519, _X: _b64u_decode(jwk.get("x"), "x")}
    elif kty == "EC" and crv == "P-256":
        params = {
            _KTY: _KTY_EC2,
            _CRV: _CRV_P256,
            _X: _b64u_decode(jwk.get("x"), "x"),
            _Y: _b64u_decode(jwk.get("y"), "y"),
        }
    else:
        raise KeyFileError(f"{name}: unsupported JWK (kty={kty!r}, crv={crv!r}); only P-256 and Ed25519")
    if "d" in jwk:
        params[_D] = _b64u_decode(jwk["d"], "d")
    # A JOSE "alg" names no COSE id for our purposes (ES256 in JOSE = our ESP256): only the fully
    # specified names pick one; otherwise the key's default (ESP256 / Ed25519) applies.
    return _from_params(params, name)[0], _JWK_ALGS.get(jwk.get("alg", ""))


def _load_any(source: KeySource) -> tuple[PrivateCryptoKey | PublicCryptoKey, int | None, str]:
    data, name = _read(source)
    kind = _detect(data)
    if kind == "pem":
        return _load_pem(data, name), None, name
    if kind == "der":
        return _load_der(data, name), None, name
    if kind == "jwk":
        key, alg = _load_jwk(data, name)
        return key, alg, name
    key, alg = _load_cose(data, name)
    return key, alg, name


def load_signing_key(source: KeySource, *, alg: int | None = None) -> SigningKey:
    """Private key from a path or bytes (PEM, COSE_Key or JWK, auto-detected)."""
    key, found_alg, name = _load_any(source)
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{name}: holds a public key; a private key is needed to sign")
    return SigningKey(key, alg=alg if alg is not None else found_alg)


def load_verifying_key(source: KeySource, *, alg: int | None = None) -> VerifyingKey:
    """Public key from a path or bytes (PEM incl. certificates, COSE_Key or JWK); a private key gives
    its public half."""
    key, found_alg, _ = _load_any(source)
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) else key
    return VerifyingKey(pub, alg=alg if alg is not None else found_alg)


KEY_FILE_NAMES = {
    "private_pem": "private.pem",
    "public_pem": "public.pem",
    "private_cose": "private.cose_key",
    "public_cose": "public.cose_key",
    "private_jwk": "private.jwk",
    "public_jwk": "public.jwk",
}


def write_key_files(
    key: SigningKey, out_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> dict[str, Path]:
    """Write the key in every format to `out_dir` (private files mode 0600); returns kind -> path."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create {out}: {exc.strerror or exc}") from None
    contents = {
        "private_pem": key.to_pem(),
        "public_pem": key.public.to_pem(),
        "private_cose": key.to_cose_key(),
        "public_cose": key.public.to_cose_key(),
        "private_jwk": (json.dumps(key.to_jwk(), indent=2) + "\n").encode(),
        "public_jwk": (json.dumps(key.public.to_jwk(), indent=2) + "\n").encode(),
    }
    paths: dict[str, Path] = {}
    for kind, blob in contents.items():
        path = out / KEY_FILE_NAMES[kind]
        if path.exists() and not overwrite:
            raise KeyFileError(f"{path} exists; refusing to overwrite a key")
        mode = 0o600 if kind.startswith("private") else 0o644
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            os.chmod(path, mode)
        except OSError as exc:
            raise KeyFileError(f"cannot write {path}: {exc.strerror or exc}") from None
        paths[kind] = path
    return paths
