"""The TAM's policy: a TOML file saying which Trusted Components devices get.

    [[component]]
    name = "hello-ta"
    envelope = "hello-ta.suit"   # SUIT envelope file, relative to the policy file
    audience = "all"             # all = every device gets it; request = only devices that ask for it;
                                 # delete = remove it from every device that has it
    # optional, otherwise read from the envelope's manifest:
    # component-id = ["TEEP-Device", "SecureFS", "hex:8d82573a926d4754935332dc29997f74", "ta"]
    # sequence-number = 3

The policy is synced into the TAM catalog (the `TamRepository`), which is what the engine decides from; the
file is re-read when its modification time changes (`reload_if_changed`) or on `reload()`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teep_coap.protocol.errors import ConfigError
from teep_coap.protocol.ports import TamRepository
from teep_coap.protocol.records import AUDIENCES, ComponentId
from teep_coap.security.suit.codec import parse_envelope
from teep_coap.security.suit.errors import SuitError

EnvelopeIdentity = Callable[[bytes], tuple[ComponentId, int]]


def parse_component_id(parts: Any, where: str) -> ComponentId:
    """A component id written in TOML: strings are UTF-8 bytes, "hex:..." strings are raw bytes."""
    if not isinstance(parts, list) or not parts:
        raise ConfigError(f"{where}: component-id must be a non-empty list of strings")
    out: list[bytes] = []
    for part in parts:
        if not isinstance(part, str):
            raise ConfigError(f"{where}: component-id parts must be strings, got {type(part).__name__}")
        if part.startswith("hex:"):
            try:
                out.append(bytes.fromhex(part[4:]))
            except ValueError as exc:
                raise ConfigError(f"{where}: component-id part {part!r} is not hex") from exc
        else:
            out.append(part.encode())
    return tuple(out)


def format_component_id(cid: ComponentId) -> list[str]:
    """The reverse of `parse_component_id` (printable parts as text, others as hex:)."""
    out = []
    for part in cid:
        try:
            text = part.decode()
            out.append(text if text.isprintable() and not text.startswith("hex:") else f"hex:{part.hex()}")
        except UnicodeDecodeError:
            out.append(f"hex:{part.hex()}")
    return out


def envelope_identity(envelope: bytes) -> tuple[ComponentId, int]:
    """Component id (first component of the manifest) and sequence number of a SUIT envelope."""

    try:
        env = parse_envelope(envelope)
    except SuitError as exc:
        raise ConfigError(f"cannot read SUIT envelope: {exc}") from exc
    components = env.manifest.common.components
    if not components:
        raise ConfigError("SUIT manifest names no component")
    return tuple(components[0]), env.manifest.sequence_number


@dataclass(frozen=True)
class PolicyEntry:
    name: str
    envelope_path: Path
    audience: str
    component_id: ComponentId | None = None
    sequence_number: int | None = None


class Policy:
    """A loaded policy file; `entries` follow the file order."""

    def __init__(self, path: Path, entries: list[PolicyEntry], mtime_ns: int) -> None:
        self.path = path
        self.entries = entries
        self._mtime_ns = mtime_ns

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Policy:
        p = Path(path)
        try:
            mtime = p.stat().st_mtime_ns
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read policy {p}: {exc.strerror or exc}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"policy {p} is not valid TOML: {exc}") from exc
        unknown = set(data) - {"component"}
        if unknown:
            raise ConfigError(f"policy {p}: unknown top-level keys {sorted(unknown)}")
        items = data.get("component", [])
        if not isinstance(items, list):
            raise ConfigError(f"policy {p}: 'component' must be an array of tables ([[component]])")
        entries = []
        for i, item in enumerate(items):
            where = f"policy {p}, component #{i + 1}"
            extra = set(item) - {"name", "envelope", "audience", "component-id", "sequence-number"}
            if extra:
                raise ConfigError(f"{where}: unknown keys {sorted(extra)}")
            if "envelope" not in item or not isinstance(item["envelope"], str):
                raise ConfigError(f"{where}: 'envelope' (a file name) is required")
            audience = item.get("audience", "request")
            if audience not in AUDIENCES:
                raise ConfigError(f"{where}: audience must be one of {list(AUDIENCES)}, not {audience!r}")
            seq = item.get("sequence-number")
            if seq is not None and (not isinstance(seq, int) or seq < 0):
                raise ConfigError(f"{where}: sequence-number must be a non-negative integer")
            cid = parse_component_id(item["component-id"], where) if "component-id" in item else None
            entries.append(
                PolicyEntry(
                    name=str(item.get("name", item["envelope"])),
                    envelope_path=(p.parent / item["envelope"]),
                    audience=audience,
                    component_id=cid,
                    sequence_number=seq,
                )
            )
        return cls(p, entries, mtime)

    def changed(self) -> bool:
        try:
            return self.path.stat().st_mtime_ns != self._mtime_ns
        except OSError:
            return True

    def reload(self) -> None:
        fresh = Policy.load(self.path)
        self.entries, self._mtime_ns = fresh.entries, fresh._mtime_ns

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed since it was loaded; True when it did."""
        if not self.changed():
            return False
        self.reload()
        return True

    def sync(self, store: TamRepository, now: float, identity: EnvelopeIdentity = envelope_identity) -> int:
        """Put every entry's envelope into the catalog with its audience; returns the entry count."""
        for entry in self.entries:
            try:
                envelope = entry.envelope_path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"policy {self.path}: cannot read {entry.envelope_path}: {exc}") from exc
            cid, seq = entry.component_id, entry.sequence_number
            if cid is None or seq is None:
                found_cid, found_seq = identity(envelope)
                cid = found_cid if cid is None else cid
                seq = found_seq if seq is None else seq
            store.add_component(
                component_id=cid,
                sequence_number=seq,
                envelope=envelope,
                now=now,
                name=entry.name,
                audience=entry.audience,
            )
        return len(self.entries)
