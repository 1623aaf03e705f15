"""X.509 for the HTTPS binding: a small CA, a server certificate for loopback names, client trust.

The HTTP binding (draft-ietf-teep-otrp-over-http-15) wants HTTPS with server authentication; the
project makes its own CA so tests and demos never depend on the host's trust store. Keys are P-256
(ECDSA), the curve RFC 7925 names for IoT, and certificates carry the SANs a loopback client checks.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from teep_coap.security.errors import SecurityError

DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
CLIENT_CERT = "client.pem"
CLIENT_KEY = "client.key"


class CertificateError(SecurityError):
    """A certificate or TLS key file is missing, unreadable, or does not fit (e.g. expired, wrong key)."""


@dataclass(frozen=True)
class CertBundle:
    """Paths of the files `write_bundle` produces (client files exist only if asked for)."""

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path | None = None
    client_key: Path | None = None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "teep-coap"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def generate_ca(
    common_name: str = "teep-coap test CA", days: int = 365
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA (path length 0: it signs leaf certificates only)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    *,
    hosts: Sequence[str] = (),
    client: bool = False,
    days: int = 365,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate signed by the CA: a TLS server (with SANs `hosts`) or a TLS client."""
    if not client and not hosts:
        raise CertificateError("a server certificate needs at least one host name or IP address")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_bundle(
    out_dir: str | Path,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    client_name: str | None = None,
    days: int = 365,
) -> CertBundle:
    """Write a CA, a server certificate for `hosts` and (optionally) a client certificate to `out_dir`."""
    if days < 1:
        raise CertificateError(f"days must be at least 1, got {days}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = generate_ca(days=days)
        srv_key, srv_cert = issue_certificate(
            ca_key, ca_cert, hosts[0] if hosts else "", hosts=hosts, days=days
        )
        _write(out / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM))
        _write(out / CA_KEY, _key_pem(ca_key), private=True)
        _write(out / SERVER_CERT, srv_cert.public_bytes(serialization.Encoding.PEM))
        _write(out / SERVER_KEY, _key_pem(srv_key), private=True)
        client_cert = client_key = None
        if client_name:
            cl_key, cl_cert = issue_certificate(ca_key, ca_cert, client_name, client=True, days=days)
            client_cert, client_key = out / CLIENT_CERT, out / CLIENT_KEY
            _write(client_cert, cl_cert.public_bytes(serialization.Encoding.PEM))
            _write(client_key, _key_pem(cl_key), private=True)
    except OSError as exc:
        raise CertificateError(f"cannot write certificates to {out}: {exc}") from None
    return CertBundle(out, out / CA_CERT, out / SERVER_CERT, out / SERVER_KEY, client_cert, client_key)


def load_bundle(directory: str | Path) -> CertBundle:
    """The bundle `write_bundle` left in `directory`; names the first file that is missing."""
    d = Path(directory)
    for name in (CA_CERT, SERVER_CERT, SERVER_KEY):
        if not (d / name).is_file():
            raise CertificateError(f"{d / name} not found (run `teep-coap certs generate --out {d}`)")
    has_client = (d / CLIENT_CERT).is_file() and (d / CLIENT_KEY).is_file()
    return CertBundle(
        d,
        d / CA_CERT,
        d / SERVER_CERT,
        d / SERVER_KEY,
        d / CLIENT_CERT if has_client else None,
        d / CLIENT_KEY if has_client else None,
    )


def read_certificate(path: str | Path) -> x509.Certificate:
    """One PEM (or DER) certificate from a file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read certificate {path}: {exc}") from None
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"{path} is not an X.509 certificate: {exc}") from None


def describe_certificate(cert: x509.Certificate) -> dict[str, str]:
    """The fields a person checks: subject, issuer, validity, SANs, SHA-256 fingerprint."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        values = [*san.get_values_for_type(x509.DNSName), *san.get_values_for_type(x509.IPAddress)]
        sans = ", ".join(str(v) for v in values)
    except x509.ExtensionNotFound:
        sans = ""
    try:
        ca = str(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        ca = "False"
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "ca": ca,
        "subject_alt_names": sans,
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def server_ssl_context(
    cert_file: str | Path,
    key_file: str | Path,
    *,
    client_ca: str | Path | None = None,
    session_tickets: bool = False,
) -> ssl.SSLContext:
    """TLS server context (TLS 1.2 minimum, BCP 195). With `client_ca`, clients must show a certificate.

    Session tickets are off by default: a Broker session is one connection and never resumes, so the
    tickets would only add bytes (docs/sizes.md says so where it counts the handshake).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
        if client_ca is not None:
            ctx.load_verify_locations(cafile=str(client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(
            f"cannot load TLS server certificate/key ({cert_file}, {key_file}): {exc}"
        ) from None
    if not session_tickets:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    # The NSS key log Wireshark reads (`--pcap` of an HTTPS profile sets SSLKEYLOGFILE); client
    # contexts get it from ssl.create_default_context, a bare SSLContext does not look.
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog:
        ctx.keylog_filename = keylog
    return ctx


def client_ssl_context(
    ca_file: str | Path | None = None,
    *,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> ssl.SSLContext:
    """TLS client context that trusts `ca_file` (or the system store when None) and checks host names."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert_file is not None:
            ctx.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(
            f"cannot load TLS trust or client certificate ({ca_file}, {cert_file}): {exc}"
        ) from None
    return ctx
