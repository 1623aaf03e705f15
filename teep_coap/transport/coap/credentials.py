"""Transport credentials of the CoAP binding: DTLS PSKs and OSCORE contexts, on disk.

Layout (documented in docs/profiles.md and docs/coap-binding.md):

- TAM: ``TAMDIR/credentials.toml`` with one ``[[device]]`` table per device (name, psk_identity, psk_hex,
  oscore = folder relative to TAMDIR).
- Agent: ``STATEDIR/transport.toml`` with its own psk_identity, psk_hex and oscore folder.
- An OSCORE folder is aiocoap's FilesystemSecurityContext (settings.json, secret.json, sequence.json),
  so sequence numbers and replay windows survive restarts without nonce reuse.
- EDHOC (profile coap-edhoc): each side keeps its own P-256 private key (a COSE_Key file, mode 0600:
  ``TAMDIR/edhoc/tam.key``, ``STATEDIR/edhoc.key``) and the two public credentials as CCS (RFC 8392
  claims sets with a `cnf` COSE_Key, as RFC 9528 §3.5.2 allows) in hex: ``edhoc_own_hex`` and
  ``edhoc_peer_hex``. No secret is shared: only public credentials cross between the two folders.

The files are written with tomllib-compatible text by hand: Python has no TOML writer in the standard
library and the structure is two flat tables.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from teep_coap.transport.base import TransportError

TAM_CREDENTIALS_FILE = "credentials.toml"
AGENT_CREDENTIALS_FILE = "transport.toml"
PSK_MIN_BYTES = 16
# The DTLS stack (tinydtls, through DTLSSocket) holds a PSK in a 16-byte buffer (an AES-128 key), and
# DTLSSocket copies the configured key into it without checking its length: a longer key overwrites
# the stack of the process that looks it up. A TAM died of SIGSEGV as soon as any peer's handshake
# merely named the identity of a device configured with a 64-byte key, before anything was
# authenticated (2026-12-06). So a DTLS PSK is exactly 16 bytes, checked wherever one is made.
PSK_MAX_BYTES = 16
# tinydtls sends and accepts PSK identities of at most 32 bytes; a longer one fails every handshake
# with an internal_error alert that reads like a wrong key.
PSK_IDENTITY_MAX_BYTES = 32
# RFC 8613 §3.3: with AES-CCM-16-64-128 (nonce 13 bytes) ids are at most 7 bytes.
OSCORE_MAX_ID = 7


class CredentialsError(TransportError):
    """A credentials file or OSCORE folder is missing, malformed or inconsistent."""


def psk_identity_problem(identity: str) -> str | None:
    """Why a DTLS PSK identity cannot be used, or None."""
    size = len(identity.encode())
    if size <= PSK_IDENTITY_MAX_BYTES:
        return None
    return (
        f"psk_identity {identity!r} is {size} bytes; the DTLS stack (tinydtls) takes PSK identities of"
        f" at most {PSK_IDENTITY_MAX_BYTES} bytes, so no DTLS handshake with it can succeed"
    )


def psk_length_problem(psk: bytes) -> str | None:
    """What is wrong with the length of a DTLS PSK, or None when it is usable."""
    if PSK_MIN_BYTES <= len(psk) <= PSK_MAX_BYTES:
        return None
    return (
        f"psk is {len(psk)} bytes; DTLS PSKs here are {PSK_MIN_BYTES} bytes (at least {PSK_MIN_BYTES} for"
        f" security, at most {PSK_MAX_BYTES}: the DTLS stack, tinydtls, holds 128-bit keys)"
    )


@dataclass(frozen=True)
class DeviceCredentials:
    """One device's transport credentials as both ends see them."""

    name: str
    psk_identity: str
    psk: bytes
    oscore_dir: Path | None = None  # absolute folder of the OSCORE context (this side's view)
    edhoc_key: Path | None = None  # this side's EDHOC private key file (COSE_Key, 0600)
    edhoc_own: bytes = b""  # this side's EDHOC credential: CBOR of {14: CCS}
    edhoc_peer: bytes = b""  # the peer's EDHOC credential, the one it must prove it holds

    def __post_init__(self) -> None:
        # the guard against the overflow described at PSK_MAX_BYTES: no such key reaches DTLSSocket
        if len(self.psk) > PSK_MAX_BYTES:
            raise CredentialsError(f"device {self.name!r}: {psk_length_problem(self.psk)}")


# A device name becomes a folder name (TAMDIR/oscore/NAME): letters, digits, '.', '_', '-', no
# leading dot, so `../x` or `/etc` cannot place files outside the TAM folder.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


def check_device_name(name: str) -> str:
    """`name` if it is a safe device name; CredentialsError naming the rule otherwise."""
    if not _NAME.fullmatch(name):
        raise CredentialsError(
            f"device name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-' "
            "(not starting with '.'; it becomes a folder name under the TAM folder)"
        )
    return name


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CredentialsError(f"credentials file not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CredentialsError(f"{path}: cannot read credentials: {exc}") from None


def _device_from_table(table: dict[str, Any], base: Path, where: str) -> DeviceCredentials:
    allowed = {"name", "psk_identity", "psk_hex", "oscore", "edhoc_key", "edhoc_own_hex", "edhoc_peer_hex"}
    unknown = set(table) - allowed
    if unknown:
        raise CredentialsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    try:
        identity = str(table["psk_identity"])
        psk = bytes.fromhex(str(table["psk_hex"]))
    except KeyError as exc:
        raise CredentialsError(f"{where}: missing {exc.args[0]}") from None
    except ValueError:
        raise CredentialsError(f"{where}: psk_hex is not hex") from None
    problem = psk_length_problem(psk)
    if problem is not None:
        raise CredentialsError(f"{where}: {problem}")
    if not identity:
        raise CredentialsError(f"{where}: psk_identity is empty")
    oscore = table.get("oscore")
    edhoc_key = table.get("edhoc_key")
    try:
        own, peer = (bytes.fromhex(str(table.get(k, ""))) for k in ("edhoc_own_hex", "edhoc_peer_hex"))
    except ValueError:
        raise CredentialsError(f"{where}: edhoc_own_hex / edhoc_peer_hex is not hex") from None
    if bool(edhoc_key) != bool(own) or bool(own) != bool(peer):
        raise CredentialsError(f"{where}: EDHOC needs all of edhoc_key, edhoc_own_hex and edhoc_peer_hex")
    for label, value in (("edhoc_own_hex", own), ("edhoc_peer_hex", peer)):
        if value:
            ccs_public_key(value, f"{where}: {label}")
    return DeviceCredentials(
        name=str(table.get("name", identity)),
        psk_identity=identity,
        psk=psk,
        oscore_dir=(base / str(oscore)).resolve() if oscore else None,
        edhoc_key=(base / str(edhoc_key)).resolve() if edhoc_key else None,
        edhoc_own=own,
        edhoc_peer=peer,
    )


def load_tam_credentials(tam_dir: str | os.PathLike[str]) -> list[DeviceCredentials]:
    """Every device of ``TAMDIR/credentials.toml`` (an absent file means no devices)."""
    path = Path(tam_dir) / TAM_CREDENTIALS_FILE
    if not path.exists():
        return []
    data = _read_toml(path)
    devices = [
        _device_from_table(t, path.parent, f"{path} device #{i + 1}")
        for i, t in enumerate(data.get("device", []))
    ]
    seen: set[str] = set()
    for d in devices:
        if d.psk_identity in seen:
            raise CredentialsError(f"{path}: psk_identity {d.psk_identity!r} is used twice")
        seen.add(d.psk_identity)
    return devices


def load_agent_credentials(state_dir: str | os.PathLike[str]) -> DeviceCredentials:
    """The Agent's own credentials from ``STATEDIR/transport.toml``."""
    path = Path(state_dir) / AGENT_CREDENTIALS_FILE
    return _device_from_table(_read_toml(path), path.parent, str(path))


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_oscore_context(
    folder: Path, sender_id: bytes, recipient_id: bytes, master_secret: bytes, master_salt: bytes
) -> None:
    """Write an aiocoap FilesystemSecurityContext folder (AES-CCM-16-64-128, HKDF SHA-256 defaults)."""
    if max(len(sender_id), len(recipient_id)) > OSCORE_MAX_ID:
        raise CredentialsError(f"OSCORE ids are at most {OSCORE_MAX_ID} bytes")
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"sender-id_hex": sender_id.hex(), "recipient-id_hex": recipient_id.hex()}
    secret = {"secret_hex": master_secret.hex(), "salt_hex": master_salt.hex()}
    (folder / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    secret_path = folder / "secret.json"
    secret_path.write_text(json.dumps(secret, indent=2) + "\n")
    secret_path.chmod(0o600)


# RFC 9528 §3.5.2 / RFC 8392: a CCS is a CWT claims set; 8 = cnf, whose 1 = COSE_Key; 14 in
# ID_CRED (kccs) says "this credential by value". COSE_Key labels (RFC 9052 §7, RFC 9053 §7.1).
_KCCS, _CNF, _COSE_KEY, _SUB = 14, 8, 1, 2
TAM_EDHOC_KEY = "edhoc/tam.key"
# The TAM's credential carries this kid; devices' kids are their OSCORE numbers (1, 2, ...).
TAM_EDHOC_KID = b"\x00"


EDHOC_SUITE = 2  # RFC 9528 §3.6: AES-CCM-16-64-128, SHA-256, P-256 ECDH/ES256 (what lakers speaks)
EDHOC_METHOD = 3  # static DH keys on both sides (RFC 9528 §3.2)


def edhoc_entry(fields: dict[str, Any], key_file: Path | None = None) -> dict[str, Any]:
    """aiocoap's "edhoc-oscore" credentials entry: suite and method fixed, `fields` added."""
    entry = {"suite": EDHOC_SUITE, "method": EDHOC_METHOD, **fields}
    if key_file is not None:
        entry["private_key_file"] = os.fspath(key_file)
    return entry


def write_edhoc_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Create a P-256 key as a COSE_Key file readable by its owner only (aiocoap refuses anything else).

    Written with `cryptography` and cbor2 rather than aiocoap's key helper, which lives in an aiocoap
    module marked internal.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    d = key.private_numbers().private_value.to_bytes(32, "big")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cbor2.dumps({1: 2, -1: 1, -4: d}))  # kty EC2, crv P-256, d
    return key


def read_edhoc_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key of a COSE_Key file written by `write_edhoc_key`."""
    try:
        cose_key = cbor2.loads(path.read_bytes())
        return ec.derive_private_key(int.from_bytes(cose_key[-4], "big"), ec.SECP256R1())
    except (OSError, cbor2.CBORDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CredentialsError(f"EDHOC key {path}: cannot read it ({exc})") from None


def edhoc_credential(key: ec.EllipticCurvePrivateKey, kid: bytes, subject: str) -> bytes:
    """CBOR of {14: CCS}: the public key as an EDHOC credential sent by kid (RFC 9528 §3.5.2)."""
    numbers = key.public_key().public_numbers()
    cose_key = {1: 2, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big"), 2: kid}
    return cbor2.dumps({_KCCS: {_SUB: subject, _CNF: {_COSE_KEY: cose_key}}}, canonical=True)


def ccs_public_key(credential: bytes, where: str) -> dict[Any, Any]:
    """The COSE_Key of a {14: CCS} credential; CredentialsError naming `where` if it has none."""
    try:
        cose_key = cbor2.loads(credential)[_KCCS][_CNF][_COSE_KEY]
        if not isinstance(cose_key, dict) or not isinstance(cose_key.get(-2), bytes):
            raise TypeError("no EC2 public key")
    except (cbor2.CBORDecodeError, KeyError, TypeError, IndexError) as exc:
        raise CredentialsError(f"{where}: not an EDHOC credential {{14: CCS}} ({exc})") from None
    return cose_key


def tam_edhoc_credential(tam: Path) -> bytes:
    """The TAM's EDHOC credential, its key created on first use (one key for all devices)."""
    path = tam / TAM_EDHOC_KEY
    key = read_edhoc_key(path) if path.exists() else write_edhoc_key(path)
    return edhoc_credential(key, TAM_EDHOC_KID, "tam")


def provision_devices(
    tam_dir: str | os.PathLike[str], devices: list[tuple[str, str | os.PathLike[str] | None]]
) -> list[DeviceCredentials]:
    """`provision_device` for many devices at once (one read of credentials.toml, one append)."""
    for name, _ in devices:
        check_device_name(name)  # all of them before anything is written
    tam = Path(tam_dir)
    tam.mkdir(parents=True, exist_ok=True)
    existing = load_tam_credentials(tam)
    taken = {d.psk_identity for d in existing}
    lines: list[str] = []
    made: list[DeviceCredentials] = []
    # the TAM's EDHOC credential: read (or made) once, not once per device
    tam_cred = tam_edhoc_credential(tam) if any(agent is not None for _, agent in devices) else b""
    for i, (name, agent_dir) in enumerate(devices):
        if name in taken:
            raise CredentialsError(f"device with psk_identity {name!r} already provisioned in {tam}")
        taken.add(name)
        made.append(_make_device(tam, agent_dir, name, name, len(existing) + i + 1, lines, tam_cred=tam_cred))
    with (tam / TAM_CREDENTIALS_FILE).open("a", encoding="utf-8") as f:
        f.write("".join(lines))
    (tam / TAM_CREDENTIALS_FILE).chmod(0o600)
    return made


def _make_device(
    tam: Path,
    agent_dir: str | os.PathLike[str] | None,
    name: str,
    identity: str,
    number: int,
    lines: list[str],
    psk: bytes | None = None,
    *,
    tam_cred: bytes = b"",
) -> DeviceCredentials:
    check_device_name(name)
    device_id = number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big")
    psk = psk or secrets.token_bytes(16)
    master_secret, master_salt = secrets.token_bytes(16), secrets.token_bytes(8)
    rel = f"oscore/{name}"
    write_oscore_context(tam / rel, b"", device_id, master_secret, master_salt)
    table = (
        f"\n[[device]]\nname = {_toml_str(name)}\npsk_identity = {_toml_str(identity)}\n"
        f'psk_hex = "{psk.hex()}"\noscore = {_toml_str(rel)}\n'
    )
    made = DeviceCredentials(name, identity, psk, (tam / rel).resolve())
    if agent_dir is not None:
        agent = Path(agent_dir)
        agent.mkdir(parents=True, exist_ok=True)
        write_oscore_context(agent / "oscore", device_id, b"", master_secret, master_salt)
        # EDHOC: the device's key is made in its own folder; only its public credential reaches the TAM.
        device_key = agent / "edhoc.key"
        if device_key.exists():
            device_key.unlink()  # a re-provisioned folder gets a new key, like its new PSK
        device_cred = edhoc_credential(write_edhoc_key(device_key), device_id, name)
        tam_cred = tam_cred or tam_edhoc_credential(tam)
        table += (
            f'edhoc_key = {_toml_str(TAM_EDHOC_KEY)}\nedhoc_own_hex = "{tam_cred.hex()}"\n'
            f'edhoc_peer_hex = "{device_cred.hex()}"\n'
        )
        made = DeviceCredentials(
            name, identity, psk, (tam / rel).resolve(), (tam / TAM_EDHOC_KEY).resolve(), tam_cred, device_cred
        )
        path = agent / AGENT_CREDENTIALS_FILE
        path.write_text(
            f"name = {_toml_str(name)}\npsk_identity = {_toml_str(identity)}\n"
            f'psk_hex = "{psk.hex()}"\noscore = "oscore"\nedhoc_key = "edhoc.key"\n'
            f'edhoc_own_hex = "{device_cred.hex()}"\nedhoc_peer_hex = "{tam_cred.hex()}"\n',
            encoding="utf-8",
        )
        path.chmod(0o600)
    lines.append(table)
    return made


def provision_device(
    tam_dir: str | os.PathLike[str],
    agent_state_dir: str | os.PathLike[str] | None,
    name: str,
    *,
    psk_identity: str | None = None,
    oscore_id: int | None = None,
    psk: bytes | None = None,
) -> DeviceCredentials:
    """Create fresh DTLS PSK and OSCORE credentials for one device, on both sides.

    Appends the device to ``TAMDIR/credentials.toml`` and, if `agent_state_dir` is given, writes the
    Agent's ``transport.toml`` and OSCORE folder. OSCORE ids: the TAM sends as b"" (one TAM), the
    device as its `oscore_id` (default: its position in the file + 1), so the TAM finds its context.
    """
    check_device_name(name)  # before anything is written
    tam = Path(tam_dir)
    tam.mkdir(parents=True, exist_ok=True)
    existing = load_tam_credentials(tam)
    identity = psk_identity or name
    if any(d.psk_identity == identity for d in existing):
        raise CredentialsError(f"device with psk_identity {identity!r} already provisioned in {tam}")
    number = oscore_id if oscore_id is not None else len(existing) + 1
    lines: list[str] = []
    problem = None if psk is None else psk_length_problem(psk)
    if problem is not None:
        raise CredentialsError(problem)
    made = _make_device(tam, agent_state_dir, name, identity, number, lines, psk)
    with (tam / TAM_CREDENTIALS_FILE).open("a", encoding="utf-8") as f:
        f.write("".join(lines))
    (tam / TAM_CREDENTIALS_FILE).chmod(0o600)
    return made
