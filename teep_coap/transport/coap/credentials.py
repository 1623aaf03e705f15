"""Transport credentials of the CoAP binding: DTLS PSKs and OSCORE contexts, on disk.

Layout (documented in docs/profiles.md and docs/coap-binding.md):

- TAM: ``TAMDIR/credentials.toml`` with one ``[[device]]`` table per device (name, psk_identity, psk_hex,
  oscore = folder relative to TAMDIR).
- Agent: ``STATEDIR/transport.toml`` with its own psk_identity, psk_hex and oscore folder.
- An OSCORE folder is aiocoap's FilesystemSecurityContext (settings.json, secret.json, sequence.json),
  so sequence numbers and replay windows survive restarts without nonce reuse.

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

from teep_coap.transport.base import TransportError

TAM_CREDENTIALS_FILE = "credentials.toml"
AGENT_CREDENTIALS_FILE = "transport.toml"
PSK_MIN_BYTES = 16
# RFC 8613 §3.3: with AES-CCM-16-64-128 (nonce 13 bytes) ids are at most 7 bytes.
OSCORE_MAX_ID = 7


class CredentialsError(TransportError):
    """A credentials file or OSCORE folder is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class DeviceCredentials:
    """One device's transport credentials as both ends see them."""

    name: str
    psk_identity: str
    psk: bytes
    oscore_dir: Path | None = None  # absolute folder of the OSCORE context (this side's view)


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
    allowed = {"name", "psk_identity", "psk_hex", "oscore"}
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
    if len(psk) < PSK_MIN_BYTES:
        raise CredentialsError(f"{where}: psk is {len(psk)} bytes, at least {PSK_MIN_BYTES} needed")
    if not identity:
        raise CredentialsError(f"{where}: psk_identity is empty")
    oscore = table.get("oscore")
    return DeviceCredentials(
        name=str(table.get("name", identity)),
        psk_identity=identity,
        psk=psk,
        oscore_dir=(base / str(oscore)).resolve() if oscore else None,
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
    for i, (name, agent_dir) in enumerate(devices):
        if name in taken:
            raise CredentialsError(f"device with psk_identity {name!r} already provisioned in {tam}")
        taken.add(name)
        made.append(_make_device(tam, agent_dir, name, name, len(existing) + i + 1, lines))
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
) -> DeviceCredentials:
    check_device_name(name)
    device_id = number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big")
    psk = psk or secrets.token_bytes(16)
    master_secret, master_salt = secrets.token_bytes(16), secrets.token_bytes(8)
    rel = f"oscore/{name}"
    write_oscore_context(tam / rel, b"", device_id, master_secret, master_salt)
    lines.append(
        f"\n[[device]]\nname = {_toml_str(name)}\npsk_identity = {_toml_str(identity)}\n"
        f'psk_hex = "{psk.hex()}"\noscore = {_toml_str(rel)}\n'
    )
    if agent_dir is not None:
        agent = Path(agent_dir)
        agent.mkdir(parents=True, exist_ok=True)
        write_oscore_context(agent / "oscore", device_id, b"", master_secret, master_salt)
        path = agent / AGENT_CREDENTIALS_FILE
        path.write_text(
            f"name = {_toml_str(name)}\npsk_identity = {_toml_str(identity)}\n"
            f'psk_hex = "{psk.hex()}"\noscore = "oscore"\n',
            encoding="utf-8",
        )
        path.chmod(0o600)
    return DeviceCredentials(name, identity, psk, (tam / rel).resolve())


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
    if psk is not None and len(psk) < PSK_MIN_BYTES:
        raise CredentialsError(f"psk is {len(psk)} bytes, at least {PSK_MIN_BYTES} needed")
    made = _make_device(tam, agent_state_dir, name, identity, number, lines, psk)
    with (tam / TAM_CREDENTIALS_FILE).open("a", encoding="utf-8") as f:
        f.write("".join(lines))
    (tam / TAM_CREDENTIALS_FILE).chmod(0o600)
    return made
