"""X.509 for OTrP: the TAM, TEE and SP identities and the chain checks the draft asks for.

`security/certs.py` (the HTTPS helper's) makes P-256 server certificates with loopback SANs; OTrP needs
RSA-2048 (the draft's mandatory algorithm) and P-256 signer certificates without SANs, so this small
module issues its own with `cryptography`. Chain checks are direct-issuer signature and validity checks
up to a configured trust anchor (OTrP's "embedded trust anchor"); no name constraints, no revocation
(the draft's OCSP data is carried but not evaluated here).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from teep_coap.otrp.model import OtrpSecurityError, OtrpUntrustedError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def generate_key(key_type: str = "RSA") -> PrivateKey:
    """RSA-2048 (the draft's MUST) or P-256 (its option)."""
    if key_type == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type in ("EC", "ECC", "P-256"):
        return ec.generate_private_key(ec.SECP256R1())
    raise OtrpSecurityError(f"unsupported key type {key_type!r}; use RSA or EC")


def signature_alg(key: PrivateKey | PublicKey) -> str:
    """JWS name of the signature algorithm this key makes: RS256 or ES256."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    if (
        isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey)
        and key.curve.name == "secp256r1"
    ):
        return "ES256"
    raise OtrpSecurityError("only RSA and P-256 keys are used by OTrP")


def public_der(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_der(data: bytes) -> PublicKey:
    try:
        key = serialization.load_der_public_key(data)
    except (ValueError, TypeError) as exc:
        raise OtrpSecurityError(f"not a DER public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise OtrpSecurityError("public key is neither RSA nor EC")
    return key


def load_cert_der(data: bytes, what: str = "certificate") -> x509.Certificate:
    try:
        with warnings.catch_warnings():
            # e.g. a non-positive serial number: RFC 5280 forbids it, cryptography only warns (for now)
            warnings.simplefilter("error", CryptographyDeprecationWarning)
            cert = x509.load_der_x509_certificate(data)
        # cryptography parses fields lazily: touch the ones we use so a bad one fails here, typed
        _ = (cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc)
        _ = (cert.public_key(), cert.signature_hash_algorithm, list(cert.extensions))
        return cert
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType) as exc:
        raise OtrpSecurityError(f"{what} is not a usable DER X.509 certificate: {exc}") from None
    except Exception as exc:  # e.g. UnsupportedAlgorithm for an exotic key or hash
        raise OtrpSecurityError(f"{what} is not a usable certificate: {type(exc).__name__}") from None


def cert_public_key(cert: x509.Certificate) -> PublicKey:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise OtrpSecurityError("certificate key is neither RSA nor EC")
    return key


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


@dataclass(frozen=True)
class OtrpIdentity:
    """A private key with its certificate chain (leaf first, up to but excluding nothing: the root is
    included when the leaf is self-issued)."""

    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...]

    @property
    def cert(self) -> x509.Certificate:
        return self.chain[0]

    @cached_property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @cached_property
    def chain_der(self) -> tuple[bytes, ...]:
        return tuple(c.public_bytes(serialization.Encoding.DER) for c in self.chain)

    @property
    def public_key(self) -> PublicKey:
        return cert_public_key(self.cert)

    @cached_property
    def did(self) -> bytes:
        """Device id as the draft defines it: SHA-256 of the DER certificate."""
        return hashlib.sha256(self.cert_der).digest()

    @property
    def name(self) -> str:
        return common_name(self.cert)

    @property
    def sig_alg(self) -> str:
        return signature_alg(self.private_key)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "teep-coap OTrP"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def make_ca(cn: str, key_type: str = "RSA", days: int = 3650) -> OtrpIdentity:
    """A self-signed root."""
    key = generate_key(key_type)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return OtrpIdentity(key, (cert,))


def issue(ca: OtrpIdentity, cn: str, key_type: str = "RSA", days: int = 825) -> OtrpIdentity:
    """An end-entity signer certificate under `ca`; the chain is leaf + the CA's chain."""
    key = generate_key(key_type)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        )
        .sign(ca.private_key, hashes.SHA256())
    )
    return OtrpIdentity(key, (cert, *ca.chain))


def verify_chain(
    chain_der: Sequence[bytes],
    anchors: Sequence[x509.Certificate],
    now: datetime.datetime | None = None,
) -> x509.Certificate:
    """Leaf of `chain_der` if each certificate is issued by the next and the last one is issued by (or
    is) a trust anchor, all valid at `now`. Raises `OtrpSecurityError` otherwise."""
    if not chain_der:
        raise OtrpUntrustedError("empty certificate chain")
    if len(chain_der) > 8:
        raise OtrpUntrustedError("certificate chain longer than 8")
    when = now or datetime.datetime.now(datetime.UTC)
    certs = [load_cert_der(d, f"x5c[{i}]") for i, d in enumerate(chain_der)]
    anchor_ders = {a.public_bytes(serialization.Encoding.DER) for a in anchors}
    for i, cert in enumerate(certs):
        if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
            raise OtrpUntrustedError(f"x5c[{i}] ({common_name(cert)!r}) is not valid now")
    for i, cert in enumerate(certs):
        if cert.public_bytes(serialization.Encoding.DER) in anchor_ders:
            return certs[0]
        issuers = [certs[i + 1]] if i + 1 < len(certs) else [a for a in anchors if a.subject == cert.issuer]
        if not issuers:
            break
        try:
            issuers[0].public_key()
            cert.verify_directly_issued_by(issuers[0])
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise OtrpUntrustedError(
                f"x5c[{i}] is not issued by its successor: {exc or 'bad signature'}"
            ) from None
        if i + 1 >= len(certs):
            return certs[0]
    raise OtrpUntrustedError(f"chain of {common_name(certs[0])!r} does not end at a trusted anchor")


@dataclass(frozen=True)
class OtrpPki:
    """A demo PKI: one root for TAMs, TEEs and SPs (a real deployment has one per role)."""

    root: OtrpIdentity
    tam: OtrpIdentity
    tee: OtrpIdentity
    sp: OtrpIdentity


def make_pki(key_type: str = "RSA", tam_name: str = "tam.example", tee_name: str = "Primary TEE") -> OtrpPki:
    root = make_ca("teep-coap OTrP root", key_type)
    return OtrpPki(
        root=root,
        tam=issue(root, tam_name, key_type),
        tee=issue(root, tee_name, key_type),
        sp=issue(root, "sp.example", key_type),
    )


def save_identity(identity: OtrpIdentity, folder: str | os.PathLike[str], name: str) -> None:
    """`name.pem` (the chain, leaf first) and `name.key` (PKCS#8, mode 0600) in `folder`."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in identity.chain)
    (out / f"{name}.pem").write_bytes(pem)
    key = out / f"{name}.key"
    key.write_bytes(
        identity.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key.chmod(0o600)


def load_certs_pem(path: str | os.PathLike[str]) -> tuple[x509.Certificate, ...]:
    try:
        certs = tuple(x509.load_pem_x509_certificates(Path(path).read_bytes()))
    except (OSError, ValueError) as exc:
        raise OtrpSecurityError(f"{path}: not readable PEM certificates: {exc}") from None
    if not certs:
        raise OtrpSecurityError(f"{path}: no certificate")
    return certs


def load_identity(folder: str | os.PathLike[str], name: str) -> OtrpIdentity:
    """What `save_identity` wrote."""
    base = Path(folder)
    chain = load_certs_pem(base / f"{name}.pem")
    try:
        key = serialization.load_pem_private_key((base / f"{name}.key").read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise OtrpSecurityError(f"{base / name}.key: not a readable private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise OtrpSecurityError(f"{base / name}.key: neither RSA nor EC")
    if public_der(key.public_key()) != public_der(cert_public_key(chain[0])):
        raise OtrpSecurityError(f"{base / name}.key does not match {name}.pem")
    return OtrpIdentity(key, chain)
