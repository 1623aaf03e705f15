"""What the engines need from persistence, declared as `typing.Protocol` (ports).

The engines are written against these; `teep_coap.store` implements them (structurally: `TamStore`
satisfies `TamRepository`, `ComponentStore` satisfies `AgentComponents`, checked by mypy where they
are passed and by tests/layering). An in-memory implementation for tests and experiments is in
`teep_coap.protocol.memory`. Row types are in `teep_coap.protocol.records`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from teep_coap.protocol.records import CatalogEntry, ComponentId, Device, DeviceComponent, Outstanding
from teep_coap.protocol.retention import PruneCounts
from teep_coap.security.suit.store_api import ComponentStoreApi, InstalledEntry


class TamRepository(Protocol):
    """The TAM's state between two messages: devices, outstanding requests, catalog, audit.

    Every call is one transaction unless made inside `atomic()`, which makes the calls in its block
    one transaction. Failures raise `StoreError`.
    """

    def atomic(self) -> AbstractContextManager[None]: ...

    def savepoint(self) -> AbstractContextManager[None]:
        """Inside `atomic()`: a part that an exception leaving it undoes alone, the rest going on."""
        ...

    def part(self) -> AbstractContextManager[None]:
        """Inside `atomic()`: the next request's part of a batch run without savepoints. Nothing is
        undone alone; what an earlier part read ahead is not this part's to use."""
        ...

    @property
    def embedded(self) -> bool:
        """True when the database runs in this process (SQLite): a call waits on no network, so an
        adapter may run the engine on its event loop."""
        ...

    # devices
    def device_by_kid(self, kid: bytes) -> Device | None: ...

    def device_by_transport_identity(self, identity: str) -> Device | None: ...

    def devices_with_alg(self, algs: Sequence[int]) -> list[Device]: ...

    def touch_device(
        self,
        device_id: int,
        now: float,
        *,
        attested_claims: dict[str, Any] | None = None,
        negotiated: dict[str, Any] | None = None,
    ) -> None: ...

    # sessions and audit
    def start_session(self, now: float, *, device_id: int | None, transport_identity: str | None) -> int: ...

    def start_session_for(self, now: float, transport_identity: str) -> tuple[Device, int] | None:
        """Start a session of the device `transport_identity` names (`device_by_transport_identity`):
        the device and the session's id; None, and nothing stored, when no device has that identity.
        The device's attested claims may be left out (None): the engine never reads them. A
        networked store does both in one round trip."""
        ...

    def end_session(self, session_id: int, now: float, outcome: str) -> float | None:
        """Close the session; returns when it started (None if it had ended before)."""
        ...

    def finish_session(self, session_id: int, now: float, outcome: str) -> None:
        """Close the session as `end_session` does, reading nothing back: a networked store sends
        the write with the transaction's COMMIT instead of a round trip of its own."""
        ...

    def bind_session(self, session_id: int, device_id: int) -> None: ...

    def audit(self, session_id: int | None, now: float, event: str, detail: str = "") -> None: ...

    # outstanding requests and spent stateless tokens
    def add_outstanding(
        self,
        *,
        session_id: int,
        device_id: int | None,
        kind: str,
        token: bytes | None,
        challenge: bytes | None,
        now: float,
        lifetime: float,
        cap: int,
        data: dict[str, Any] | None = None,
        answered: bool = False,
    ) -> Outstanding:
        """`answered`: recorded as answered already by `device_id` (no cap, no token check)."""
        ...

    def record_outstanding(
        self,
        *,
        session_id: int,
        device_id: int | None,
        kind: str,
        token: bytes | None,
        challenge: bytes | None,
        now: float,
        lifetime: float,
        cap: int,
        data: dict[str, Any] | None = None,
    ) -> None:
        """`add_outstanding` of an open request, reading nothing back: a networked store sends it
        with the transaction's COMMIT, where a duplicate token fails the transaction (StoreError)."""
        ...

    def find_outstanding(
        self,
        *,
        token: bytes | None = None,
        challenge: bytes | None = None,
        kinds: Sequence[str] = ("query", "update"),
        device_id: int | None = None,
    ) -> list[Outstanding]: ...

    def latest_open_query(self, device_id: int, now: float) -> Outstanding | None: ...

    def latest_open_update(self, device_id: int, now: float) -> Outstanding | None: ...

    def claim_open(
        self,
        *,
        token: bytes | None = None,
        challenge: bytes | None = None,
        kinds: Sequence[str] = ("query", "update"),
        device_id: int,
        now: float,
        then_components: bool = False,
    ) -> Outstanding | None:
        """Atomically claim (mark answered) the request `find_outstanding` would list first for this
        token or challenge, if it is open, expires after `now` and is bound to `device_id`; returns
        it. None otherwise, and nothing changed. `then_components`: the device's report is recorded
        next (a store may read what that needs with the claim)."""
        ...

    def claim(self, outstanding_id: int, device_id: int) -> bool: ...

    def abandon_sessions(self, cutoff: float, now: float) -> list[tuple[int, float]]:
        """End (outcome "abandoned", at `now`) every open session whose outstanding requests all
        expired before `cutoff`: its device went silent. Returns (id, started_at), lowest id first."""
        ...

    def expire_outstanding(self, now: float) -> int: ...

    def spend_token(self, key: bytes, expires_at: float) -> bool: ...

    def forget_spent_tokens(self, now: float) -> int: ...

    # history
    def prune_history(self, cutoff: float, limit: int) -> PruneCounts:
        """Delete at most `limit` sessions that ended before `cutoff` and have no request open or
        unexpired at it, with their audit rows and requests, and at most `limit` audit entries of no
        session older than it; `more` says a limit was reached."""
        ...

    # catalog and per-device components
    def add_component(
        self,
        *,
        component_id: Sequence[bytes],
        sequence_number: int,
        envelope: bytes,
        now: float,
        name: str | None = None,
        audience: str = "request",
    ) -> CatalogEntry: ...

    def latest_components(self) -> list[CatalogEntry]: ...

    def component_versions(
        self, component_id: Sequence[bytes], sequence_numbers: Sequence[int] | None = None
    ) -> list[CatalogEntry]: ...

    def device_components(self, device_id: int) -> list[DeviceComponent]: ...

    def set_device_components(
        self,
        device_id: int,
        now: float,
        *,
        installed: dict[ComponentId, int | None] | None = None,
        wanted: dict[ComponentId, int | None] | None = None,
        unneeded: Sequence[ComponentId] | None = None,
    ) -> list[DeviceComponent]: ...

    def record_changes(
        self,
        device_id: int,
        now: float,
        *,
        installed: dict[ComponentId, int],
        removed: Sequence[ComponentId],
    ) -> None: ...


class ListedComponent(InstalledEntry, Protocol):
    """An installed component as a listing shows it (the processor's view plus the image's size and
    SHA-256 digest, which a tc-list entry carries)."""

    @property
    def image_size(self) -> int: ...

    @property
    def image_digest(self) -> bytes: ...


class AgentComponents(ComponentStoreApi, Protocol):
    """The Agent's installed Trusted Components: what the SUIT processor needs, plus a listing."""

    def get(self, component_id: Sequence[bytes]) -> ListedComponent | None: ...

    def list(self) -> Sequence[ListedComponent]: ...


__all__ = ["AgentComponents", "ListedComponent", "TamRepository"]
