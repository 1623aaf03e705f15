"""The component store as the SUIT processor sees it: a `typing.Protocol`, not the store itself.

`security` sits below `store`; the processor must not import `teep_coap.store`. It needs five calls
(look up, read image and manifest, find by manifest id, commit atomically) and hands `commit` records
of what to install. `teep_coap.store.components.ComponentStore` satisfies `ComponentStoreApi`
structurally (checked by mypy where the Agent passes its store, and by a test). A store reports its
failures as `TeepCoapError` (the store's `ComponentStoreError` is one); the processor turns those into
a failed SUIT report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

ComponentId = tuple[bytes, ...]


class InstalledEntry(Protocol):
    """What the processor reads of an installed component."""

    @property
    def component_id(self) -> ComponentId: ...

    @property
    def sequence_number(self) -> int: ...

    @property
    def manifest_component_id(self) -> ComponentId | None: ...

    @property
    def manifest_digest(self) -> bytes: ...


@dataclass(frozen=True)
class StagedInstall:
    """One component to install in a `commit` (the fields the store's own `Install` has)."""

    component_id: ComponentId
    image: bytes
    envelope: bytes
    sequence_number: int
    manifest_component_id: ComponentId | None = None


class ComponentStoreApi(Protocol):
    """The calls the SUIT processor makes of the component store."""

    def get(self, component_id: Sequence[bytes]) -> InstalledEntry | None: ...

    def image(self, component_id: Sequence[bytes]) -> bytes: ...

    def manifest(self, component_id: Sequence[bytes]) -> bytes: ...

    def find_by_manifest_id(self, manifest_component_id: Sequence[bytes]) -> Sequence[InstalledEntry]: ...

    def commit(self, installs: Sequence[Any] = (), removals: Sequence[ComponentId] = ()) -> None:
        """Install and remove in one atomic step (installs: `StagedInstall`-shaped records)."""
        ...
