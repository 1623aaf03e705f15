"""The Agent's component store in a dictionary: for simulated devices (`bench sessions`' fleet)
and tests, where an on-disk store per device would cost a folder and fsyncs for nothing kept.

It implements `protocol.ports.AgentComponents` as `store.components` does, including its errors
(removing a component that is not installed raises `ComponentNotFound`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from teep_coap.store.components import ComponentNotFound

ComponentId = tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class MemoryEntry:
    """An installed component as `MemoryComponents` lists it (the fields the Agent reads)."""

    component_id: ComponentId
    sequence_number: int
    image_size: int
    image_digest: bytes
    manifest_digest: bytes
    manifest_component_id: ComponentId | None


def _cid(component_id: Sequence[bytes]) -> ComponentId:
    return tuple(bytes(p) for p in component_id)


class MemoryComponents:
    """The Agent's component store (`protocol.ports.AgentComponents`) in a dictionary. `commit`
    builds the new state aside and swaps it in: all installs and removals, or (on an error) none."""

    def __init__(self) -> None:
        self.entries: dict[ComponentId, tuple[MemoryEntry, bytes, bytes]] = {}

    def get(self, component_id: Sequence[bytes]) -> MemoryEntry | None:
        found = self.entries.get(_cid(component_id))
        return None if found is None else found[0]

    def _of(self, component_id: Sequence[bytes]) -> tuple[MemoryEntry, bytes, bytes]:
        found = self.entries.get(_cid(component_id))
        if found is None:
            raise ComponentNotFound(f"component {[p.hex() for p in _cid(component_id)]} is not installed")
        return found

    def image(self, component_id: Sequence[bytes]) -> bytes:
        return self._of(component_id)[1]

    def manifest(self, component_id: Sequence[bytes]) -> bytes:
        return self._of(component_id)[2]

    def find_by_manifest_id(self, manifest_component_id: Sequence[bytes]) -> list[MemoryEntry]:
        mcid = _cid(manifest_component_id)
        return [e for e, _, _ in self.entries.values() if e.manifest_component_id == mcid]

    def list(self) -> list[MemoryEntry]:
        return [self.entries[k][0] for k in sorted(self.entries)]

    def commit(self, installs: Sequence[Any] = (), removals: Sequence[ComponentId] = ()) -> None:
        staged = dict(self.entries)
        for cid in removals:
            if _cid(cid) not in staged:
                raise ComponentNotFound(f"component {[p.hex() for p in _cid(cid)]} is not installed")
            del staged[_cid(cid)]
        for inst in installs:
            cid = _cid(inst.component_id)
            mcid = None if inst.manifest_component_id is None else _cid(inst.manifest_component_id)
            image, envelope = bytes(inst.image), bytes(inst.envelope)
            entry = MemoryEntry(
                cid, int(inst.sequence_number), len(image), hashlib.sha256(image).digest(),
                hashlib.sha256(envelope).digest(), mcid,
            )  # fmt: skip
            staged[cid] = (entry, image, envelope)
        self.entries = staged


__all__ = ["MemoryComponents", "MemoryEntry"]
