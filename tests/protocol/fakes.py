"""In-memory implementations of the engine ports (`teep_coap.protocol.ports`), for engine tests.

They keep the contract the engines rely on (atomic blocks roll back, a claim is won once, the open
requests per device are capped, tokens are unique among a device's open requests) and nothing else:
no SQL, no files. Written from the port's docstrings, not copied from the SQL store. The Agent's
component store in memory is the product's own: `teep_coap.store.memory_components`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from teep_coap.protocol.records import (
    ANSWERED,
    AUDIENCES,
    OPEN,
    SUPERSEDED,
    CatalogEntry,
    ComponentId,
    Device,
    DeviceComponent,
    Outstanding,
    StoreError,
    component_key,
)
from teep_coap.protocol.retention import PruneCounts


class MemoryTamRepository:
    """A `TamRepository` in dictionaries; `atomic()` restores a deep copy when its block raises."""

    def __init__(self) -> None:
        self.devices: dict[int, Device] = {}
        self.sessions: dict[int, list[Any]] = {}  # id -> [device_id, started, ended, outcome, tid]
        self.audit_rows: list[tuple[int | None, float, str, str]] = []
        self.outstanding: dict[int, Outstanding] = {}
        self.spent: dict[bytes, float] = {}
        self.catalog: dict[tuple[bytes, int], CatalogEntry] = {}
        self.device_rows: dict[int, dict[bytes, DeviceComponent]] = {}
        self._next = 0
        self.calls = 0  # how many port calls the engine made (tests may assert it moved)
        self.embedded = True  # in memory: waits on nothing
        self.same_host = True

    def _id(self) -> int:
        self._next += 1
        return self._next

    @contextmanager
    def atomic(self) -> Iterator[None]:
        saved = copy.deepcopy({k: v for k, v in vars(self).items() if k != "calls"})
        try:
            yield
        except BaseException:
            vars(self).update(saved)
            raise

    savepoint = atomic  # a part of a transaction undone alone: the same copy-and-restore, nested

    # devices
    def add_device(
        self, *, kid: bytes, alg: int, public_key: bytes, now: float, **names: str | None
    ) -> Device:
        dev = Device(
            self._id(), kid, alg, public_key, names.get("name"), names.get("psk_identity"),
            names.get("oscore_id"), None, {}, None,
        )  # fmt: skip
        self.devices[dev.id] = dev
        return dev

    def device_by_kid(self, kid: bytes) -> Device | None:
        self.calls += 1
        return next((d for d in self.devices.values() if d.kid == kid), None)

    def device_by_transport_identity(self, identity: str) -> Device | None:
        self.calls += 1
        return next((d for d in self.devices.values() if identity in (d.psk_identity, d.oscore_id)), None)

    def devices_with_alg(self, algs: Sequence[int]) -> list[Device]:
        return [d for d in self.devices.values() if d.alg in algs]

    def touch_device(
        self,
        device_id: int,
        now: float,
        *,
        attested_claims: dict[str, Any] | None = None,
        negotiated: dict[str, Any] | None = None,
    ) -> None:
        dev = replace(self.devices[device_id], last_contact=now)
        if attested_claims is not None:
            dev = replace(dev, attested_claims=attested_claims)
        if negotiated is not None:
            dev = replace(dev, negotiated=negotiated)
        self.devices[device_id] = dev

    # sessions and audit
    def start_session(self, now: float, *, device_id: int | None, transport_identity: str | None) -> int:
        sid = self._id()
        self.sessions[sid] = [device_id, now, None, None, transport_identity]
        self.audit(sid, now, "session-start", transport_identity or "")
        return sid

    def start_session_for(self, now: float, transport_identity: str) -> tuple[Device, int] | None:
        device = self.device_by_transport_identity(transport_identity)
        if device is None:
            return None
        return device, self.start_session(now, device_id=device.id, transport_identity=transport_identity)

    def end_session(self, session_id: int, now: float, outcome: str) -> float | None:
        row = self.sessions[session_id]
        if row[2] is not None:
            return None
        row[2:4] = [now, outcome]
        self.audit(session_id, now, "session-end", outcome)
        return float(row[1])

    def finish_session(self, session_id: int, now: float, outcome: str) -> None:
        self.end_session(session_id, now, outcome)

    def bind_session(self, session_id: int, device_id: int) -> None:
        self.sessions[session_id][0] = device_id

    def audit(self, session_id: int | None, now: float, event: str, detail: str = "") -> None:
        self.audit_rows.append((session_id, now, event, detail))

    # outstanding requests
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
        mine = [o for o in self.outstanding.values() if o.state == OPEN and o.device_id == device_id]
        if not answered:
            if token is not None and any(o.token == token for o in mine):
                raise StoreError("token already outstanding for this device")
            for old in mine[: max(0, len(mine) - (cap - 1))]:
                self.outstanding[old.id] = replace(old, state=SUPERSEDED)
        row = Outstanding(
            self._id(), session_id, device_id, kind, token, challenge, ANSWERED if answered else OPEN, now,
            now + lifetime, copy.deepcopy(data or {}),
        )  # fmt: skip
        self.outstanding[row.id] = row
        return row

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
        self.add_outstanding(
            session_id=session_id, device_id=device_id, kind=kind, token=token, challenge=challenge,
            now=now, lifetime=lifetime, cap=cap, data=data,
        )  # fmt: skip

    def find_outstanding(
        self,
        *,
        token: bytes | None = None,
        challenge: bytes | None = None,
        kinds: Sequence[str] = ("query", "update"),
        device_id: int | None = None,
    ) -> list[Outstanding]:
        self.calls += 1
        if token is None and challenge is None:
            raise StoreError("find_outstanding needs a token or a challenge")
        return [
            o
            for o in sorted(self.outstanding.values(), key=lambda o: -o.id)
            if o.kind in kinds
            and (token is None or o.token == token)
            and (challenge is None or o.challenge == challenge)
            and (device_id is None or o.device_id in (device_id, None))
        ]

    def _open(self, kind: str, device_id: int, now: float, unbound: bool) -> Outstanding | None:
        rows = [
            o
            for o in self.outstanding.values()
            if o.state == OPEN and o.kind == kind and o.expires_at > now
            and (o.device_id == device_id or (unbound and o.device_id is None))
        ]  # fmt: skip
        rows.sort(key=lambda o: (o.token is not None, -o.id))
        return rows[0] if rows else None

    def latest_open_query(self, device_id: int, now: float) -> Outstanding | None:
        return self._open("query", device_id, now, unbound=True)

    def latest_open_update(self, device_id: int, now: float) -> Outstanding | None:
        return self._open("update", device_id, now, unbound=False)

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
        rows = self.find_outstanding(token=token, challenge=challenge, kinds=kinds, device_id=device_id)
        if not rows:
            return None
        row = rows[0]
        if row.state != OPEN or row.expires_at <= now or row.device_id != device_id:
            return None
        self.outstanding[row.id] = replace(row, state=ANSWERED)
        # Like TamStore: the session's start comes with the claim.
        return replace(self.outstanding[row.id], session_started_at=float(self.sessions[row.session_id][1]))

    def claim(self, outstanding_id: int, device_id: int) -> bool:
        row = self.outstanding.get(outstanding_id)
        if row is None or row.state != OPEN:
            return False
        self.outstanding[outstanding_id] = replace(row, state=ANSWERED, device_id=device_id)
        return True

    def abandon_sessions(self, cutoff: float, now: float) -> list[int]:
        expired = {o.session_id for o in self.outstanding.values() if o.expires_at <= cutoff}
        alive = {o.session_id for o in self.outstanding.values() if o.expires_at > cutoff}
        ids = sorted(s for s in expired - alive if self.sessions[s][2] is None)
        return [(sid, float(self.end_session(sid, now, "abandoned") or 0.0)) for sid in ids]

    def expire_outstanding(self, now: float) -> int:
        gone = [i for i, o in self.outstanding.items() if o.expires_at <= now]
        for i in gone:
            del self.outstanding[i]
        return len(gone)

    def spend_token(self, key: bytes, expires_at: float) -> bool:
        if key in self.spent:
            return False
        self.spent[key] = expires_at
        return True

    def forget_spent_tokens(self, now: float) -> int:
        gone = [k for k, t in self.spent.items() if t <= now]
        for k in gone:
            del self.spent[k]
        return len(gone)

    # history
    def prune_history(self, cutoff: float, limit: int) -> PruneCounts:
        needed = {o.session_id for o in self.outstanding.values() if o.state == OPEN or o.expires_at > cutoff}
        ended = sorted(
            (row[2], sid)
            for sid, row in self.sessions.items()
            if row[2] is not None and row[2] < cutoff and sid not in needed
        )
        picked = {sid for _, sid in ended[:limit]}
        sessionless = sorted(
            (r[1], i) for i, r in enumerate(self.audit_rows) if r[0] is None and r[1] < cutoff
        )
        dropped = {i for _, i in sessionless[:limit]}
        kept = [r for i, r in enumerate(self.audit_rows) if i not in dropped and r[0] not in picked]
        audit, self.audit_rows = len(self.audit_rows) - len(kept), kept
        requests = [i for i, o in self.outstanding.items() if o.session_id in picked]
        for i in requests:
            del self.outstanding[i]
        for sid in picked:
            del self.sessions[sid]
        full = len(picked) == limit or len(dropped) == limit
        return PruneCounts(len(picked), audit, len(requests), more=full)

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
    ) -> CatalogEntry:
        if audience not in AUDIENCES:
            raise StoreError(f"audience must be one of {AUDIENCES}, not {audience!r}")
        cid = tuple(bytes(p) for p in component_id)
        old = self.catalog.get((component_key(cid), sequence_number))
        if old is not None and old.envelope != envelope:
            raise StoreError(f"catalog already has a different envelope for {name}")
        for k, e in list(self.catalog.items()):
            if e.component_id == cid:
                self.catalog[k] = replace(e, audience=audience)
        entry = CatalogEntry(cid, sequence_number, envelope, name, audience)
        self.catalog[(component_key(cid), sequence_number)] = entry
        return entry

    def latest_components(self) -> list[CatalogEntry]:
        latest: dict[bytes, CatalogEntry] = {}
        for (key, _), e in sorted(self.catalog.items()):
            latest[key] = e
        return list(latest.values())

    def component_versions(
        self, component_id: Sequence[bytes], sequence_numbers: Sequence[int] | None = None
    ) -> list[CatalogEntry]:
        key = component_key(component_id)
        return [
            e
            for (k, seq), e in sorted(self.catalog.items())
            if k == key and (sequence_numbers is None or seq in sequence_numbers)
        ]

    def device_components(self, device_id: int) -> list[DeviceComponent]:
        return [r for _, r in sorted(self.device_rows.get(device_id, {}).items())]

    def set_device_components(
        self,
        device_id: int,
        now: float,
        *,
        installed: dict[ComponentId, int | None] | None = None,
        wanted: dict[ComponentId, int | None] | None = None,
        unneeded: Sequence[ComponentId] | None = None,
    ) -> list[DeviceComponent]:
        rows = self.device_rows.setdefault(device_id, {})

        def row(cid: ComponentId) -> DeviceComponent:
            return rows.get(component_key(cid)) or DeviceComponent(cid, None, False, None, False)

        if installed is not None:
            previous = {k: r.installed_seq for k, r in rows.items()}
            for k, r in list(rows.items()):
                rows[k] = replace(r, installed_seq=None)
            for cid, seq in installed.items():
                known = previous.get(component_key(cid))
                value = seq if seq is not None else (known if known is not None else -1)
                rows[component_key(cid)] = replace(row(cid), installed_seq=value)
        if wanted is not None:
            for k, r in list(rows.items()):
                rows[k] = replace(r, wanted=False, wanted_min_seq=None)
            for cid, min_seq in wanted.items():
                rows[component_key(cid)] = replace(row(cid), wanted=True, wanted_min_seq=min_seq)
        if unneeded is not None:
            for k, r in list(rows.items()):
                rows[k] = replace(r, unneeded=False)
            for cid in unneeded:
                rows[component_key(cid)] = replace(row(cid), unneeded=True)
        return self.device_components(device_id)

    def record_changes(
        self, device_id: int, now: float, *, installed: dict[ComponentId, int], removed: Sequence[ComponentId]
    ) -> None:
        rows = self.device_rows.setdefault(device_id, {})
        for cid, seq in installed.items():
            old = rows.get(component_key(cid)) or DeviceComponent(cid, None, False, None, False)
            rows[component_key(cid)] = replace(old, installed_seq=seq, wanted=False, wanted_min_seq=None)
        for cid in removed:
            if component_key(cid) in rows:
                rows[component_key(cid)] = replace(
                    rows[component_key(cid)], installed_seq=None, unneeded=False
                )
